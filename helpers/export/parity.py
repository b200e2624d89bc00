"""How far two correct float32 implementations of a rule may drift apart: the tolerance of every parity check."""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..nca import NCA


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
