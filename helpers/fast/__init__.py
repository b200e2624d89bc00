"""Fast rollouts of the NCA of chapter 03: the same mathematics as ``helpers.nca.NCA``, run faster.

Chapter 03 teaches the rule in its plainest form (``NCA.forward``): pad, perceive, concatenate,
split into signs, concatenate again, 1x1 convolution, random mask. That form is the lesson; this
package computes *exactly the same states and gradients* with less work for the machine. What it
runs is the model's frozen ``nca.Rule`` (``model.rule()``: channels, split_relu, filters,
update_rate, update_per, padding) with the model's weight, bias and filter tensors. A whole rollout is ONE
``torch.autograd.Function`` whose forward records nothing and whose backward is written by hand;
it needs only the state before each step and that step's mask (1 byte per value).

The package, one job per file:

* ``__init__``: the public functions below, their checks, and the choice of backend;
* ``autograd``: the autograd Function and its backward walk (with gradient checkpointing);
* ``torch_engine``: the PyTorch backend, a step as a dozen PyTorch operations on reused buffers;
* ``kernel_engine``: the C++ kernel backend, a step as one call into ``csrc/nca_cpu.cpp``;
* ``triton_engine``, ``triton_kernels``: the CUDA backend, a step as one fused Triton kernel;
* ``masks``: the update masks' shapes and the exact ``torch.rand`` masks both backends share;
* ``cpu_kernel``: compiling, caching and loading ``csrc/nca_cpu.cpp`` (ctypes), and its
  Mersenne-Twister check.

Three backends run the steps (``backend=``):

* ``"kernel"`` (what ``"auto"`` picks on a CPU, float32): the fused C++ kernel,
  ``helpers/fast/csrc/nca_cpu.cpp``, compiled on first use by ``helpers.fast.cpu_kernel`` (about
  a second; it needs ``g++``/``clang++``, which Colab and most Linux machines have; the library is
  loaded only after its recorded SHA-256 checks out, from a folder no other user can write). One pass over
  the grid per step: a cell's 48 features live in vector registers and never travel through
  memory, eight cells of a row are computed together, rows are shared between threads (OpenMP).
  The random masks come from the kernel too: it runs the generator's own Mersenne Twister, so it
  draws exactly ``torch.rand(shape, generator) < rate``, and leaves the generator where
  ``torch.rand`` would, about ten times faster (checked against ``torch.rand`` once per process,
  with a fall-back to ``torch.rand`` if a PyTorch release ever differed). Without a compiler
  ``backend="auto"`` quietly uses the PyTorch backend; ``DSOS_CPU_KERNEL=0`` forces that.
* ``"triton"`` (what ``"auto"`` picks on a CUDA GPU, float32, when triton imports): a step forward
  is ONE fused Triton kernel (``triton_kernels.step_kernel``: the state read once, the 48 features
  of a cell kept in registers, the next state written once), its backward two kernels and one sum;
  the masks are the plain model's ``torch.rand`` draws on the device. Without triton, or with
  ``DSOS_TRITON=0``, ``"auto"`` uses the PyTorch backend on a GPU. Under ``TRITON_INTERPRET=1`` the
  same kernels run on CPU tensors (slowly): that is how ``tests/test_fast_triton.py`` checks them
  without a GPU.
* ``"torch"`` (what ``"auto"`` picks for float64, on GPUs without triton, on CPUs without a
  compiler): the same step as a dozen PyTorch operations on buffers allocated once per rollout,
  with no fresh memory inside the loop, padding for free and no concatenations (see ``torch_engine``).

Options of every backend:

* **gradient checkpointing** (``checkpoint_every=k``): keep only every k-th state and recompute
  the others during the backward pass, trading one extra forward step per step for memory.
* **bit masks** (``masks="bits"``, needs ``update_rate`` 0.5): the plain version draws one random
  float per value (``torch.rand(...) < 0.5``); in the PyTorch backend on a CPU that costs about as
  much as the rest of the step. Bit masks draw random bits instead (the kernel hashes a per-step
  seed from the generator with the value's index): statistically the same, but a different random
  stream, so only ``masks="exact"`` (the default) reproduces the plain version's states draw for
  draw. With the C++ kernel, whose exact masks are already cheap, they gain little.

Measured and dropped (``python -m helpers.bench`` measures what is kept): a channels-last layout
for the PyTorch backend (its depthwise convolution is faster, but writing features and masks
across channels cost more than that saved); ``torch.compile`` of a step on the CPU (about a minute
to compile, under 2x faster than plain).

The hand-written backward of one step (state ``x``, mask ``m``, perception ``p = P x``,
features ``f = [x, p]``, split ``s = [relu(f), min(f, 0)]``, update ``y = x + m * (W s + b)``),
given the gradient ``gy`` of the loss with respect to ``y``:

    g       = m * gy                        gradient of the proposed change (W s + b)
    dW     += g s^T,  db += sum of g        the parameter gradients
    gs      = W^T g                         gradient of the 48 split features
    gf      = gs_relu * [f > 0] + gs_min * [f < 0]     (PyTorch's relu has slope 0 at f = 0,
                                                       and passes the gradient where f is NaN)
    gx      = gy + gf_state + P^T gf_perception

``P^T``, the adjoint of a depthwise convolution, is the same convolution with every 3x3 filter
rotated by 180 degrees, with the same padding (wrapped around, or zeros: the adjoint of "pad with
zeros, then convolve" pads the gradient with zeros too).

Non-finite values behave as in the plain model: NaN and inf propagate through both backends as
through PyTorch's operations (``relu(NaN)`` is NaN, ``0 * inf`` is NaN), so a diverging rollout is
as visible as in ``model.rollout``; ``tests/test_fast_properties.py`` checks that the same values
are NaN or infinite. A state must be float32 or float64 with weights of its own dtype (the plain
model refuses a mix too); a rule's options pass ``nca.Rule``'s checks again in ``run_rule``.
``tests/test_fast.py`` checks the states and gradients of both backends against ``helpers.nca.NCA``;
``python -m helpers.bench`` measures them side by side.

Usage::

    from helpers import fast
    final = fast.rollout(model, states, steps)                   # differentiable, like model.rollout
    final = fast.rollout(model, states, steps, checkpoint_every=8)
    final = fast.rollout(model, states, steps, backend="torch")  # force the PyTorch backend
    final = fast.rollout(model, states.cuda(), steps, backend="triton")   # the Triton kernels (or an error)
    train_pool(model, make_samples, loss_fn, config, rollout=fast.make_rollout())
    train_pool(..., rollout=fast.make_rollout(masks="bits"))     # faster, statistically the same
    final = fast.infer(model, states, steps)                     # inference: nothing is stored
    final = fast.run_rule(model.rule(), weight, bias, filters, states, steps)   # without a module
"""
from __future__ import annotations

