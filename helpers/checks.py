"""The checks that every rule's rollout shares: a step count, and the speeds of a reaction-diffusion step.

* ``check_steps(steps)``                     a whole number >= 0, or a ValueError that says so
* ``check_speeds(diffusion_speed, reaction_speed, diffusion_max, laplacian_of, state)``
  finite speeds >= 0, and a diffusion speed within the explicit step's stability limit

The stability limit: one explicit Euler step of diffusion multiplies the Laplacian's eigenmode of
eigenvalue -lambda by ``1 - speed * rate * lambda``; the mode stays bounded while that factor is at least
-1, so every channel is stable while ``speed * largest_rate * largest_lambda < 2``. At the limit the finest
checkerboard never decays, beyond it it grows at every step (``tests/test_reliability.py`` measures both
sides). The reaction can lower the limit of a trained rule a little: of chapter 08's shipped rules on a
48x48 grid over 2000 steps, stripes stayed bounded at 1.48 and overflowed at 1.49 and 1.5, bubbles and
polka dots stayed bounded up to 1.495 (the grid's limit is 1.5); the chapter's knob stops at 1.4. A
Laplacian that knows its largest |eigenvalue| says so by a ``largest_eigenvalue(state)`` attribute (the
grid's ``reaction_diffusion.laplacian`` and ``meshes.MeshLaplacian`` do); for any other only finiteness
is checked.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch


def check_steps(steps) -> int:
    """``steps`` as an int: a whole number >= 0 (an int or NumPy integer; not a bool, float or string)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a whole number >= 0, got {steps!r}; e.g. rollout(state, 64)")
    return int(steps)


def diffusion_speed_limit(diffusion_max: float, laplacian_of: Callable, state: torch.Tensor) -> float | None:
    """The largest stable ``diffusion_speed`` for a rule whose fastest channel diffuses at ``diffusion_max``
    on the space of ``laplacian_of`` (None when that Laplacian does not say its largest eigenvalue)."""
    largest = getattr(laplacian_of, "largest_eigenvalue", None)
    return None if largest is None else 2.0 / (diffusion_max * float(largest(state)))


def check_speeds(diffusion_speed, reaction_speed, diffusion_max: float, laplacian_of: Callable,
                 state: torch.Tensor) -> None:
    """Both speeds finite numbers >= 0, and ``diffusion_speed`` below the stability limit of the space."""
    for name, speed in (("diffusion_speed", diffusion_speed), ("reaction_speed", reaction_speed)):
        if isinstance(speed, bool) or not isinstance(speed, (int, float, np.number)) \
                or not math.isfinite(speed) or speed < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {speed!r} (1.0: the speed it was trained at)")
    limit = diffusion_speed_limit(diffusion_max, laplacian_of, state)
    if limit is not None and diffusion_speed >= limit:
        raise ValueError(f"diffusion_speed {diffusion_speed:g} is not below this rule's stability limit {limit:.4g} on "
                         f"this space (its fastest channel diffuses at {diffusion_max:g}): from there on the finest "
                         f"checkerboard grows at every step until the state overflows. Use a speed below {limit:.4g} "
                         "(a trained rule may need a little less)")
