"""A fast engine for the NCA of chapter 03: the same mathematics as ``helpers.nca.NCA``, run faster.

Chapter 03 teaches the rule in its plainest form (``NCA.forward``): pad, perceive, concatenate,
split into signs, concatenate again, 1x1 convolution, random mask. That form is the lesson; this
module computes *exactly the same states and gradients* with less work for the machine:

* **no autograd graph over the rollout.** A whole rollout is ONE ``torch.autograd.Function``. Its
  forward runs without recording anything; its backward (written by hand below) needs only the
  state before each step and that step's mask. The plain version keeps about 50 MB of
  intermediate tensors per step at batch 4, 128x128 (the 24- and 48-channel feature maps, the
  relu results, the padded copy...); this one keeps 3.75 MB, or less with checkpointing.
* **no fresh memory inside the loop.** Every buffer (padded state, features, gradients) is
  allocated once per rollout and reused at every step with ``out=`` arguments. On a virtual
  machine each fresh page of memory costs a page fault, and the plain version makes about
  twenty new multi-megabyte tensors per step.
* **channels-last layout.** Inside the engine the state is ``[batch, height, width, channels]``:
  each cell's 12 values sit next to each other, so the 1x1 convolution becomes one matrix product
  ``[cells, 48] @ [48, 12]`` and the depthwise 3x3 convolution runs in oneDNN's channels-last path.
* **the sign split written straight into one buffer.** ``relu(f)`` and ``min(f, 0)`` (which equals
  ``-relu(-f)``) are written into the two halves of one ``[cells, 48]`` buffer: no concatenation.
* **gradient checkpointing** (``checkpoint_every=k``): keep only every k-th state and recompute
  the others during the backward pass, trading one extra forward step per step for memory.
* **optional fast masks** (``masks="fast"``): the plain version draws one random float per value
  (``torch.rand(...) < 0.5``), which on a CPU costs more than the rest of a step. With an update
  rate of exactly 0.5 a mask value is one fair random bit, so one random byte gives eight of them.
  Statistically the same, but a different random stream, so only ``masks="exact"`` (the default)
  reproduces the plain version's states draw for draw.

The hand-written backward of one step (state ``x``, mask ``m``, perception ``p = P x``,
features ``f = [x, p]``, split ``s = [relu(f), min(f, 0)]``, update ``y = x + m * (W s + b)``),
given the gradient ``gy`` of the loss with respect to ``y``:

    g       = m * gy                        gradient of the proposed change (W s + b)
    dW     += g s^T,  db += sum of g        the parameter gradients
    gs      = W^T g                         gradient of the 48 split features
    gf      = gs_relu * [f > 0] + gs_min * [f < 0]     (PyTorch's relu has slope 0 at f = 0)
    gx      = gy + gf_state + P^T gf_perception

``P^T``, the adjoint of a circular depthwise convolution, is the same convolution with every 3x3
filter rotated by 180 degrees. ``tests/test_fast.py`` checks states and gradients against
``helpers.nca.NCA`` and ``python -m helpers.bench`` measures both side by side.

Usage::

    from helpers import fast
    final = fast.rollout(model, states, steps)                   # differentiable, like model.rollout
    final = fast.rollout(model, states, steps, checkpoint_every=8)
    train_pool(model, make_samples, loss_fn, config, rollout=fast.make_rollout())
    with torch.no_grad():
        final = fast.rollout(model, states, steps)               # inference: nothing is stored
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import nca

MASK_MODES = ("exact", "fast")


# ------------------------------------------------------------------------------ checks

def check_model(model) -> None:
    """The engine runs ``helpers.nca.NCA`` (any filters, update rate, per-channel or per-cell masks)."""
    if not isinstance(model, nca.NCA):
        raise TypeError(f"the fast engine runs helpers.nca.NCA models, got {type(model).__name__}; "
                        "use model.rollout for other models")


def check_options(model, checkpoint_every, masks) -> None:
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be None or a positive integer, got {checkpoint_every!r}")
    if masks not in MASK_MODES:
        raise ValueError(f"masks must be one of {MASK_MODES}, got {masks!r}")
    if masks == "fast" and model.update_rate != 0.5:
        raise ValueError(f"masks='fast' draws one random bit per value, so it needs update_rate 0.5 "
                         f"(this model has {model.update_rate}); use masks='exact'")


# ------------------------------------------------------------------------------ the engine

class Workspace:
    """The constants of one model and every buffer a rollout reuses, allocated once per rollout.

    All grids here are channels-last: ``[batch, height, width, channels]``.
    """

    def __init__(self, model: nca.NCA, shape, dtype, device, generator, masks: str):
        batch, channels, height, width = shape
        self.shape, self.channels, self.generator, self.mask_mode = shape, channels, generator, masks
        self.rate, self.per, self.split_relu = model.update_rate, model.update_per, model.split_relu
        new = lambda *size, dtype=dtype: torch.empty(*size, dtype=dtype, device=device)  # noqa: E731
        # The 3x3 filters, and the same filters rotated by 180 degrees for the backward pass.
        self.filters = model.filters.to(device=device, dtype=dtype)
        self.filters_flipped = torch.flip(self.filters, dims=(2, 3))
        self.padded = new(batch, height + 2, width + 2, channels)      # the state with a 1-cell border
        features = 4 * channels if self.split_relu else 2 * channels
        self.features = new(batch * height * width, features)          # one row of 48 numbers per cell
        self.delta = new(batch * height * width, channels)             # proposed change of every value
        # The random numbers are drawn in the plain version's shape [B, C, H, W] so that the same
        # generator gives the same masks; the engine reads them through a channels-last view.
        mask_channels = channels if self.per == "channel" else 1
        self.mask_shape = (batch, mask_channels, height, width)
        self.uniform = new(*self.mask_shape) if masks == "exact" else None
        self.random_bytes = (new(batch * mask_channels * height * width // 8 + 1, dtype=torch.uint8)
                             if masks == "fast" else None)
        self.bit_shifts = torch.arange(8, dtype=torch.uint8, device=device)

    # -- masks ---------------------------------------------------------------------

    def draw_mask(self, out: torch.Tensor) -> torch.Tensor:
        """Write this step's 0/1 update mask into ``out`` (bool, channels-last ``[B, H, W, c]``)."""
        if self.mask_mode == "exact":
            # Exactly what helpers.nca.update_mask does: torch.rand(shape, generator) < rate.
            torch.rand(self.mask_shape, generator=self.generator, out=self.uniform)
            return torch.lt(self.uniform.permute(0, 2, 3, 1), self.rate, out=out)
        # One random byte gives eight fair bits: (byte >> i) & 1 for i = 0..7.
        self.random_bytes.random_(0, 256, generator=self.generator)
        bits = (self.random_bytes[:, None] >> self.bit_shifts) & 1
        return out.copy_(bits.view(-1)[:out.numel()].view(out.shape))

    # -- the forward step ---------------------------------------------------------------

    def pad(self, grid: torch.Tensor) -> torch.Tensor:
        """Copy ``grid`` [B, H, W, C] into the middle of the padded buffer and wrap the border
        around (circular padding: the top row's neighbour above is the bottom row)."""
        padded = self.padded
        padded[:, 1:-1, 1:-1].copy_(grid)
        padded[:, 0, 1:-1].copy_(grid[:, -1])
        padded[:, -1, 1:-1].copy_(grid[:, 0])
        padded[:, :, 0].copy_(padded[:, :, -2])       # columns last, so the corners wrap too
        padded[:, :, -1].copy_(padded[:, :, 1])
        return padded

    def depthwise(self, grid: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        """Circular depthwise 3x3 convolution of a channels-last grid; returns [B, H, W, C]."""
        padded = self.pad(grid).permute(0, 3, 1, 2)   # an NCHW view with channels-last strides
        return F.conv2d(padded, filters, groups=self.channels).permute(0, 2, 3, 1)

    def fill_features(self, state: torch.Tensor) -> None:
        """The per-cell input of the 1x1 layer, written into ``self.features``:
        ``[relu(x), relu(p), min(x, 0), min(p, 0)]`` (split) or ``[x, p]`` (no split)."""
        channels = self.channels
        perception = self.depthwise(state, self.filters)
        cells = self.features.shape[0]
        state, perception = state.reshape(cells, channels), perception.reshape(cells, channels)
        if self.split_relu:
            torch.clamp(state, min=0.0, out=self.features[:, 0:channels])
            torch.clamp(perception, min=0.0, out=self.features[:, channels:2 * channels])
            torch.clamp(state, max=0.0, out=self.features[:, 2 * channels:3 * channels])
            torch.clamp(perception, max=0.0, out=self.features[:, 3 * channels:])
        else:
            self.features[:, :channels].copy_(state)
            self.features[:, channels:].copy_(perception)

    def step(self, state: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
             out: torch.Tensor) -> torch.Tensor:
        """One CA step from ``state`` into ``out`` (both [B, H, W, C]); ``weight`` is [C, inputs]."""
        self.fill_features(state)
        torch.addmm(bias, self.features, weight.t(), out=self.delta)   # the 1x1 convolution
        delta = self.delta.view(state.shape)
        delta.mul_(mask)                                                # the stochastic update
        return torch.add(state, delta, out=out)

    # -- the backward step --------------------------------------------------------------

    def step_backward(self, state, mask, weight, grad_out, grad_weight, grad_bias, grad_in):
        """Given dL/d(next state) ``grad_out``, add this step's parameter gradients into
        ``grad_weight`` / ``grad_bias`` and write dL/d(state) into ``grad_in``."""
        channels, cells = self.channels, self.features.shape[0]
        self.fill_features(state)                                   # recompute s (cheap)
        grad_delta = (grad_out * mask).reshape(cells, channels)     # g = m * gy
        grad_bias.add_(grad_delta.sum(dim=0))
        grad_weight.addmm_(grad_delta.t(), self.features)           # dW += g s^T
        grad_features = grad_delta @ weight                         # gs = W^T g, [cells, inputs]
        if self.split_relu:
            # relu(f) passes gradient where f > 0, min(f, 0) where f < 0; neither at f = 0.
            positive, negative = grad_features[:, :2 * channels], grad_features[:, 2 * channels:]
            positive.mul_(self.features[:, :2 * channels] > 0)
            negative.mul_(self.features[:, 2 * channels:] < 0)
            grad_f = positive.add_(negative)                          # [cells, 2C]: state, perception
        else:
            grad_f = grad_features
        grad_state = grad_f[:, :channels].reshape(state.shape)
        grad_perception = grad_f[:, channels:].reshape(state.shape)
        # gx = gy + gf_state + P^T gf_perception (P^T: the convolution with rotated filters)
        torch.add(grad_out, grad_state, out=grad_in)
        return grad_in.add_(self.depthwise(grad_perception, self.filters_flipped))


class _Rollout(torch.autograd.Function):
    """``steps`` CA steps as one autograd node, with the hand-written backward of ``Workspace``."""

    @staticmethod
    def forward(ctx, state, weight, bias, model, steps, checkpoint_every, generator, masks, need_grad):
        batch, channels, height, width = state.shape
        work = Workspace(model, state.shape, state.dtype, state.device, generator, masks)
        weight2d = weight.reshape(channels, -1)
        every = checkpoint_every or 1
        grid = state.detach().permute(0, 2, 3, 1).contiguous()       # [B, H, W, C]
        mask_channels = work.mask_shape[1]
        # Saved for the backward pass: every mask (1 byte per value) and every k-th state.
        all_masks = torch.empty(steps if need_grad else 1, batch, height, width, mask_channels,
                                dtype=torch.bool, device=state.device)
        saved = [] if need_grad else None
        current, spare = grid, torch.empty_like(grid)
        for step in range(steps):
            if need_grad and step % every == 0:
                saved.append(current.clone() if every > 1 or step == 0 else current)
            mask = work.draw_mask(all_masks[step if need_grad else 0])
            work.step(current, mask, weight2d, bias, spare)
            if need_grad and every == 1:
                current, spare = spare, torch.empty_like(grid)        # keep every state
            else:
                current, spare = spare, current                       # ping-pong two buffers
        if need_grad:
            ctx.work, ctx.steps, ctx.every = work, steps, every
            ctx.saved_states, ctx.masks = saved, all_masks
            ctx.save_for_backward(weight, bias)
        return current.permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad_output):
        weight, bias = ctx.saved_tensors
        work, steps, every = ctx.work, ctx.steps, ctx.every
        channels = work.channels
        weight2d = weight.detach().reshape(channels, -1)
        grad_weight = torch.zeros_like(weight2d)
        grad_bias = torch.zeros_like(bias)
        grad = grad_output.permute(0, 2, 3, 1).contiguous()
        spare = torch.empty_like(grad)
        # Walk the blocks of ``every`` steps backwards. Inside a block, first recompute its states
        # from the saved one (with the saved masks), then step backwards through them.
        for block in reversed(range(len(ctx.saved_states))):
            start = block * every
            stop = min(start + every, steps)
            states = [ctx.saved_states[block]]
            for step in range(start, stop - 1):
                states.append(work.step(states[-1], ctx.masks[step], weight2d, bias.detach(),
                                        torch.empty_like(grad)))
            for step in reversed(range(start, stop)):
                work.step_backward(states[step - start], ctx.masks[step], weight2d, grad,
                                   grad_weight, grad_bias, spare)
                grad, spare = spare, grad
            ctx.saved_states[block] = None                             # free memory as we go
        grad_state = grad.permute(0, 3, 1, 2).contiguous() if ctx.needs_input_grad[0] else None
        return grad_state, grad_weight.view_as(weight), grad_bias, None, None, None, None, None, None


