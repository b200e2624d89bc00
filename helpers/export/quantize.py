"""The texture rule as integers: which models can be exported, their quantized parameters, and the
8-bit state (every state value stored as one of 255 levels in [-1, 1]) with its PyTorch rollout."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_steps
from ..nca import CHANNELS, LAPLACIAN, NCA, SOBEL_X, SOBEL_Y

INPUTS = 4 * CHANNELS  # relu(state), relu(perception), -relu(-state), -relu(-perception)

#: How a state value is stored: 32 (float32) or 8 (a code in [-127, 127] standing for code / 127).
STATE_BITS = (32, 8)
#: The largest 8-bit state code: 255 levels, -127 / 127 = -1 ... 0 ... 127 / 127 = 1 (zero is exact).
STATE_CODE = 127


def check_exportable(model) -> None:
    """Raise a ``ValueError`` unless ``model`` is the 12-channel texture NCA the exporters know."""
    if not isinstance(model, NCA):
        raise ValueError(f"the exporters need a helpers.nca.NCA, got {type(model).__name__}")
    config = model.config()
    expected = {"channels": CHANNELS, "split_relu": True, "filters": "laplacian_sobel"}
    wrong = {key: config[key] for key, value in expected.items() if config[key] != value}
    if wrong:
        raise ValueError(f"only the 12-channel architecture can be exported (channels=12, split_relu=True, "
                         f"filters='laplacian_sobel'); this model has {wrong}. Train an NCA() with the "
                         "default settings, as in chapter 03")
    padding = config.get("padding", "circular")  # models saved before the option existed wrap around
    if padding != "circular":
        raise ValueError(f"the exporters implement only wrap-around edges (padding='circular'); this model has "
                         f"padding={padding!r}. The GLSL, C and WebGL rules read the grid as a torus, so a model "
                         "trained with zero padding would behave differently at its borders")
    expected_filters = torch.stack([LAPLACIAN] * 4 + [SOBEL_X] * 4 + [SOBEL_Y] * 4)[:, None]
    if not torch.equal(model.filters.detach().cpu().float(), expected_filters):
        raise ValueError("the exporters assume a Laplacian on channels 0..3, Sobel-x on 4..7 and Sobel-y on "
                         "8..11 (one filter per frame-buffer tile); this model's filters differ")
    if tuple(model.update.weight.shape) != (CHANNELS, INPUTS, 1, 1) or model.update.bias is None:
        raise ValueError(f"the update layer must be a 1x1 convolution {INPUTS} -> {CHANNELS} with a bias, "
                         f"got weight {tuple(model.update.weight.shape)}")


@dataclass(frozen=True)
class QuantizedRule:
    """The rule as integer codes and scales: ``weight = weight_codes * weight_scale`` (same for bias).

    ``weight_codes`` is ``[12, 48]`` (output channel, input), ``bias_codes`` is ``[12]``; the scales
    are float32 values, so every exporter rebuilds bit-identical float32 parameters.
    """
    weight_codes: np.ndarray
    bias_codes: np.ndarray
    weight_scale: float
    bias_scale: float
    bits: int
    update_rate: float = 0.5
    update_per: str = "channel"  # the random mask: one draw per value ("channel") or per cell ("cell")
    zeroed_weights: int = 0      # nonzero weights that rounded to code 0 (lost entirely)
    relative_error: float = 0.0  # |w - w_hat| / |w| over all weights (root of the sums of squares)

    def report(self) -> str:
        """How much the rounding cost, in one line (the exporters' users should read it)."""
        return (f"{self.bits}-bit codes: relative error {self.relative_error:.2%} of the weights' norm; "
                f"{self.zeroed_weights} of {self.weight_codes.size} weights rounded to zero")

    @property
    def parameter_count(self) -> int:
        return self.weight_codes.size + self.bias_codes.size

    def weight(self) -> torch.Tensor:
        """The dequantized weights, float32 ``[12, 48]``."""
        return torch.from_numpy(self.weight_codes.astype(np.float32) * np.float32(self.weight_scale))

    def bias(self) -> torch.Tensor:
        return torch.from_numpy(self.bias_codes.astype(np.float32) * np.float32(self.bias_scale))

    def model(self) -> NCA:
        """A fresh ``NCA`` that computes with the quantized parameters (the reference for parity)."""
        model = NCA(update_rate=self.update_rate, update_per=self.update_per)
        with torch.no_grad():
            model.update.weight.copy_(self.weight()[:, :, None, None])
            model.update.bias.copy_(self.bias())
        return model


def _scale_for(values: np.ndarray, largest_code: int) -> np.float32:
    largest = float(np.abs(values).max())
    return np.float32(largest / largest_code) if largest > 0 else np.float32(1.0)


def quantize(model: NCA, bits: int = 8) -> QuantizedRule:
    """Round the 588 parameters to signed ``bits``-bit integers, one scale for the weights, one for the biases.

    The scale maps the largest magnitude to the largest code (127 for 8 bits), so the rounding
    error of every parameter is at most half a scale step.
    """
    check_exportable(model)
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 2 to 16, got {bits!r}")
    largest_code = 2 ** (bits - 1) - 1
    weight = model.update.weight.detach().cpu().double().numpy().reshape(CHANNELS, INPUTS)
    bias = model.update.bias.detach().cpu().double().numpy()
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ValueError("the model has NaN or infinite parameters; it cannot be exported")
    weight_scale, bias_scale = _scale_for(weight, largest_code), _scale_for(bias, largest_code)
    weight_codes = np.clip(np.round(weight / weight_scale), -largest_code, largest_code).astype(np.int32)
    bias_codes = np.clip(np.round(bias / bias_scale), -largest_code, largest_code).astype(np.int32)
    zeroed = int(((weight_codes == 0) & (weight != 0)).sum())
    norm = float(np.linalg.norm(weight))
    error = float(np.linalg.norm(weight - weight_codes * float(weight_scale)))
    rule = QuantizedRule(weight_codes, bias_codes, float(weight_scale), float(bias_scale), bits,
                         float(model.update_rate), model.update_per, zeroed, error / norm if norm else 0.0)
    nonzero = int((weight != 0).sum())
    if nonzero and zeroed > nonzero // 4:
        # One scale for all weights: a single outlier makes the step so coarse that most weights vanish.
        largest = float(np.abs(weight).max())
        median = float(np.median(np.abs(weight[weight != 0])))
        warnings.warn(f"quantization lost much of the rule: {zeroed} of {nonzero} nonzero weights "
                      f"({100 * zeroed / nonzero:.0f} %) rounded to zero "
                      f"because the largest weight ({largest:.3g}) is {largest / median:.3g} times the median "
                      f"magnitude; {rule.report()}. Check the model for an outlier weight, or use more bits",
                      RuntimeWarning, stacklevel=2)
    return rule


def check_state_bits(state_bits) -> None:
    """Raise a ``ValueError`` unless ``state_bits`` is 32 (float state) or 8 (8-bit state)."""
    if state_bits not in STATE_BITS or isinstance(state_bits, bool):
        raise ValueError(f"state_bits must be 32 (float32 state) or 8 (8-bit state), got {state_bits!r}")


def state_codes(state: torch.Tensor) -> torch.Tensor:
    """The 8-bit codes of a state: ``round(127 * clamp(state, -1, 1))``, integers in [-127, 127] (int8).

    Values beyond [-1, 1] saturate: the overflow loss of chapter 03 trained the rule to stay inside.
    ``torch.round`` rounds halves to even, as C's ``lrintf`` and GLSL's ``roundEven`` do."""
    return torch.round(state.detach().float().clamp(-1, 1) * STATE_CODE).to(torch.int8)


def quantize_state(state: torch.Tensor) -> torch.Tensor:
    """The state as the 8-bit exports store it: the nearest of the 255 levels ``code / 127`` (same dtype).

    Computed as the C program and the shader compute it (clamp, times 127, round, divided by 127)."""
    return torch.round(state.clamp(-1, 1) * STATE_CODE) / STATE_CODE


@torch.no_grad()
def rollout(model: NCA, state: torch.Tensor, steps: int, state_bits: int = 32, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """``steps`` steps of ``model`` from ``state``, the reference every export is compared with.

    ``state_bits=8`` stores the state as the 8-bit exports do: the start and every step's result are
    rounded to the 255 levels (``quantize_state``). ``deterministic``: every value updates every
    step (the parity mode); otherwise the random masks come from ``generator``."""
    check_state_bits(state_bits)
    steps = check_steps(steps)
    keep = quantize_state if state_bits == 8 else (lambda values: values)
    state = keep(state)
    everything = torch.ones(1, dtype=state.dtype, device=state.device)
    for _ in range(steps):
        state = keep(model(state, mask=everything) if deterministic else model(state, generator=generator))
    return state


def require_rule(rule, needed_by: str) -> None:
    """Raise a ``ValueError`` unless ``rule`` is a ``QuantizedRule`` (a generator handed a model, say)."""
    if not isinstance(rule, QuantizedRule):
        raise ValueError(f"{needed_by} needs a QuantizedRule (from quantize(model)), got {type(rule).__name__}")


def float32_literal(value: float) -> str:
    """A decimal that reads back as exactly this float32 (9 significant digits always suffice)."""
    return f"{np.float32(value):.9e}"
