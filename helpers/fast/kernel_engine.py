"""The C++ kernel backend of ``helpers.fast`` (``backend="kernel"``): float32 states on the CPU.

Each step is one call into ``csrc/nca_cpu.cpp`` (built and loaded by ``cpu_kernel``): one pass
over the grid, the 48 features of a cell kept in vector registers, eight cells of a row computed
together, rows shared between threads (OpenMP). States are plain ``[B, C, H, W]`` grids (the
kernel pads by itself: wrapped around, or zeros) and masks are bytes (``bool``).

Exact masks come from the kernel too when it can (``cpu_kernel.draw_rand_mask``: the generator's
own Mersenne Twister, the same values as ``torch.rand`` about ten times faster), else from
``masks.TorchRandMasks``. Bit masks hash a per-step seed from the generator with each value's index.
"""
from __future__ import annotations

import torch

from .. import nca
from . import cpu_kernel
from .masks import TorchRandMasks, mask_shape


def fits(rule: nca.Rule, dtype, device) -> str | None:
    """Why the kernel cannot run this rule on these states, or None when it can (then it is loaded)."""
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        return "it runs float32 states on the CPU"
    if not cpu_kernel.available():
        return cpu_kernel.load_error()
    if rule.channels > cpu_kernel.max_channels():
        return f"it runs at most {cpu_kernel.max_channels()} channels, this rule has {rule.channels}"
    return None


class KernelWorkspace:
    """The interface of ``torch_engine.TorchWorkspace``, computed by the fused C++ kernel."""

    def __init__(self, rule: nca.Rule, filters: torch.Tensor, shape, dtype, device,
                 generator: torch.Generator | None, masks: str):
        reason = fits(rule, dtype, device)
        if reason is not None:
            raise RuntimeError(f"the CPU kernel is not available: {reason}")
        self.lib = cpu_kernel.load()
        self.rule, self.shape, self.generator, self.masks = rule, shape, generator, masks
        self.dtype = dtype
        self.filters = filters.to(dtype).reshape(rule.channels, 9).contiguous()
        self.filters_flipped = torch.flip(filters, dims=(2, 3)).to(dtype).reshape(rule.channels, 9).contiguous()
        self.mask_shape = mask_shape(rule, shape)
        self.mask = torch.empty(self.mask_shape, dtype=torch.bool)
        # Exact masks straight from the generator's Mersenne Twister when the kernel's check
        # against torch.rand passed, else with torch.rand itself.
        self.twister = masks == "exact" and cpu_kernel.exact_masks_available()
        if masks == "exact" and not self.twister:
            self.exact_masks = TorchRandMasks(rule, shape, generator, "cpu")
        self.grad_perception = torch.empty(shape, dtype=dtype)       # scratch space of the backward pass
        self.threads = torch.get_num_threads()
        self.weight = self.bias = None

    def load_parameters(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """The 1x1 layer for this rollout, as the kernel reads it: weights ``[C, inputs]``, bias ``[C]``
        in float32 (anything else is refused, never reinterpreted: the kernel reads raw float32 memory)."""
        if weight.dtype != self.dtype or bias.dtype != self.dtype:
            raise TypeError(f"the CPU kernel runs {self.dtype} weights and biases with {self.dtype} states, got "
                            f"{weight.dtype} and {bias.dtype}; convert the model or use backend='torch'")
        self.weight = weight.reshape(self.rule.channels, self.rule.inputs).contiguous()
        self.bias = bias.reshape(self.rule.channels).contiguous()

    @property
    def state_shape(self):
        return self.shape

    def new_state(self) -> torch.Tensor:
        return torch.empty(self.shape, dtype=self.dtype)

    @staticmethod
    def set_state(buffer: torch.Tensor, state: torch.Tensor) -> None:
        buffer.copy_(state)

    @staticmethod
    def interior(buffer: torch.Tensor) -> torch.Tensor:
        return buffer

    def draw_mask(self, keep: torch.Tensor | None) -> torch.Tensor:
        """This step's mask as bytes, written straight into ``keep`` when the backward pass needs it."""
        mask = self.mask if keep is None else keep
        if self.twister:
            cpu_kernel.draw_rand_mask(mask, self.rule.update_rate, self.generator)   # = torch.rand(...) < rate
        elif self.masks == "exact":
            self.exact_masks.draw(out=mask)
        else:
            # One 64-bit seed per step from the generator; the kernel hashes (seed, index) to bits.
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            threshold = int(self.rule.update_rate * 2**32)
            self.lib.nca_random_mask(cpu_kernel.pointer(mask, torch.bool, self.mask_shape), mask.numel(), seed,
                                     threshold, self.threads)
        return mask

    def _grid(self):
        """The trailing arguments of the kernel's step functions: the grid, the rule's options, threads."""
        batch, channels, height, width = self.shape
        update_per_channel = self.rule.update_per == "channel"
        zero_padding = self.rule.padding == "zeros"
        return (batch, channels, height, width, int(self.rule.split_relu), int(update_per_channel), int(zero_padding),
                self.threads)

    # Every buffer handed to the kernel is checked for its dtype and shape (cpu_kernel.pointer): the
    # C++ side reads raw memory, so a float64 or smaller buffer would be misread, not refused.

    def _state(self, tensor: torch.Tensor) -> int:
        return cpu_kernel.pointer(tensor, self.dtype, self.shape)

    def _mask(self, tensor: torch.Tensor) -> int:
        return cpu_kernel.pointer(tensor, torch.bool, self.mask_shape)

    def _parameters(self) -> list[int]:
        if self.weight is None:
            raise RuntimeError("load_parameters(weight, bias) must come before the first step")
        channels, inputs, p = self.rule.channels, self.rule.inputs, cpu_kernel.pointer
        return [p(self.weight, self.dtype, (channels, inputs)), p(self.bias, self.dtype, (channels,)),
                p(self.filters, self.dtype, (channels, 9))]

    def step(self, state: torch.Tensor, mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        self.lib.nca_step(self._state(state), self._mask(mask), self._state(out), *self._parameters(), *self._grid())
        return out

    def step_backward(self, state: torch.Tensor, mask: torch.Tensor, grad_out: torch.Tensor,
                      grad_weight_bias: torch.Tensor, grad_in: torch.Tensor) -> torch.Tensor:
        grad_wb = cpu_kernel.pointer(grad_weight_bias, self.dtype, (self.rule.channels, self.rule.inputs + 1))
        flipped = cpu_kernel.pointer(self.filters_flipped, self.dtype, (self.rule.channels, 9))
        self.lib.nca_step_backward(self._state(state), self._mask(mask), self._state(grad_out), self._state(grad_in),
                                   grad_wb, self._state(self.grad_perception), *self._parameters(), flipped,
                                   *self._grid())
        return grad_in