# ------------------------------------------------------------------------------ public API

def rollout(model: nca.NCA, state: torch.Tensor, steps: int, generator: torch.Generator | None = None,
            checkpoint_every: int | None = None, masks: str = "exact") -> torch.Tensor:
    """Run ``steps`` steps of ``model`` from ``state`` [B, C, H, W]; the same as ``model.rollout``.

    Differentiable with respect to the model's parameters and the state (a hand-written backward).
    Under ``torch.no_grad()`` nothing is stored, which makes it the fast inference path.
    ``generator`` is used exactly as ``model.rollout`` uses it, so with ``masks="exact"`` both
    draw the same masks. ``checkpoint_every=k`` stores only every k-th state for the backward
    pass and recomputes the rest (less memory, one more forward step per step).
    """
    check_model(model)
    check_options(model, checkpoint_every, masks)
    nca.check_state(state, model.channels)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if steps == 0:
        return state
    weight, bias = model.update.weight, model.update.bias
    # Store what the backward pass needs only when a gradient can be asked for.
    need_grad = torch.is_grad_enabled() and (state.requires_grad or weight.requires_grad or bias.requires_grad)
    return _Rollout.apply(state, weight, bias, model, steps, checkpoint_every, generator, masks, need_grad)


def make_rollout(checkpoint_every: int | None = None, masks: str = "exact"):
    """``rollout(model, states, steps)`` for ``helpers.train.train_pool(..., rollout=...)``."""
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be None or a positive integer, got {checkpoint_every!r}")
    if masks not in MASK_MODES:
        raise ValueError(f"masks must be one of {MASK_MODES}, got {masks!r}")

    def fast_rollout(model, states, steps):
        return rollout(model, states, steps, checkpoint_every=checkpoint_every, masks=masks)

    return fast_rollout


@torch.no_grad()
def infer(model: nca.NCA, state: torch.Tensor, steps: int, generator: torch.Generator | None = None,
          masks: str = "exact") -> torch.Tensor:
    """Inference: ``steps`` steps without gradients (the same states as ``model.rollout``)."""
    return rollout(model, state, steps, generator=generator, masks=masks)
