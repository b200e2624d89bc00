"""The Triton backend of ``helpers.fast`` (``backend="triton"``, what ``"auto"`` picks for float32
states on a CUDA GPU): one NCA step forward in ONE fused kernel, its backward in two.

Why: on a GPU this rule is tiny (588 parameters), so a plain step is a dozen small kernel launches
(pad, convolution, two relus, concatenations, the 1x1 convolution, the mask, the update), each
reading and writing the whole state; launch overhead and memory traffic dominate, not arithmetic.
Here a step is one launch that reads the state once and writes the next state once
(``triton_kernels.step_kernel``); the backward is one launch for the 1x1 layer, the sign split and
the parameter gradients (``backward_kernel``) and one for the perception's adjoint ``P^T``
(``adjoint_kernel``: every 3x3 cell of the neighbourhood must have its gradient first), plus one
sum of the per-block parameter gradients (deterministic: no atomics).

The masks are the plain model's: ``masks="exact"`` draws ``torch.rand(shape, generator) < rate`` on
the device with ``masks.TorchRandMasks`` (the same draws as ``helpers.nca.update_mask``);
``masks="bits"`` draws random bytes and unpacks eight bits from each, as the PyTorch backend does,
so the two backends draw the same bit masks too.

States are plain ``[B, C, H, W]`` float32 grids; the kernels wrap around or read zeros beyond the
border by themselves (``rule.padding``). Without a GPU the same kernels run on CPU tensors under
Triton's interpreter (``TRITON_INTERPRET=1``), which is how ``tests/test_fast_triton.py`` checks
states and gradients against ``helpers.nca.NCA`` on machines without one.
``DSOS_TRITON=0`` turns the backend off (``"auto"`` then runs the PyTorch backend on a GPU).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

import torch

from .. import nca
from .masks import TorchRandMasks, mask_shape

#: The kernels unroll their loops over channels: more channels make a larger kernel (slower to
#: compile), not a wrong one; beyond this the PyTorch backend runs instead.
MAX_CHANNELS = 32
#: Cells per program, and warps per program, on a GPU. Chosen from the compiled kernels' register
#: counts (``cuobjdump --dump-resource-usage`` of sm_75, sm_80 and sm_90 code, which Triton builds
#: without a GPU, see ``compile_for_gpu``): the forward step and the adjoint at 128 cells and 8
#: warps use 48 to 132 registers a thread; the backward's first pass keeps a dozen [16, cells]
#: tiles alive and spilled at 128 cells with 4 warps (255 registers and a 1.6 KB stack), so it
#: takes 64 cells with 8 warps (127 to 171, no spills). Not yet tuned by timing on a GPU (none was
#: available).
BLOCK = 128
BACKWARD_BLOCK = 64
NUM_WARPS = 8
#: Indices inside the kernels are 32-bit.
MAX_VALUES = 2**31 - 1

KERNELS_FILE = Path(__file__).with_name("triton_kernels.py")
_kernels: dict[bool, object] = {}


def triton_error() -> str | None:
    """Why triton cannot be used here (not installed, or turned off), or None when it can."""
    if os.environ.get("DSOS_TRITON", "").strip().lower() in ("0", "false", "no", "off"):
        return "DSOS_TRITON=0 turns it off"
    try:
        import triton  # noqa: F401  (only whether it imports)
    except Exception as error:         # ImportError, or a broken installation raising something else
        return f"triton does not import ({type(error).__name__}: {error})"
    return None


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``: on CPU tensors, slowly)."""
    try:
        from triton import knobs  # triton 3.4 and later: what triton.jit itself reads
        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):    # older releases (Colab's may be one) read the variable directly
        return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def kernels():
    """The module of ``triton.jit`` kernels, for the mode Triton is in now (compiled or interpreted).

    ``triton.jit`` decides at decoration time whether a function is compiled or interpreted, so the
    module is loaded on first use, once per mode (a test that turns the interpreter on after some
    other import still gets interpreted kernels)."""
    mode = interpreting()
    if mode not in _kernels:
        name = f"{__package__}.triton_kernels_{'interpreted' if mode else 'compiled'}"
        spec = importlib.util.spec_from_file_location(name, KERNELS_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module            # triton reads the kernels' source through their module
        spec.loader.exec_module(module)
        _kernels[mode] = module
    return _kernels[mode]


def fits(rule: nca.Rule, dtype, device, shape=None) -> str | None:
    """Why the Triton kernels cannot run this rule on these states, or None when they can."""
    error = triton_error()
    if error is not None:
        return error
    device = torch.device(device)
    if dtype != torch.float32:
        return f"it runs float32 states, got {dtype}"
    if device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        return f"it runs on CUDA GPUs (or on the CPU under TRITON_INTERPRET=1), not on {device.type}"
    if rule.channels > MAX_CHANNELS:
        return f"it runs at most {MAX_CHANNELS} channels, this rule has {rule.channels}"
    if shape is not None and torch.Size(shape).numel() > MAX_VALUES:
        return f"its indices are 32-bit: at most {MAX_VALUES} values, this state has {torch.Size(shape).numel()}"
    return None


_checked_rules: dict[tuple, str | None] = {}


def self_check(rule: nca.Rule, device) -> str | None:
    """None when the Triton kernels ran this rule on ``device`` and matched the PyTorch backend
    (a short rollout on a tiny grid, forward and backward), else why not. ``backend="auto"`` asks
    once per rule and device in a process, so that a kernel that does not compile or computes
    something else on this GPU (another triton release, another architecture) makes it fall back
    to the PyTorch backend with a warning instead of failing or training on wrong numbers.
    It draws from its own generator: the global random stream stays where it was."""
    key = (rule, str(torch.device(device)))
    if key not in _checked_rules:
        _checked_rules[key] = _compare_with_torch_backend(rule, torch.device(device))
        if _checked_rules[key] is not None:
            warnings.warn(f"helpers.fast: the Triton kernels are not used on {device} for this rule "
                          f"({_checked_rules[key]}); the PyTorch backend runs instead", RuntimeWarning, stacklevel=3)
    return _checked_rules[key]


def _compare_with_torch_backend(rule: nca.Rule, device: torch.device) -> str | None:
    from .autograd import Rollout
    from .torch_engine import TorchWorkspace

    cpu = torch.Generator().manual_seed(0)
    shape = (2, rule.channels, 7, 9)
    state = (0.5 * torch.randn(shape, generator=cpu)).to(device)
    weight = (0.05 * torch.randn(rule.channels, rule.inputs, 1, 1, generator=cpu)).to(device)
    bias = (0.05 * torch.randn(rule.channels, generator=cpu)).to(device)
    upstream = torch.randn(shape, generator=cpu).to(device)
    filters = nca.perception_filters(rule.filters, rule.channels).to(device)
    results = []
    try:
        with torch.enable_grad():
            for workspace in (TorchWorkspace, TritonWorkspace):
                start, w, b = (tensor.clone().requires_grad_(True) for tensor in (state, weight, bias))
                masks = torch.Generator(device).manual_seed(1)
                work = workspace(rule, filters, shape, torch.float32, device, masks, "exact")
                final = Rollout.apply(start, w, b, work, 3, None, True)
                results.append([final.detach(), *torch.autograd.grad(final, [start, w, b], upstream)])
    except Exception as error:               # a kernel that does not compile or launch here
        return f"they failed here: {type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    (expected_state, *expected_grads), (state_here, *grads_here) = results
    state_error = float((state_here - expected_state).abs().max())
    if not state_error <= 1e-5:                 # (written so that NaN fails too)
        return f"their states differ from the PyTorch backend's by {state_error:.1e}"
    for want, got in zip(expected_grads, grads_here):
        error = float((got - want).norm() / want.norm())
        if not error <= 1e-4:
            return f"their gradients differ from the PyTorch backend's by {error:.1e} (relative)"
    return None


def next_power_of_two(value: int) -> int:
    return 1 << max(0, int(value) - 1).bit_length()


def kernel_constants(rule: nca.Rule, shape) -> dict[str, dict]:
    """Each kernel's compile-time constants (and ``num_warps``) for this rule and state shape."""
    channels, cells = rule.channels, shape[2] * shape[3]

    def block(most):                     # at least 16 cells: tl.dot's smallest tile
        return max(16, min(most, next_power_of_two(cells)))

    # channels padded to a power of two of at least 16 (tl.dot's smallest tile) with zeros
    common = {"C": channels, "CP": max(16, next_power_of_two(channels)), "ZERO_PAD": rule.padding == "zeros",
              "num_warps": NUM_WARPS}
    options = {"SPLIT": rule.split_relu, "PER_CHANNEL": rule.update_per == "channel"}
    return {"step_kernel": {**common, **options, "BLOCK": block(BLOCK)},
            "backward_kernel": {**common, **options, "BLOCK": block(BACKWARD_BLOCK)},
            "adjoint_kernel": {**common, "BLOCK": block(BLOCK)}}


def compile_for_gpu(rule: nca.Rule, shape=(4, 12, 128, 128), capability: int = 90) -> dict:
    """Build the three kernels for an NVIDIA GPU of this compute capability (90: H100/H200, 75: T4)
    without running them, and without a GPU: Triton compiles for a target on any machine. Returns
    name -> Triton's compiled kernel (``.asm["ptx"]``, ``.asm["cubin"]``); the tests use it to check
    on a CPU that the kernels compile, and what their machine code holds."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"        # the compiled (not interpreted) kernels' module
    try:
        module = kernels()
    finally:
        if previous is None:
            os.environ.pop("TRITON_INTERPRET")
        else:
            os.environ["TRITON_INTERPRET"] = previous
    compiled = {}
    for name, constants in kernel_constants(rule, shape).items():
        function = getattr(module, name)
        constants = dict(constants)
        warps = constants.pop("num_warps")
        # the argument types the workspace passes: float32 buffers, byte masks, int32 sizes
        signature = {argument: "constexpr" if argument in constants else
                     "*u8" if argument == "mask_ptr" else "*fp32" if argument.endswith("_ptr") else "i32"
                     for argument in inspect.signature(function.fn).parameters}
        source = ASTSource(fn=function, signature=signature, constexprs=constants)
        compiled[name] = triton.compile(source, target=GPUTarget("cuda", capability, 32), options={"num_warps": warps})
    return compiled


class TritonWorkspace:
    """The interface of ``torch_engine.TorchWorkspace``, computed by the Triton kernels."""

    def __init__(self, rule: nca.Rule, filters: torch.Tensor, shape, dtype, device,
                 generator: torch.Generator | None, masks: str):
        reason = fits(rule, dtype, device, shape)
        if reason is not None:
            raise RuntimeError(f"the Triton kernel is not available: {reason}")
        self.kernels = kernels()
        batch, channels, height, width = shape
        self.rule, self.shape, self.generator, self.masks = rule, tuple(shape), generator, masks
        self.dtype, self.device = dtype, torch.device(device)
        constants = kernel_constants(rule, shape)
        self.step_constants, self.backward_constants = constants["step_kernel"], constants["backward_kernel"]
        self.adjoint_constants = constants["adjoint_kernel"]
        # the parameters padded with zeros to the kernels' channel count, so that the kernels load
        # them without masks (see triton_kernels)
        self.padded_channels = self.step_constants["CP"]
        self.groups = rule.inputs // channels                      # 4 groups of C features (split) or 2
        self.filters = self._pad_rows(filters.reshape(channels, 9))
        # P^T: the same depthwise convolution with every filter rotated by 180 degrees
        self.filters_flipped = self._pad_rows(torch.flip(filters, dims=(2, 3)).reshape(channels, 9))
        self.mask_shape = mask_shape(rule, shape)
        self.mask = torch.empty(self.mask_shape, dtype=torch.bool, device=device)
        if masks == "exact":
            self.exact_masks = TorchRandMasks(rule, shape, generator, device)
        else:
            self.random_bytes = torch.empty(self.mask.numel() // 8 + 1, dtype=torch.uint8, device=device)
            self.bit_shifts = torch.arange(8, dtype=torch.uint8, device=device)
        cells = height * width
        blocks = -(-cells // self.step_constants["BLOCK"])
        backward_blocks = -(-cells // self.backward_constants["BLOCK"])
        self.grid, self.backward_grid = (batch, blocks), (batch, backward_blocks)
        # backward scratch: the perception's gradient, and one [C, inputs + 1] slot of [dW, db] per program
        self.grad_perception = torch.empty(shape, dtype=dtype, device=device)
        self.partial = torch.empty(batch * backward_blocks, channels, rule.inputs + 1, dtype=dtype, device=device)
        self.step_total = torch.empty(channels, rule.inputs + 1, dtype=dtype, device=device)
        self.weight = self.bias = None

    def _pad_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` [C, ...] on the device as float32, with zero rows up to the padded channel count."""
        padded = torch.zeros(self.padded_channels, *tensor.shape[1:], dtype=self.dtype, device=self.device)
        padded[:tensor.shape[0]] = tensor.to(device=self.device, dtype=self.dtype)
        return padded.contiguous()

    def load_parameters(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """The 1x1 layer as the kernels read it: weights ``[C, inputs]`` and bias ``[C]``, contiguous float32."""
        if weight.dtype != self.dtype or bias.dtype != self.dtype:
            raise TypeError(f"the Triton kernel runs {self.dtype} weights and biases with {self.dtype} states, got "
                            f"{weight.dtype} and {bias.dtype}; convert the model or use backend='torch'")
        channels, padded = self.rule.channels, self.padded_channels
        # [C, groups * C] -> [groups, CP, CP]: group q, output o, input i holds W[o, q*C + i]
        groups = weight.reshape(channels, self.groups, channels).permute(1, 0, 2)
        self.weight = torch.zeros(self.groups, padded, padded, dtype=self.dtype, device=self.device)
        self.weight[:, :channels, :channels] = groups
        self.bias = self._pad_rows(bias.reshape(channels))

    # -- the buffers a rollout keeps its states in (plain grids) -----------------------

    @property
    def state_shape(self):
        return self.shape

    def new_state(self) -> torch.Tensor:
        return torch.empty(self.shape, dtype=self.dtype, device=self.device)

    @staticmethod
    def set_state(buffer: torch.Tensor, state: torch.Tensor) -> None:
        buffer.copy_(state)

    @staticmethod
    def interior(buffer: torch.Tensor) -> torch.Tensor:
        return buffer

    # -- masks ---------------------------------------------------------------------

    def draw_mask(self, keep: torch.Tensor | None) -> torch.Tensor:
        """This step's mask as bytes (bool), written straight into ``keep`` when the backward pass needs it."""
        mask = self.mask if keep is None else keep
        if self.masks == "exact":
            self.exact_masks.draw(out=mask)              # = helpers.nca.update_mask, draw for draw
        else:
            # One random byte gives eight fair bits, (byte >> i) & 1: the PyTorch backend's bit masks.
            self.random_bytes.random_(0, 256, generator=self.generator)
            bits = (self.random_bytes[:, None] >> self.bit_shifts) & 1
            mask.copy_(bits.view(-1)[:mask.numel()].view(self.mask_shape))
        return mask

    # -- the kernels ---------------------------------------------------------------

    def _checked(self, tensor: torch.Tensor, dtype, shape) -> torch.Tensor:
        """A buffer the kernels may read as raw memory: right dtype, shape, device, contiguous."""
        if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape) or not tensor.is_contiguous() \
                or tensor.device != self.device:
            raise ValueError(f"the Triton kernel needs a contiguous {dtype} buffer {tuple(shape)} on {self.device}, "
                             f"got {tensor.dtype} {tuple(tensor.shape)} on {tensor.device}"
                             f"{'' if tensor.is_contiguous() else ' (not contiguous)'}")
        return tensor

    def _state(self, tensor):
        return self._checked(tensor, self.dtype, self.shape)

    def _mask(self, tensor):
        # bytes read as uint8 (a bool pointer is 1 bit wide to Triton)
        return self._checked(tensor, torch.bool, self.mask_shape).view(torch.uint8)

    def _parameters(self):
        if self.weight is None:
            raise RuntimeError("load_parameters(weight, bias) must come before the first step")
        return self.weight, self.bias

    def step(self, state: torch.Tensor, mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        weight, bias = self._parameters()
        height, width = self.shape[2:]
        self.kernels.step_kernel[self.grid](self._state(state), self._mask(mask), self._state(out), weight, bias,
                                            self.filters, height, width, **self.step_constants)
        return out

    def step_backward(self, state: torch.Tensor, mask: torch.Tensor, grad_out: torch.Tensor,
                      grad_weight_bias: torch.Tensor, grad_in: torch.Tensor) -> torch.Tensor:
        weight, _ = self._parameters()
        height, width = self.shape[2:]
        self.kernels.backward_kernel[self.backward_grid](self._state(state), self._mask(mask), self._state(grad_out),
                                                         self._state(grad_in), self.grad_perception, self.partial,
                                                         weight, self.filters, height, width, **self.backward_constants)
        self.kernels.adjoint_kernel[self.grid](self.grad_perception, grad_in, self.filters_flipped, height, width,
                                               **self.adjoint_constants)
        # the blocks' shares summed in a fixed order (no atomics: the same result every run)
        grad_weight_bias.add_(torch.sum(self.partial, dim=0, out=self.step_total))
        return grad_in