import torch

from .. import nca
from ..checks import check_steps
from . import cpu_kernel, kernel_engine, triton_engine
from .autograd import Rollout
from .kernel_engine import KernelWorkspace
from .torch_engine import TorchWorkspace
from .triton_engine import TritonWorkspace

#: How a fast rollout draws its update masks: "exact" (the plain model's torch.rand draws) or "bits" (random
#: bits: the same distribution, other draws; called "fast" until it was named apart from the engine).
MASK_MODES = ("exact", "bits")
#: The dtypes a state (and the model's weight and bias) may have; the kernel runs float32 only.
STATE_DTYPES = (torch.float32, torch.float64)
#: "auto": the fused C++ kernel on the CPU when it compiles, the Triton kernels on a CUDA GPU
#: (float32) when triton imports, PyTorch operations otherwise.
BACKENDS = ("auto", "kernel", "torch", "triton")


# ------------------------------------------------------------------------------ checks

def check_options(rule: nca.Rule | None, checkpoint_every, masks, backend="auto") -> None:
    """Clear errors for bad options (``rule`` may be None when only the options are known)."""
    if checkpoint_every is not None and (not nca.is_int(checkpoint_every) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be None or a positive integer, got {checkpoint_every!r}")
    if masks == "fast":
        raise ValueError("masks='fast' is now called masks='bits' (random bits; 'fast' names the engine only)")
    if masks not in MASK_MODES:
        raise ValueError(f"masks must be one of {MASK_MODES}, got {masks!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if masks == "bits" and rule is not None and rule.update_rate != 0.5:
        raise ValueError(f"masks='bits' draws one random bit per value, so it needs update_rate 0.5 "
                         f"(this rule has {rule.update_rate}); use masks='exact'")


def check_inputs(rule: nca.Rule, weight: torch.Tensor, bias: torch.Tensor, filters: torch.Tensor,
                 state: torch.Tensor, steps: int) -> None:
    """Clear errors for a rule, parameters and a state that do not fit together."""
    if not isinstance(rule, nca.Rule):
        raise TypeError(f"the fast rollout runs a helpers.nca.Rule (model.rule()), got {type(rule).__name__}")
    # The Rule's own checks once more (a frozen dataclass can still be changed with object.__setattr__),
    # so the fast engine refuses exactly the options the plain model refuses.
    nca.Rule.__post_init__(rule)
    channels, inputs = rule.channels, rule.inputs
    nca.check_state(state, channels)
    for name, tensor in (("weight", weight), ("bias", bias), ("filters", filters)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"the {name} must be a torch tensor, got {type(tensor).__name__}")
    if weight.shape not in ((channels, inputs), (channels, inputs, 1, 1)):
        raise ValueError(f"this rule's weight is [{channels}, {inputs}, 1, 1], got {tuple(weight.shape)}")
    if bias.shape != (channels,):
        raise ValueError(f"this rule's bias is [{channels}], got {tuple(bias.shape)}")
    if filters.shape != (channels, 1, 3, 3):
        raise ValueError(f"this rule's filters are [{channels}, 1, 3, 3], got {tuple(filters.shape)}")
    if state.dtype not in STATE_DTYPES:
        # the plain model's float masks turn a float16/bfloat16 state into float32 after one step,
        # and its next step then fails: the fast engine refuses such a state at once
        raise TypeError(f"the fast rollout runs float32 or float64 states (as the plain model does), got {state.dtype}")
    if weight.dtype != state.dtype or bias.dtype != state.dtype:
        # the plain model raises too (its 1x1 convolution needs one dtype); nothing is cast silently
        raise TypeError(f"the weight and bias ({weight.dtype}, {bias.dtype}) must have the state's dtype "
                        f"({state.dtype}), as the plain model needs them: convert the model "
                        f"(model.to({state.dtype})) or the state (state.to({weight.dtype}))")
    if not filters.is_floating_point():
        raise TypeError(f"the filters must be floating point, got {filters.dtype}")
    if weight.device != state.device or bias.device != state.device:
        raise ValueError(f"the weight and bias ({weight.device}, {bias.device}) must be on the state's device "
                         f"({state.device}), as the plain model needs them")
    check_steps(steps)                              # as model.rollout: True is not a step count, np.int64(3) is


# ------------------------------------------------------------------------------ backends

def uses_cpu_kernel(device="cpu") -> bool:
    """Whether ``backend="auto"`` runs float32 rollouts on ``device`` with the fused C++ kernel."""
    return torch.device(device).type == "cpu" and cpu_kernel.available()


def uses_triton(device="cuda") -> bool:
    """Whether ``backend="auto"`` runs float32 rollouts of the course's rule on ``device`` with the
    Triton kernels (on a GPU this runs their check against the PyTorch backend, once per process)."""
    device, rule = torch.device(device), nca.Rule()
    # no such GPU here (none at all, or "cuda:3" on a one-GPU machine): nothing to run Triton on
    if device.type != "cuda" or not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count():
        return False
    return (triton_engine.fits(rule, torch.float32, device) is None
            and triton_engine.self_check(rule, device) is None)


def make_workspace(rule: nca.Rule, filters: torch.Tensor, state: torch.Tensor,
                   generator: torch.Generator | None, masks: str, backend: str):
    """The fused C++ kernel for float32 states on the CPU (when it compiled), the Triton kernels for
    float32 states on a CUDA GPU (when triton imports), else PyTorch operations."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    options = (rule, filters, state.shape, state.dtype, state.device, generator, masks)
    # "auto" tries Triton on CUDA only, once checked against the PyTorch backend on this device
    # (triton_engine.self_check); "triton" also on the CPU, where Triton's interpreter runs it
    if backend == "triton" or (backend == "auto" and state.device.type == "cuda"):
        reason = triton_engine.fits(rule, state.dtype, state.device, state.shape)
        if reason is None and backend == "auto":
            reason = triton_engine.self_check(rule, state.device)
        if reason is None:
            return TritonWorkspace(*options)
        if backend == "triton":
            raise RuntimeError(f"the Triton kernel is not available: {reason}. Use backend='auto' or 'torch'.")
    if backend in ("auto", "kernel"):
        reason = kernel_engine.fits(rule, state.dtype, state.device)
        if reason is None:
            return KernelWorkspace(*options)
        if backend == "kernel":
            raise RuntimeError(f"the CPU kernel is not available: {reason}. Use backend='auto' or 'torch'.")
    return TorchWorkspace(*options)


# ------------------------------------------------------------------------------ public API

def run_rule(rule: nca.Rule, weight: torch.Tensor, bias: torch.Tensor, filters: torch.Tensor,
             state: torch.Tensor, steps: int, generator: torch.Generator | None = None,
             checkpoint_every: int | None = None, masks: str = "exact", backend: str = "auto") -> torch.Tensor:
    """``rollout`` for a rule and its tensors (the 1x1 layer's ``weight`` [C, inputs, 1, 1] and
    ``bias`` [C], the perception ``filters`` [C, 1, 3, 3]) instead of a model; differentiable
    with respect to ``weight``, ``bias`` and ``state``."""
    check_options(rule, checkpoint_every, masks, backend)
    check_inputs(rule, weight, bias, filters, state, steps)
    steps = int(steps)                              # a NumPy integer as the plain int the kernels take
    if steps == 0:
        return state
    work = make_workspace(rule, filters.detach(), state, generator, masks, backend)
    # Store what the backward pass needs only when a gradient can be asked for.
    need_grad = torch.is_grad_enabled() and (state.requires_grad or weight.requires_grad or bias.requires_grad)
    return Rollout.apply(state, weight, bias, work, steps, checkpoint_every, need_grad)


def rollout(model: nca.NCA, state: torch.Tensor, steps: int, generator: torch.Generator | None = None,
            checkpoint_every: int | None = None, masks: str = "exact", backend: str = "auto") -> torch.Tensor:
    """Run ``steps`` steps of ``model`` from ``state`` [B, C, H, W]; the same as ``model.rollout``.

    Differentiable with respect to the model's parameters and the state (a hand-written backward).
    Under ``torch.no_grad()`` nothing is stored, which makes it the fast inference path.
    ``generator`` is used exactly as ``model.rollout`` uses it, so with ``masks="exact"`` both
    draw the same masks. ``checkpoint_every=k`` stores only every k-th state for the backward
    pass and recomputes the rest (less memory, one more forward step per step). ``backend``:
    ``"auto"`` (the fused C++ kernel for float32 on the CPU when it compiles, the Triton kernels
    for float32 on a CUDA GPU when triton imports, else PyTorch operations), ``"kernel"`` or
    ``"triton"`` (that backend or an error saying why not) or ``"torch"``.
    """
    if not isinstance(model, nca.NCA):
        raise TypeError(f"the fast rollout runs helpers.nca.NCA models, got {type(model).__name__}; "
                        "use model.rollout for other models")
    return run_rule(model.rule(), model.update.weight, model.update.bias, model.filters, state, steps,
                    generator=generator, checkpoint_every=checkpoint_every, masks=masks, backend=backend)


def make_rollout(checkpoint_every: int | None = None, masks: str = "exact", backend: str = "auto"):
    """``rollout(model, states, steps)`` for ``helpers.train.train_pool(..., rollout=...)``."""
    check_options(None, checkpoint_every, masks, backend)

    def fast_rollout(model, states, steps):
        return rollout(model, states, steps, checkpoint_every=checkpoint_every, masks=masks, backend=backend)

    return fast_rollout


@torch.no_grad()
def infer(model: nca.NCA, state: torch.Tensor, steps: int, generator: torch.Generator | None = None,
          masks: str = "exact", backend: str = "auto") -> torch.Tensor:
    """Inference: ``steps`` steps without gradients (the same states as ``model.rollout``)."""
    return rollout(model, state, steps, generator=generator, masks=masks, backend=backend)
