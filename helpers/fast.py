"""A fast engine for the NCA of chapter 03: the same mathematics as ``helpers.nca.NCA``, run faster.

Chapter 03 teaches the rule in its plainest form (``NCA.forward``): pad, perceive, concatenate,
split into signs, concatenate again, 1x1 convolution, random mask. That form is the lesson; this
module computes *exactly the same states and gradients* with less work for the machine. A whole
rollout is ONE ``torch.autograd.Function`` whose forward records nothing and whose backward is
written by hand below; it needs only the state before each step and that step's mask (1 byte per
value). Two engines run the steps:

* ``engine="kernel"`` (the default on a CPU, float32): a fused C++ kernel,
  ``helpers/csrc/nca_cpu.cpp``, compiled on first use by ``helpers.cpu_kernel`` (about a second;
  it needs ``g++``/``clang++``, which Colab and most Linux machines have). One pass over the grid
  per step: a cell's 48 features live in vector registers and never travel through memory, eight
  cells of a row are computed together, rows are shared between threads (OpenMP). The random
  masks come from the kernel too: it runs the generator's own Mersenne Twister, so it draws
  exactly ``torch.rand(shape, generator) < rate``, and leaves the generator where ``torch.rand``
  would, about ten times faster (``helpers.cpu_kernel`` checks this against ``torch.rand`` once
  per process and falls back to ``torch.rand`` if a PyTorch release ever differed). Without a
  compiler ``engine="auto"`` quietly uses the PyTorch engine; ``DSOS_CPU_KERNEL=0`` forces that.
* ``engine="torch"`` (GPUs, float64, no compiler): the same step as a dozen PyTorch operations on
  buffers allocated once per rollout:

  - **no fresh memory inside the loop** (``out=`` arguments): on a virtual machine every fresh page
    costs a page fault, and the plain version makes about twenty new multi-megabyte tensors per step;
  - **padding for free**: each new state is written straight into the middle of a grid one cell
    larger on every side; only the four thin borders are copied to wrap around;
  - **no concatenations**: ``relu(f)`` and ``min(f, 0)`` (equal to ``-relu(-f)``) are written
    straight into the quarters of one 48-channel buffer, plus a channel of ones, so that one matrix
    product per image, ``[C, 48 + 1] @ [48 + 1, H*W]``, applies weights *and* bias, and its
    transpose gives both gradients.

Options of both engines:

* **gradient checkpointing** (``checkpoint_every=k``): keep only every k-th state and recompute
  the others during the backward pass, trading one extra forward step per step for memory.
* **fast masks** (``masks="fast"``): the plain version draws one random float per value
  (``torch.rand(...) < 0.5``); in the PyTorch engine on a CPU that costs about as much as the
  rest of the step. Fast masks draw random bits instead (the kernel hashes a per-step seed from
  the generator with the value's index): statistically the same, but a different random stream,
  so only ``masks="exact"`` (the default) reproduces the plain version's states draw for draw.
  With the C++ kernel, whose exact masks are already cheap, they gain little.

Measured and dropped (``python -m helpers.bench`` measures what is kept): a channels-last layout
for the PyTorch engine (its depthwise convolution is faster, but writing features and masks across
channels cost more than that saved); ``torch.compile`` of a step on the CPU (about a minute to
compile, under 2x faster than plain).

The hand-written backward of one step (state ``x``, mask ``m``, perception ``p = P x``,
features ``f = [x, p]``, split ``s = [relu(f), min(f, 0)]``, update ``y = x + m * (W s + b)``),
given the gradient ``gy`` of the loss with respect to ``y``:

    g       = m * gy                        gradient of the proposed change (W s + b)
    dW     += g s^T,  db += sum of g        the parameter gradients
    gs      = W^T g                         gradient of the 48 split features
    gf      = gs_relu * [f > 0] + gs_min * [f < 0]     (PyTorch's relu has slope 0 at f = 0)
    gx      = gy + gf_state + P^T gf_perception

``P^T``, the adjoint of a circular depthwise convolution, is the same convolution with every 3x3
filter rotated by 180 degrees. ``tests/test_fast.py`` checks the states and gradients of both
engines against ``helpers.nca.NCA``; ``python -m helpers.bench`` measures them side by side.

Usage::

    from helpers import fast
    final = fast.rollout(model, states, steps)                   # differentiable, like model.rollout
    final = fast.rollout(model, states, steps, checkpoint_every=8)
    final = fast.rollout(model, states, steps, engine="torch")   # force the PyTorch engine
    train_pool(model, make_samples, loss_fn, config, rollout=fast.make_rollout())
    train_pool(..., rollout=fast.make_rollout(masks="fast"))     # faster, statistically the same
    with torch.no_grad():
        final = fast.rollout(model, states, steps)               # inference: nothing is stored
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import cpu_kernel, nca

MASK_MODES = ("exact", "fast")
#: "auto": the fused C++ kernel on the CPU when it compiles, PyTorch operations otherwise.
ENGINES = ("auto", "kernel", "torch")


# ------------------------------------------------------------------------------ checks

def check_model(model) -> None:
    """The engine runs ``helpers.nca.NCA`` (any filters, update rate, per-channel or per-cell masks)."""
    if not isinstance(model, nca.NCA):
        raise TypeError(f"the fast engine runs helpers.nca.NCA models, got {type(model).__name__}; "
                        "use model.rollout for other models")


def check_options(model, checkpoint_every, masks, engine="auto") -> None:
    """Clear errors for bad options (``model`` may be None when only the options are known)."""
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be None or a positive integer, got {checkpoint_every!r}")
    if masks not in MASK_MODES:
        raise ValueError(f"masks must be one of {MASK_MODES}, got {masks!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if masks == "fast" and model is not None and model.update_rate != 0.5:
        raise ValueError(f"masks='fast' draws one random bit per value, so it needs update_rate 0.5 "
                         f"(this model has {model.update_rate}); use masks='exact'")


# ------------------------------------------------------------------------------ the engine

class Workspace:
    """The constants of one model and the buffers a rollout reuses, allocated once per rollout.

    A state lives inside a *padded* grid ``[B, C, H + 2, W + 2]``: its interior is the state and
    its one-cell border repeats the opposite edge (circular padding). Writing each new state
    straight into the interior of such a grid means padding costs only the four thin borders.
    """

    def __init__(self, model: nca.NCA, shape, dtype, device, generator, masks: str):
        batch, channels, height, width = shape
        self.shape, self.channels, self.generator, self.mask_mode = shape, channels, generator, masks
        self.rate, self.per, self.split_relu = model.update_rate, model.update_per, model.split_relu
        self.dtype, self.device = dtype, device
        self.padded_shape = (batch, channels, height + 2, width + 2)
        new = lambda *size, dtype=dtype: torch.empty(*size, dtype=dtype, device=device)  # noqa: E731
        # The 3x3 filters, and the same filters rotated by 180 degrees for the backward pass.
        self.filters = model.filters.to(device=device, dtype=dtype)
        self.filters_flipped = torch.flip(self.filters, dims=(2, 3))
        inputs = 4 * channels if self.split_relu else 2 * channels
        # The 48 inputs of the 1x1 layer plus a row of ones, so that one matrix product
        # [C, 48 + 1] @ [48 + 1, H*W] adds the bias too (and its transpose gives the bias gradient).
        self.inputs = inputs
        self.features = new(batch, inputs + 1, height, width)
        self.features[:, inputs].fill_(1.0)
        self.delta = new(batch, channels, height, width)       # the proposed change of every value
        # backward-pass buffers
        self.grad_delta = new(batch, channels, height, width)
        self.grad_features = new(batch, inputs, height, width)
        self.grad_padded = new(batch, channels, height + 2, width + 2)
        self.slopes = new(batch, inputs, height, width)
        # The random numbers are drawn in the plain version's shape, so the same generator gives
        # the same masks: [B, C, H, W] per value, [B, 1, H, W] per cell.
        mask_channels = channels if self.per == "channel" else 1
        self.mask_shape = (batch, mask_channels, height, width)
        # (in torch's default dtype, as update_mask draws them, whatever the state's dtype)
        self.uniform = new(*self.mask_shape, dtype=torch.get_default_dtype()) if masks == "exact" else None
        self.mask = new(*self.mask_shape)                       # this step's mask as 0.0 / 1.0
        self.random_bytes = (new(batch * mask_channels * height * width // 8 + 1, dtype=torch.uint8)
                             if masks == "fast" else None)
        self.bit_shifts = torch.arange(8, dtype=torch.uint8, device=device)

    # -- the buffers a rollout keeps its states in (here: padded grids) ----------------

    @property
    def state_shape(self):
        return self.padded_shape

    def new_state(self) -> torch.Tensor:
        return torch.empty(self.padded_shape, dtype=self.dtype, device=self.device)

    def set_state(self, buffer: torch.Tensor, state: torch.Tensor) -> None:
        buffer[..., 1:-1, 1:-1] = state
        self.wrap(buffer)

    @staticmethod
    def interior(buffer: torch.Tensor) -> torch.Tensor:
        return buffer[..., 1:-1, 1:-1]

    # -- masks ---------------------------------------------------------------------

    def draw_mask(self, keep: torch.Tensor | None) -> torch.Tensor:
        """This step's update mask as 0.0 / 1.0 (``self.mask``); a copy goes into ``keep``
        (bool, 1 byte per value) when the backward pass will need it."""
        if self.mask_mode == "exact":
            # Exactly what helpers.nca.update_mask does: torch.rand(shape, generator) < rate.
            torch.rand(self.mask_shape, generator=self.generator, out=self.uniform)
            torch.lt(self.uniform, self.rate, out=self.mask)
        else:
            # One random byte gives eight fair bits: (byte >> i) & 1 for i = 0..7.
            self.random_bytes.random_(0, 256, generator=self.generator)
            bits = (self.random_bytes[:, None] >> self.bit_shifts) & 1
            self.mask.copy_(bits.view(-1)[:self.mask.numel()].view(self.mask_shape))
        if keep is not None:
            keep.copy_(self.mask)
        return self.mask

    # -- the forward step ---------------------------------------------------------------

    @staticmethod
    def wrap(padded: torch.Tensor) -> torch.Tensor:
        """Fill the border of a padded grid from the opposite edges of its interior."""
        padded[..., 0, 1:-1] = padded[..., -2, 1:-1]        # above the top row: the bottom row
        padded[..., -1, 1:-1] = padded[..., 1, 1:-1]        # below the bottom row: the top row
        padded[..., :, 0] = padded[..., :, -2]              # columns last, so the corners wrap too
        padded[..., :, -1] = padded[..., :, 1]
        return padded

    def fill_features(self, padded: torch.Tensor) -> None:
        """The input of the 1x1 layer, written into ``self.features``:
        ``[relu(x), relu(p), min(x, 0), min(p, 0)]`` with the split, ``[x, p]`` without."""
        channels = self.channels
        state = padded[..., 1:-1, 1:-1]
        perception = F.conv2d(padded, self.filters, groups=channels)    # p = P x
        features = self.features
        if self.split_relu:
            torch.clamp(state, min=0.0, out=features[:, 0:channels])
            torch.clamp(perception, min=0.0, out=features[:, channels:2 * channels])
            torch.clamp(state, max=0.0, out=features[:, 2 * channels:3 * channels])
            torch.clamp(perception, max=0.0, out=features[:, 3 * channels:4 * channels])
        else:
            features[:, :channels] = state
            features[:, channels:2 * channels] = perception

    def step(self, padded, mask, weight_bias, out_padded):
        """One CA step: read the padded state, write the next state into ``out_padded``.
        ``weight_bias`` is ``[C, 48 + 1]``: the 1x1 weights with the bias as the last column."""
        batch, channels, height, width = self.shape
        self.fill_features(padded)
        # The 1x1 convolution as one matrix product per image: [C, 48 + 1] @ [48 + 1, H*W].
        torch.matmul(weight_bias, self.features.view(batch, -1, height * width),
                     out=self.delta.view(batch, channels, height * width))
        # The stochastic update in one pass: next = state + delta * mask.
        torch.addcmul(padded[..., 1:-1, 1:-1], self.delta, mask, out=out_padded[..., 1:-1, 1:-1])
        return self.wrap(out_padded)

    # -- the backward step --------------------------------------------------------------

    def step_backward(self, padded, mask, weight_bias, grad_out, grad_weight_bias, grad_in):
        """Given dL/d(next state) ``grad_out`` [B, C, H, W], add this step's gradient of the
        weights and bias into ``grad_weight_bias`` [C, 48 + 1] and write dL/d(state) into ``grad_in``."""
        batch, channels, height, width = self.shape
        cells, inputs = height * width, self.inputs
        self.fill_features(padded)                                  # recompute s (cheap)
        grad_delta = torch.mul(grad_out, mask, out=self.grad_delta)  # g = m * gy
        g = grad_delta.view(batch, channels, cells)
        s = self.features.view(batch, -1, cells)
        grad_weight_bias.add_(torch.bmm(g, s.transpose(1, 2)).sum(dim=0))   # [dW, db] += g [s, 1]^T
        torch.matmul(weight_bias[:, :inputs].t(), g, out=self.grad_features.view(batch, inputs, cells))
        grad_features = self.grad_features                          # gs = W^T g
        if self.split_relu:
            # relu(f) passes gradient where f > 0, min(f, 0) where f < 0, neither at f = 0: these
            # slopes are sign(relu(f)) (1 or 0) and -sign(min(f, 0)) (1 or 0).
            torch.sign(self.features[:, :inputs], out=self.slopes)
            grad_features.mul_(self.slopes)
            grad_f = torch.sub(grad_features[:, :2 * channels], grad_features[:, 2 * channels:],
                               out=self.slopes[:, :2 * channels])  # [B, 2C, H, W]: state, perception
        else:
            grad_f = grad_features
        # gx = gy + gf_state + P^T gf_perception (P^T: the same convolution, filters rotated)
        grad_padded = self.grad_padded
        grad_padded[..., 1:-1, 1:-1] = grad_f[:, channels:]
        back = F.conv2d(self.wrap(grad_padded), self.filters_flipped, groups=channels)
        torch.add(grad_out, grad_f[:, :channels], out=grad_in)
        return grad_in.add_(back)


class KernelWorkspace:
    """The same interface as ``Workspace``, computed by the fused C++ kernel of
    ``helpers/csrc/nca_cpu.cpp`` (CPU, float32): one pass over the grid per step, the 48 features
    of a cell kept in registers, rows shared between threads. States are plain ``[B, C, H, W]``
    grids (the kernel wraps around by itself) and masks are bytes (``bool``)."""

    def __init__(self, model: nca.NCA, shape, dtype, device, generator, masks: str, library):
        batch, channels, height, width = shape
        if channels > 16:
            raise ValueError(f"the CPU kernel handles at most 16 channels, got {channels}")
        self.lib, self.shape, self.channels = library, shape, channels
        self.generator, self.mask_mode = generator, masks
        self.rate, self.per_channel, self.split = model.update_rate, model.update_per == "channel", model.split_relu
        self.dtype, self.device = dtype, device
        self.filters = model.filters.to(device=device, dtype=dtype).reshape(channels, 9).contiguous()
        self.filters_flipped = torch.flip(model.filters, dims=(2, 3)).to(dtype).reshape(channels, 9).contiguous()
        self.mask_shape = (batch, channels if self.per_channel else 1, height, width)
        # Exact masks straight from the generator's Mersenne Twister (about 10x faster than
        # torch.rand, the same values), when the kernel's check against torch.rand passed.
        self.twister = masks == "exact" and cpu_kernel.exact_masks_available()
        self.uniform = (torch.empty(self.mask_shape, dtype=torch.get_default_dtype())
                        if masks == "exact" and not self.twister else None)
        self.mask = torch.empty(self.mask_shape, dtype=torch.bool)
        self.grad_perception = torch.empty(shape, dtype=dtype)       # scratch space of the backward pass
        self.threads = torch.get_num_threads()
        self.weight = self.bias = None

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
            cpu_kernel.draw_rand_mask(mask, self.rate, self.generator)    # = torch.rand(...) < rate
        elif self.mask_mode == "exact":
            torch.rand(self.mask_shape, generator=self.generator, out=self.uniform)   # as update_mask does
            torch.lt(self.uniform, self.rate, out=mask)
        else:
            # One 64-bit seed per step from the generator; the kernel hashes (seed, index) to bits.
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            self.lib.nca_random_mask(cpu_kernel.pointer(mask), mask.numel(), seed, int(self.rate * 2**32), self.threads)
        return mask

    def _split(self, weight_bias):
        if self.weight is None:          # the weights are fixed during one rollout: split them once
            self.weight = weight_bias[:, :-1].contiguous()
            self.bias = weight_bias[:, -1].contiguous()
        return self.weight, self.bias

    def _grid(self):
        batch, channels, height, width = self.shape
        return batch, channels, height, width, int(self.split), int(self.per_channel), self.threads

    def step(self, state, mask, weight_bias, out):
        weight, bias = self._split(weight_bias)
        p = cpu_kernel.pointer
        self.lib.nca_step(p(state), p(mask), p(out), p(weight), p(bias), p(self.filters), *self._grid())
        return out

    def step_backward(self, state, mask, weight_bias, grad_out, grad_weight_bias, grad_in):
        weight, bias = self._split(weight_bias)
        p = cpu_kernel.pointer
        self.lib.nca_step_backward(p(state), p(mask), p(grad_out), p(grad_in), p(grad_weight_bias),
                                   p(self.grad_perception), p(weight), p(bias), p(self.filters),
                                   p(self.filters_flipped), *self._grid())
        return grad_in


def uses_cpu_kernel(device="cpu") -> bool:
    """Whether ``engine="auto"`` runs float32 rollouts on ``device`` with the fused C++ kernel."""
    return torch.device(device).type == "cpu" and cpu_kernel.available()


def make_workspace(model, state, generator, masks, engine):
    """The fused C++ kernel for float32 states on the CPU (when it compiled), else PyTorch operations."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    kernel_fits = state.device.type == "cpu" and state.dtype == torch.float32 and model.channels <= 16
    if engine in ("auto", "kernel") and kernel_fits:
        library = cpu_kernel.load()
        if library is not None:
            return KernelWorkspace(model, state.shape, state.dtype, state.device, generator, masks, library)
    if engine == "kernel":
        reason = cpu_kernel.load_error() if kernel_fits else "it runs float32 states on the CPU with at most 16 channels"
        raise RuntimeError(f"the CPU kernel is not available: {reason}. Use engine='auto' or 'torch'.")
    return Workspace(model, state.shape, state.dtype, state.device, generator, masks)


