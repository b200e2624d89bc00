"""How far two correct implementations of a rule may drift apart: the tolerance of every parity check
(``parity_tolerance`` for float32 state; ``eight_bit_tolerance`` and ``code_differences`` for the 8-bit state)."""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..nca import CHANNELS, NCA
from .quantize import STATE_CODE, quantize_state


def parity_tolerance(model: NCA, state: torch.Tensor, steps: int, safety: float = 10.0,
                     floor: float = 1e-5) -> float:
    """The largest difference two correct float32 implementations of ``model`` may show after ``steps``
    deterministic steps from ``state``.

    Float32 rounds every sum; a different summation order (C loops, a GPU, another library) rounds
    differently, and the dynamics amplify those differences step by step. We measure that amplified
    rounding noise directly: the largest gap between float32 and float64 runs of the same model. A
    second float32 implementation lies about as far from the float64 run, so the gap between two of
    them is at most about twice that; ``safety`` (10) leaves room for unluckier orders, and ``floor``
    covers a gap that happens to be tiny.

    ``model`` itself is left as it is: both runs use copies of it.
    """
    with torch.no_grad():
        single, double = state.float(), state.double()
        model_single, model_double = copy.deepcopy(model).float(), copy.deepcopy(model).double()
        ones = torch.ones(1)
        for _ in range(steps):
            single = model_single(single, mask=ones)
            double = model_double(double, mask=ones.double())
        gap = float((single.double() - double).abs().max())
    if not np.isfinite(gap):
        raise ValueError("the deterministic run diverged (NaN or infinity); parity cannot be checked on it")
    return max(safety * gap, floor)


def code_differences(result: torch.Tensor, reference: torch.Tensor) -> dict:
    """How two 8-bit states differ: the fraction of values whose codes differ and the largest
    difference in levels (1 level = 1/127)."""
    levels = (torch.round(result.double() * STATE_CODE) - torch.round(reference.double() * STATE_CODE)).abs()
    return {"differing_fraction": levels.gt(0).double().mean().item(), "max_levels": int(levels.max().item())}


def eight_bit_tolerance(model: NCA, state: torch.Tensor, steps: int, safety: float = 10.0) -> dict:
    """The fraction of values two correct 8-bit-state implementations of ``model`` may disagree on
    after ``steps`` deterministic steps from ``state``.

    Every step rounds each new value to the nearest of the 255 levels. Two implementations round the
    same way unless the exact new value lies within their float32 rounding noise of a half level (a
    *near tie*): then one may round up and the other down, and from there the difference spreads by at
    most one cell per step. We follow the 8-bit run in float64, measure each value's float32 noise
    (the gap between its float32 and float64 updates from the same state, times ``safety``) and count
    the values that land that close to a half level. With no near tie the two must agree on every
    code; each near tie at step t allows the 12 x (2(steps - t) + 1)^2 values it can reach to differ.

    Returns ``near_ties`` (their number), ``first_near_tie`` (its step, or None), ``exact_steps`` (the
    steps before it: over that many steps two correct implementations agree on every code) and
    ``allowed_fraction`` (of all values after ``steps`` steps, at most 1).
    """
    everything = torch.ones(1)
    single_model, double_model = copy.deepcopy(model).float(), copy.deepcopy(model).double()
    current = quantize_state(state.double())
    height, width = state.shape[-2:]
    ties, reachable, first = 0, 0, None
    with torch.no_grad():
        for step in range(1, steps + 1):
            exact = double_model(current, mask=everything.double())
            noise = (single_model(current.float(), mask=everything).double() - exact).abs()  # per value
            noise = torch.maximum(noise, exact.abs() * 2.0 ** -24)   # at least float32's own rounding of it
            scaled = exact.clamp(-1, 1) * STATE_CODE
            to_half = (scaled - torch.floor(scaled) - 0.5).abs()     # distance to the nearest half level
            count = int((to_half <= safety * noise * STATE_CODE).sum())
            radius = steps - step
            reachable += count * CHANNELS * min(2 * radius + 1, height) * min(2 * radius + 1, width)
            ties += count
            if count and first is None:
                first = step
            current = quantize_state(exact)
    if not torch.isfinite(current).all():
        raise ValueError("the 8-bit run is not finite; parity cannot be checked on it")
    return {"near_ties": ties, "first_near_tie": first, "exact_steps": steps if first is None else first - 1,
            "allowed_fraction": min(1.0, reachable / current.numel())}
