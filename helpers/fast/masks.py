"""The update masks of a fast rollout: the plain version's shapes, and its exact draws for both backends.

``helpers.nca.update_mask`` draws ``torch.rand(shape, generator) < update_rate`` in torch's default
dtype, one number per value (``update_per="channel"``, shape ``[B, C, H, W]``) or per cell
(``update_per="cell"``, shape ``[B, 1, H, W]``). ``TorchRandMasks`` draws exactly that into
buffers allocated once; the PyTorch backend always uses it for ``masks="exact"``, the kernel
backend when its own Mersenne Twister is not available (see ``cpu_kernel.exact_masks_available``).
"""
from __future__ import annotations

import torch

from .. import nca


def mask_shape(rule: nca.Rule, shape) -> tuple[int, int, int, int]:
    """The shape of one step's mask for a state of ``shape`` ``[B, C, H, W]``, as ``update_mask`` draws it."""
    batch, channels, height, width = shape
    if rule.update_per == "channel":
        return (batch, channels, height, width)
    if rule.update_per == "cell":
        return (batch, 1, height, width)
    raise ValueError(f"update_per must be one of {nca.UPDATE_PER}, got {rule.update_per!r}")


class TorchRandMasks:
    """``torch.rand(shape, generator) < update_rate`` into a reused buffer: the plain version's masks."""

    def __init__(self, rule: nca.Rule, shape, generator: torch.Generator | None, device):
        self.rate, self.generator = rule.update_rate, generator
        # in torch's default dtype, as update_mask draws them, whatever the state's dtype
        self.uniform = torch.empty(mask_shape(rule, shape), dtype=torch.get_default_dtype(), device=device)

    def draw(self, out: torch.Tensor) -> torch.Tensor:
        """Write this step's mask into ``out`` (any dtype: 0.0 / 1.0, or bool) and return it."""
        torch.rand(self.uniform.shape, generator=self.generator, out=self.uniform)
        return torch.lt(self.uniform, self.rate, out=out)