class _Rollout(torch.autograd.Function):
    """``steps`` CA steps as one autograd node, with the hand-written backward of ``Workspace``."""

    @staticmethod
    def forward(ctx, state, weight, bias, model, steps, checkpoint_every, generator, masks, engine, need_grad):
        work = make_workspace(model, state, generator, masks, engine)
        weight_bias = torch.cat([weight.detach().reshape(work.channels, -1), bias.detach()[:, None]], dim=1)
        every = checkpoint_every or 1
        blocks = -(-steps // every)                                   # ceil(steps / every)
        # Saved for the backward pass: every mask (1 byte per value) and the state at the start of
        # every block of ``every`` steps, all in two tensors allocated once.
        if need_grad:
            kept_masks = torch.empty(steps, *work.mask_shape, dtype=torch.bool, device=state.device)
            kept_states = torch.empty(blocks, *work.state_shape, dtype=state.dtype, device=state.device)
        current, spare = work.new_state(), work.new_state()
        work.set_state(current, state.detach())
        for step in range(steps):
            if need_grad and step % every == 0:
                kept_states[step // every].copy_(current)
            mask = work.draw_mask(kept_masks[step] if need_grad else None)
            work.step(current, mask, weight_bias, spare)
            current, spare = spare, current                           # ping-pong two buffers
        if need_grad:
            ctx.work, ctx.steps, ctx.every, ctx.weight_shape = work, steps, every, weight.shape
            ctx.kept_states, ctx.masks, ctx.weight_bias = kept_states, kept_masks, weight_bias
        return work.interior(current).contiguous()

    @staticmethod
    def backward(ctx, grad_output):
        work, steps, every, weight_bias = ctx.work, ctx.steps, ctx.every, ctx.weight_bias
        if ctx.kept_states is None:
            raise RuntimeError("this fast rollout was already backpropagated once (its saved states are freed)")
        grad_weight_bias = torch.zeros_like(weight_bias)
        grad = grad_output.contiguous().clone()
        spare = torch.empty_like(grad)
        # The states of one block, recomputed from its saved first state (one buffer, reused).
        if every > 1:
            block_states = torch.empty(every, *work.state_shape, dtype=grad.dtype, device=grad.device)
        # Walk the blocks backwards. Inside a block, first recompute its states from the saved one
        # (with the saved masks), then step backwards through them.
        for block in reversed(range(ctx.kept_states.shape[0])):
            start = block * every
            stop = min(start + every, steps)
            if every == 1:
                block_states = ctx.kept_states[block:block + 1]         # every state was kept
            else:
                block_states[0].copy_(ctx.kept_states[block])
            for step in range(start, stop - 1):
                work.step(block_states[step - start], ctx.masks[step], weight_bias, block_states[step - start + 1])
            for step in reversed(range(start, stop)):
                work.step_backward(block_states[step - start], ctx.masks[step], weight_bias, grad,
                                   grad_weight_bias, spare)
                grad, spare = spare, grad
        ctx.kept_states = ctx.masks = None                            # free the memory now
        grad_state = grad if ctx.needs_input_grad[0] else None
        return (grad_state, grad_weight_bias[:, :-1].reshape(ctx.weight_shape), grad_weight_bias[:, -1].clone(),
                None, None, None, None, None, None, None)


# ------------------------------------------------------------------------------ public API

def rollout(model: nca.NCA, state: torch.Tensor, steps: int, generator: torch.Generator | None = None,
            checkpoint_every: int | None = None, masks: str = "exact", engine: str = "auto") -> torch.Tensor:
    """Run ``steps`` steps of ``model`` from ``state`` [B, C, H, W]; the same as ``model.rollout``.

    Differentiable with respect to the model's parameters and the state (a hand-written backward).
    Under ``torch.no_grad()`` nothing is stored, which makes it the fast inference path.
    ``generator`` is used exactly as ``model.rollout`` uses it, so with ``masks="exact"`` both
    draw the same masks. ``checkpoint_every=k`` stores only every k-th state for the backward
    pass and recomputes the rest (less memory, one more forward step per step). ``engine``:
    ``"auto"`` (the fused C++ kernel for float32 on the CPU when it compiles, else PyTorch
    operations), ``"kernel"`` (the kernel or an error saying why not) or ``"torch"``.
    """
    check_model(model)
    check_options(model, checkpoint_every, masks, engine)
    nca.check_state(state, model.channels)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if steps == 0:
        return state
    weight, bias = model.update.weight, model.update.bias
    # Store what the backward pass needs only when a gradient can be asked for.
    need_grad = torch.is_grad_enabled() and (state.requires_grad or weight.requires_grad or bias.requires_grad)
    return _Rollout.apply(state, weight, bias, model, steps, checkpoint_every, generator, masks, engine,
                          need_grad)


def make_rollout(checkpoint_every: int | None = None, masks: str = "exact", engine: str = "auto"):
    """``rollout(model, states, steps)`` for ``helpers.train.train_pool(..., rollout=...)``."""
    check_options(None, checkpoint_every, masks, engine)

    def fast_rollout(model, states, steps):
        return rollout(model, states, steps, checkpoint_every=checkpoint_every, masks=masks, engine=engine)

    return fast_rollout


@torch.no_grad()
def infer(model: nca.NCA, state: torch.Tensor, steps: int, generator: torch.Generator | None = None,
          masks: str = "exact", engine: str = "auto") -> torch.Tensor:
    """Inference: ``steps`` steps without gradients (the same states as ``model.rollout``)."""
    return rollout(model, state, steps, generator=generator, masks=masks, engine=engine)
