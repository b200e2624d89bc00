"""The checks that every rule and helper shares, one per concept, each a ValueError that names the bad
value, what is allowed and what to do:

* ``check_steps(steps)``                     a whole number >= 0
* ``check_count(name, value, least)``        a whole number >= ``least`` (a batch, a count, a chunk, a side)
* ``count_flag(least)``                   the same for a command-line flag (an argparse type)
* ``check_learning_rate(learning_rate)``   a finite number > 0
* ``grid_shape(size)``                       a grid's side or (height, width) as a checked (height, width)
* ``check_state(state, channels)``           a floating-point tensor ``[batch, channels, height, width]``
* ``check_speeds(diffusion_speed, reaction_speed, diffusion_max, laplacian_of, state)``
  finite speeds >= 0, and a diffusion speed within the explicit step's stability limit

The stability limit: one explicit Euler step of diffusion multiplies the Laplacian's eigenmode of
eigenvalue -lambda by ``1 - speed * rate * lambda``; the mode stays bounded while that factor is at least
-1, so every channel is stable while ``speed * largest_rate * largest_lambda < 2``. At the limit the finest
checkerboard never decays, beyond it it grows at every step (``tests/test_reliability.py`` measures both
sides). The reaction can lower the limit of a trained rule a little: of chapter 08's first rules (no
clamp) on a 48x48 grid over 2000 steps, stripes stayed bounded at 1.48 and overflowed at 1.49 and 1.5,
bubbles and polka dots stayed bounded up to 1.495 (the grid's limit is 1.5); the chapter's knob stops at
1.4. A rule that clamps its state cannot overflow, but past the limit the checkerboard still wins: the
shipped polka-dot rule at speed 1.6 ends as a checkerboard of +-1 (wavelength 1.4 cells). A
Laplacian that knows its largest |eigenvalue| says so by a ``largest_eigenvalue(state)`` attribute (the
grid's ``reaction_diffusion.laplacian`` and ``meshes.MeshLaplacian`` do); for any other only finiteness
is checked.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

import numpy as np
import torch


def check_steps(steps) -> int:
    """``steps`` as an int: a whole number >= 0 (an int or NumPy integer; not a bool, float or string)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a whole number >= 0, got {steps!r}; e.g. rollout(state, 64)")
    return int(steps)


def is_whole(value) -> bool:
    """An int or a NumPy integer (a bool is not a count)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_count(name: str, value, least: int = 1, example: str = "") -> int:
    """``value`` as an int: a whole number >= ``least``, else a ValueError naming ``name``, the value and
    the range (``example``: what to pass instead, e.g. ``"batch=8"``)."""
    if not is_whole(value) or value < least:
        hint = f"; e.g. {example}" if example else ""
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}{hint}")
    return int(value)


def count_flag(least: int):
    """An argparse ``type`` for a command-line count: a whole number >= ``least``, else argparse's usage error
    ``argument --flag: ...`` naming the value and the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {least}, got {text!r}")
        return value
    parse.__name__ = f"whole number >= {least}"
    return parse


def check_learning_rate(learning_rate) -> None:
    """An optimizer's learning rate: a finite number > 0."""
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.number)) \
            or not 0 < learning_rate < math.inf:
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}; e.g. 1e-3")


def grid_shape(size, least: int = 1) -> tuple[int, int]:
    """A grid's ``size``, a side (a square grid) or ``(height, width)``, as checked ints, each >= ``least``."""
    sides = (size, size) if is_whole(size) else size
    if not isinstance(sides, (tuple, list)) or len(sides) != 2 or not all(is_whole(side) for side in sides):
        raise ValueError(f"size must be a grid's side (a whole number) or (height, width), got {size!r}; e.g. size=64")
    for side in sides:
        check_count("each side of the grid", side, least, "size=64")
    return int(sides[0]), int(sides[1])


def check_state(state, channels: int, least_side: int = 1, finite: bool = False) -> None:
    """``state`` is a floating-point tensor ``[batch, channels, height, width]`` with sides >= ``least_side``
    (``finite``: and no NaN or infinite value, checked once where a rollout starts)."""
    expected = f"a tensor [batch, {channels}, height, width]"
    if not isinstance(state, torch.Tensor):
        raise ValueError(f"the state must be {expected}, got a {type(state).__name__}; make one with seed_state")
    if state.ndim != 4 or state.shape[1] != channels:
        one = "; for one state use state[None]" if state.ndim == 3 and state.shape[0] == channels else ""
        raise ValueError(f"the state must be shaped [batch, {channels}, height, width], got {tuple(state.shape)}{one}")
    if min(state.shape[2:]) < least_side:
        raise ValueError(f"the grid must be at least {least_side}x{least_side}, got {tuple(state.shape[2:])}")
    if not state.is_floating_point():
        raise ValueError(f"the state must hold floating point values, got {state.dtype}; use state.float()")
    if finite and not bool(torch.isfinite(state).all()):
        raise ValueError("the state holds NaN or infinite values: a rule cannot grow anything from them; start from "
                         "a seed_state, or from a state of a rollout that stayed finite")


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
                         f"checkerboard grows at every step until the state overflows (or, in a rule that clamps its "
                         f"state, fills the grid). Use a speed below {limit:.4g} (a trained rule may need a "
                         "little less)")
