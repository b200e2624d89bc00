"""The learner's exercises: one check per exercise, against a reference in helpers.

A chapter's exercise is three cells:

* the **exercise cell**: a stub the learner completes, ``raise NotImplementedError("<one-line task>")``;
* the **check cell**: ``exercises.check("01.div_backward", div_backward)`` calls the learner's function
  on random and edge-case inputs, compares it with the reference and prints a verdict: *done*, *not
  attempted yet* (the stub still raises ``NotImplementedError``) or *wrong*, with the input, what was
  expected, what came back and a hint. It never raises because of the learner's code, so "Run All"
  runs through a notebook whose exercises are not done;
* the **solution cell**, hidden by default (``#@title`` first line and ``cellView: form`` metadata for
  Colab, ``jupyter.source_hidden`` for JupyterLab, Notebook 7 and VS Code): it defines the answer
  and checks it with ``strict=True``, which raises ``AssertionError`` unless the answer is right, so
  the tests fail when a solution breaks.

Every exercise is registered once in ``EXERCISES`` with its reference, its inputs, its tolerance, a
hint and a few planted wrong answers (classic mistakes) that tests/test_exercises.py checks are caught.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import toys
from .export.quantize import quantize_state

SOLUTION_TITLE = "#@title Solution (double-click to show)"
#: The metadata that hides a solution cell's source: Colab's form view, and JupyterLab's / VS Code's flag.
SOLUTION_METADATA = {"cellView": "form", "jupyter": {"source_hidden": True}}
STATUSES = ("done", "not attempted", "wrong")


@dataclass(frozen=True)
class Case:
    """One input for an exercise: the positional arguments and a short description shown in verdicts."""
    args: tuple
    label: str = "random input"


@dataclass(frozen=True)
class Exercise:
    """An exercise: what to write, the reference answer, the inputs it is checked on, and how.

    ``cases(generator)`` returns the inputs (random ones drawn from ``generator``, and edge cases);
    ``run(function, *args)``, when given, turns a call into the values compared (e.g. values and
    gradients); ``mistakes`` maps a name to a planted wrong answer, a classic mistake the check must
    catch (tests/test_exercises.py checks that it does)."""
    id: str
    task: str
    reference: Callable
    cases: Callable[[torch.Generator], list[Case]]
    hint: str
    outputs: tuple[str, ...] = ()
    mistakes: dict[str, Callable] = field(default_factory=dict)
    rtol: float = 1e-7
    atol: float = 1e-9
    run: Callable | None = None

    def result_of(self, function: Callable, args: tuple):
        arguments = copy.deepcopy(args)            # a function that changes its inputs cannot spoil the next call
        return self.run(function, *arguments) if self.run else function(*arguments)


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``status`` is one of ``STATUSES``; ``message`` is what the learner reads."""
    exercise: str
    status: str
    message: str

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------------- comparing

class _Mismatch(Exception):
    """Raised inside the comparison with a sentence that says what differs."""


def _as_tensor(value, where: str) -> torch.Tensor:
    if value is None:
        raise _Mismatch(f"{where} is None: did the function forget to `return` it?")
    if isinstance(value, bool):
        raise _Mismatch(f"{where} is a bool ({value}), expected a number or a tensor")
    try:
        return torch.as_tensor(value).detach().cpu().to(torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise _Mismatch(f"{where} is a {type(value).__name__}, not a number or a tensor ({error})") from None


def _compare(expected, got, where: str, rtol: float, atol: float) -> None:
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            raise _Mismatch(f"{where or 'the result'} should be a tuple of {len(expected)} values, "
                            f"got a {type(got).__name__}")
        if len(got) != len(expected):
            raise _Mismatch(f"{where or 'the result'} should hold {len(expected)} values, got {len(got)}")
        for index, (one_expected, one_got) in enumerate(zip(expected, got)):
            _compare(one_expected, one_got, f"{where}[{index}]" if where else f"value {index}", rtol, atol)
        return
    expected_tensor = _as_tensor(expected, where or "the result")
    got_tensor = _as_tensor(got, where or "the result")
    if got_tensor.shape != expected_tensor.shape:
        raise _Mismatch(f"{where or 'the result'} has shape {tuple(got_tensor.shape)}, expected "
                        f"{tuple(expected_tensor.shape)}")
    close = torch.isclose(got_tensor, expected_tensor, rtol=rtol, atol=atol, equal_nan=True)
    if not bool(close.all()):
        first = tuple(int(i) for i in (~close).nonzero()[0])
        at = f" at index {list(first)}" if first else ""
        count = f" ({int((~close).sum())} of {close.numel()} entries differ)" if close.numel() > 1 else ""
        raise _Mismatch(f"{where or 'the result'}{at}: expected {_number(expected_tensor[first])}, "
                        f"got {_number(got_tensor[first])}{count}")


def _number(value) -> str:
    value = float(value)
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def _show(value, limit: int = 10) -> str:
    """A short, readable rendering of an input or output."""
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_show(item, limit) for item in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype != torch.bool:
        return _number(value)
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().reshape(-1)
        if value.dtype == torch.bool:
            shown = [str(bool(item)) for item in flat[:limit]]
        else:
            shown = [_number(item) for item in flat[:limit]]
        more = f", ... ({flat.numel()} values)" if flat.numel() > limit else ""
        return f"tensor{list(value.shape)}[{', '.join(shown)}{more}]"
    if isinstance(value, float):
        return _number(value)
    return repr(value)


def _call_text(exercise: Exercise, function_name: str, case: Case) -> str:
    # Only the learner's arguments: a case may carry more, used by the exercise's ``run`` (e.g. a loss's weights).
    names = list(inspect.signature(exercise.reference).parameters)
    shown = [f"{name}={_show(arg)}" for name, arg in zip(names, case.args)]
    return f"{function_name}({', '.join(shown)})"


def _name_outputs(exercise: Exercise, message: str) -> str:
    for index, name in enumerate(exercise.outputs):
        message = message.replace(f"value {index}", f"value {index} ({name})", 1)
    return message


# ---------------------------------------------------------------------------------- checking

def get(exercise_id: str) -> Exercise:
    """The registered exercise ``exercise_id``; a clear error for an unknown one."""
    if exercise_id not in EXERCISES:
        raise ValueError(f"no exercise {exercise_id!r}; the registered ones are {', '.join(sorted(EXERCISES))}")
    return EXERCISES[exercise_id]


def evaluate(exercise_id: str, function: Callable) -> Verdict:
    """Run ``function`` on every case of the exercise and compare it with the reference. Never raises
    because of ``function``: a stub is "not attempted", any other exception or difference is "wrong"."""
    exercise = get(exercise_id)
    name = getattr(function, "__name__", "your function")
    if not callable(function):
        return Verdict(exercise_id, "wrong", f"❌ {exercise_id}: expected a function, got a "
                                              f"{type(function).__name__}. Pass the function itself, without ().")
    cases = exercise.cases(torch.Generator().manual_seed(0))
    for number, case in enumerate(cases, start=1):
        expected = exercise.result_of(exercise.reference, case.args)
        got_text = "-"
        try:
            got = exercise.result_of(function, case.args)
        except NotImplementedError:
            return Verdict(exercise_id, "not attempted",
                           f"⬜ {exercise_id}: not attempted yet.\n   Task: {exercise.task}\n"
                           f"   Complete `{name}` in the cell above (replace the `raise NotImplementedError` "
                           f"line), run that cell, then run this one again.")
        except Exception as error:  # the learner's code failed: that is a verdict, not a crash of the notebook
            problem = f"it raised {type(error).__name__}: {error}"
        else:
            got_text = _show(got)
            try:
                _compare(expected, got, "", exercise.rtol, exercise.atol)
                continue
            except _Mismatch as mismatch:
                problem = _name_outputs(exercise, str(mismatch))
        return Verdict(exercise_id, "wrong",
                       f"❌ {exercise_id}: not right yet, on input {number} of {len(cases)} ({case.label}):\n"
                       f"   call:     {_call_text(exercise, name, case)}\n"
                       f"   expected: {_show(expected)}\n"
                       f"   got:      {got_text}\n"
                       f"   what differs: {problem}\n"
                       f"   hint: {exercise.hint}")
    return Verdict(exercise_id, "done", f"✅ {exercise_id}: done. `{name}` agrees with the reference on all "
                                        f"{len(cases)} inputs ({_case_summary(cases)}).")


def _case_summary(cases: list[Case]) -> str:
    random_count = sum(case.label == "random input" for case in cases)
    return f"{random_count} random, {len(cases) - random_count} edge cases"


def check(exercise_id: str, function: Callable, strict: bool = False) -> None:
    """Print the verdict on the learner's ``function`` (done / not attempted yet / wrong, with a hint).

    ``strict=True`` (the solution cells) raises an ``AssertionError`` unless it is done."""
    verdict = evaluate(exercise_id, function)
    print(verdict.message)
    if strict and verdict.status != "done":
        raise AssertionError(f"the solution of {exercise_id} does not pass its own check:\n{verdict.message}")


# ====================================================================== the exercises' inputs

def _floats(generator: torch.Generator, count: int, low: float = -3.0, high: float = 3.0) -> list[float]:
    return [low + (high - low) * float(value) for value in torch.rand(count, generator=generator, dtype=torch.float64)]


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


# ----------------------------------------------------------- 01 · differentiable programming

def dual_pow_reference(u: float, du: float, v: float, dv: float) -> tuple[float, float]:
    """u ** v for dual numbers (u > 0), with a variable exponent: u^v = exp(v log u), so its tangent is
    u^v (dv log u + v du / u)."""
    value = u ** v
    return value, value * (dv * math.log(u) + v * du / u)


def _dual_pow_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        u, = _floats(generator, 1, 0.2, 3.0)
        du, v, dv = _floats(generator, 3)
        cases.append(Case((u, du, v, dv)))
    return cases + [Case((2.0, 1.0, 3.0, 0.0), "a constant exponent: dv = 0"),
                    Case((2.0, 0.0, 0.5, 1.0), "a constant base: du = 0"),
                    Case((1.0, 0.7, 2.5, -1.3), "u = 1, where log u = 0"),
                    Case((1.7, 0.4, 0.0, 2.0), "v = 0")]


def div_backward_reference(x: float, y: float, upstream: float) -> tuple[float, float]:
    """The division gate z = x / y receives dL/dz = upstream and sends (dL/dx, dL/dy) to its inputs."""
    return upstream / y, -upstream * x / y ** 2


def _div_backward_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        x, upstream = _floats(generator, 2)
        y, = _floats(generator, 1, 0.3, 3.0)
        sign, = _floats(generator, 1, -1, 1)
        cases.append(Case((x, y if sign > 0 else -y, upstream)))
    return cases + [Case((0.0, 2.0, 1.5), "x = 0"), Case((3.0, -2.0, 1.0), "y negative, upstream 1"),
                    Case((1.2, 0.5, 0.0), "upstream 0: nothing flows back")]


def relu_weight_gradient_reference(x: torch.Tensor, z: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    """dL/dW of a dense ReLU layer Y = relu(Z), Z = X W^T + b: Delta^T X with Delta = dL/dY * [Z > 0].

    The same as helpers.autodiff.dense_backward's weight gradient for a "relu" layer."""
    delta = grad_y * (z > 0).to(grad_y.dtype)
    return delta.T @ x


def _relu_weight_gradient_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for batch, n_in, n_out in [(5, 4, 3), (8, 2, 6), (3, 7, 2), (16, 5, 4)]:
        x = _randn(generator, batch, n_in)
        z = _randn(generator, batch, n_out)
        cases.append(Case((x, z, _randn(generator, batch, n_out))))
    x, grad_y = _randn(generator, 4, 3), _randn(generator, 4, 2)
    z = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.0, 0.0], [2.0, -0.5]], dtype=torch.float64)
    cases.append(Case((x, z, grad_y), "some Z exactly 0, where the ReLU's slope is taken as 0"))
    one = _randn(generator, 1, 3)
    cases.append(Case((one, torch.ones(1, 2, dtype=torch.float64), _randn(generator, 1, 2)), "a batch of one"))
    return cases


# -------------------------------------------------------------------------- 02 · gradient toys

def _run_pin(pin: Callable, params: torch.Tensor, pinned: torch.Tensor, weights: torch.Tensor):
    """Call ``pin`` inside a small loss and return what it used and the gradient that reached ``params``."""
    params = params.clone().requires_grad_(True)
    used = pin(params, pinned)
    if not isinstance(used, torch.Tensor):
        return used, None
    if used.requires_grad:
        (gradient,) = torch.autograd.grad((used * weights).sum(), params, allow_unused=True)
    else:
        gradient = None
    return used.detach(), torch.zeros_like(params) if gradient is None else gradient


def _pin_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for size in (3, 5, 8):
        pinned = torch.rand(size, generator=generator) < 0.5
        pinned[0], pinned[-1] = True, False      # at least one of each
        cases.append(Case((_randn(generator, size), pinned, _randn(generator, size))))
    return cases + [Case((_randn(generator, 4), torch.ones(4, dtype=torch.bool), _randn(generator, 4)),
                         "every entry pinned"),
                    Case((_randn(generator, 4), torch.zeros(4, dtype=torch.bool), _randn(generator, 4)),
                         "nothing pinned")]


def damped_step_reference(jacobian: torch.Tensor, residual: torch.Tensor, damping: float) -> torch.Tensor:
    """The damped least-squares step -J^T (J J^T + damping I)^-1 r, as helpers.toys.damped_step takes it."""
    system = jacobian @ jacobian.T + damping * torch.eye(len(residual), dtype=jacobian.dtype)
    return -jacobian.T @ torch.linalg.solve(system, residual)


def _damped_step_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((_randn(generator, 2, n), _randn(generator, 2), damping))
             for n, damping in [(5, 0.1), (3, 1.0), (8, 0.01), (4, 2.0)]]
    return cases + [Case((_randn(generator, 2, 2), _randn(generator, 2), 0.5), "as many angles as equations"),
                    Case((_randn(generator, 2, 5), _randn(generator, 2), 1e6), "a huge damping: a small gradient step"),
                    Case((_randn(generator, 2, 5), torch.zeros(2, dtype=torch.float64), 0.3),
                         "on target already: r = 0")]


# ------------------------------------------------------------------------ 04 · export shaders

def quantize_weights_reference(weights: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization with one scale: s = max|w| / (2^(bits-1) - 1), codes round(w / s).

    What helpers.export.quantize does to the 576 weights (and, separately, to the 12 biases)."""
    scale = weights.abs().max() / (2 ** (bits - 1) - 1)
    return torch.round(weights / scale), scale


def _quantize_weights_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((0.3 * _randn(generator, 12, 48), 8)), Case((_randn(generator, 40), 8)),
             Case((2.5 * _randn(generator, 6, 5), 4))]
    negative_largest = _randn(generator, 10).clamp(-1, 1)
    negative_largest[3] = -4.0
    # at 3 bits the largest code is 3: with 0.75 the largest magnitude the scale is exactly 0.25
    ties = torch.tensor([3.0, 0.5, -0.5, 1.5, -2.5, 2.5, 0.25], dtype=torch.float64) * 0.25
    return cases + [Case((negative_largest, 8), "the largest magnitude is a negative weight"),
                    Case((_randn(generator, 7), 2), "2 bits: codes -1, 0, 1"),
                    Case((ties, 3), "values exactly half-way between two codes (torch.round: to even)")]


def quantize_state_reference(state: torch.Tensor) -> torch.Tensor:
    """The 8-bit state: every value stored as the nearest of 255 levels q / 127, q in [-127, 127]."""
    return quantize_state(state)


def _half_levels(count: int) -> torch.Tensor:
    """float32 values v with 127 * v exactly half-way between two codes (where rounding rules differ)."""
    found = []
    for code in range(count * 3):
        value = torch.tensor((code + 0.5) / 127, dtype=torch.float32)
        if float(value * 127) == code + 0.5:
            found.append(value)
        if len(found) == count:
            break
    return torch.stack(found)


def _quantize_state_cases(generator: torch.Generator) -> list[Case]:
    cases = [Case((0.6 * torch.randn(1, 12, 4, 4, generator=generator),)) for _ in range(3)]
    beyond = torch.tensor([-3.0, -1.2, -1.0, 1.0, 1.01, 2.5])
    return cases + [Case((beyond,), "values beyond [-1, 1]"),
                    Case((torch.zeros(2, 3),), "the all-zero seed (zero is a level)"),
                    Case((torch.cat([_half_levels(4), -_half_levels(4)]),),
                         "values exactly half-way between two levels (torch.round: to even)")]


def framebuffer_pixel_reference(x: int, y: int, channel: int, width: int) -> tuple[int, int, int]:
    """Where the shader's frame buffer keeps ``channel`` of cell (x, y): tile k = channel // 4 is
    drawn at columns k*width ... k*width + width - 1, component channel % 4 (R, G, B, A)."""
    tile = channel // 4
    return tile * width + x, y, channel % 4


def _framebuffer_pixel_cases(generator: torch.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        width = int(torch.randint(4, 65, (1,), generator=generator))
        x, y = (int(torch.randint(0, width, (1,), generator=generator)) for _ in range(2))
        cases.append(Case((x, y, int(torch.randint(0, 12, (1,), generator=generator)), width)))
    return cases + [Case((0, 0, 0, 16), "the first value of the first cell"),
                    Case((15, 9, 11, 16), "the last channel of the last column"),
                    Case((3, 2, 4, 16), "channel 4: the first of tile 1"),
                    Case((5, 1, 3, 8), "channel 3: the alpha of tile 0")]


# ======================================================================== the registry

EXERCISES: dict[str, Exercise] = {exercise.id: exercise for exercise in [
    Exercise(
        "01.dual_pow",
        "return (value, tangent) of u ** v for dual numbers u + du·ε and v + dv·ε (u > 0).",
        dual_pow_reference, _dual_pow_cases,
        "write u ** v as exp(v * log u) and apply the chain rule; both inputs carry a tangent, so there "
        "are two terms: dv * log(u) and v * du / u, both multiplied by the value u ** v.",
        outputs=("value", "tangent"),
        mistakes={
            "the constant-exponent rule": lambda u, du, v, dv: (u ** v, v * u ** (v - 1) * du),
            "the exponent's term only": lambda u, du, v, dv: (u ** v, u ** v * math.log(u) * dv),
            "a tangent not multiplied by u ** v": lambda u, du, v, dv: (u ** v, dv * math.log(u) + v * du / u),
        }),
    Exercise(
        "01.div_backward",
        "return (dL/dx, dL/dy) for the gate z = x / y, given x, y and the upstream gradient dL/dz.",
        div_backward_reference, _div_backward_cases,
        "z = x * y**-1: the multiply gate sends x the upstream gradient times the other factor 1/y; "
        "y gets the upstream gradient times dz/dy = -x / y**2 (mind the sign and the square).",
        outputs=("dL/dx", "dL/dy"),
        mistakes={
            "a lost sign": lambda x, y, g: (g / y, g * x / y ** 2),
            "y not squared": lambda x, y, g: (g / y, -g * x / y),
            "the upstream gradient forgotten": lambda x, y, g: (1 / y, -x / y ** 2),
            "the multiply gate's rule": lambda x, y, g: (g * y, g * x),
        }),
    Exercise(
        "01.relu_weight_gradient",
        "return dL/dW [outputs, inputs] of a dense ReLU layer, given X [batch, inputs], Z and dL/dY [batch, outputs].",
        relu_weight_gradient_reference, _relu_weight_gradient_cases,
        "first the unary gate: Delta = dL/dY * relu'(Z), with relu'(Z) = 1 where Z > 0 and 0 elsewhere (Z = 0 "
        "too); then the multiply gates, summed over the batch: dL/dW = Delta^T X, shaped [outputs, inputs] like W.",
        mistakes={
            "the ReLU's mask forgotten": lambda x, z, g: g.T @ x,
            "a missing transpose (X^T Delta)": lambda x, z, g: x.T @ (g * (z > 0)),
            "the batch averaged instead of summed": lambda x, z, g: (g * (z > 0)).T @ x / len(x),
            "slope 1 at Z = 0": lambda x, z, g: (g * (z >= 0)).T @ x,
        }),
    Exercise(
        "02.pin",
        "return params with the entries where `pinned` is True cut from the graph (same values, no gradient).",
        toys.pin, _pin_cases,
        "params.detach() has the same values with no graph behind them; torch.where(mask, a, b) takes each entry "
        "from a where mask is True and from b elsewhere. The values must not change, only where gradient flows.",
        outputs=("the values used", "the gradient that reaches params"),
        run=_run_pin,
        mistakes={
            "nothing detached": lambda p, m: p * 1,
            "everything detached": lambda p, m: p.detach(),
            "the mask inverted": lambda p, m: torch.where(m, p, p.detach()),
            "pinned entries set to zero": lambda p, m: torch.where(m, torch.zeros_like(p), p),
        }),
    Exercise(
        "02.damped_step",
        "return the damped least-squares step -J^T (J J^T + damping I)^-1 r, given J [2, n], r [2] and the damping.",
        damped_step_reference, _damped_step_cases,
        "build the 2x2 system J @ J.T + damping * torch.eye(2), solve it for r with torch.linalg.solve, multiply "
        "by -J.T. The step goes against the residual (minus sign), and the damping goes on the diagonal only.",
        mistakes={
            "the sign": lambda j, r, d: j.T @ torch.linalg.solve(j @ j.T + d * torch.eye(2, dtype=j.dtype), r),
            "the damping forgotten": lambda j, r, d: -torch.linalg.pinv(j) @ r,
            "damping added to every entry": lambda j, r, d: -j.T @ torch.linalg.solve(j @ j.T + d, r),
            "a plain gradient step": lambda j, r, d: -j.T @ r / d,
        }),
    Exercise(
        "04.quantize_weights",
        "return (codes, scale): scale = max|w| / (2**(bits-1) - 1) and codes = round(w / scale).",
        quantize_weights_reference, _quantize_weights_cases,
        "the scale maps the largest MAGNITUDE (use .abs().max(), a negative weight can be the largest) to the "
        "largest code 2**(bits-1) - 1 (127 for 8 bits); round to the nearest code with torch.round.",
        outputs=("codes", "scale"),
        mistakes={
            "128 levels per side": lambda w, b: (torch.round(w / (w.abs().max() / 2 ** (b - 1))),
                                                 w.abs().max() / 2 ** (b - 1)),
            "the largest value, not magnitude": lambda w, b: (torch.round(w / (w.max() / (2 ** (b - 1) - 1))),
                                                              w.max() / (2 ** (b - 1) - 1)),
            "truncation instead of rounding": lambda w, b: (torch.trunc(w / (w.abs().max() / (2 ** (b - 1) - 1))),
                                                            w.abs().max() / (2 ** (b - 1) - 1)),
            "rounding halves away from zero": lambda w, b: (
                torch.sign(w) * torch.floor((w / (w.abs().max() / (2 ** (b - 1) - 1))).abs() + 0.5),
                w.abs().max() / (2 ** (b - 1) - 1)),
        }),
    Exercise(
        "04.quantize_state",
        "return the state with every value replaced by the nearest level q / 127 (q an integer in [-127, 127]).",
        quantize_state_reference, _quantize_state_cases,
        "clamp to [-1, 1] first (the codes stop at ±127), multiply by 127, torch.round (halves to even, as the "
        "C program and the shader do), divide by 127. The result is a float state, not the integer codes.",
        rtol=0.0, atol=1e-7,
        mistakes={
            "no clamp": lambda s: torch.round(s * 127) / 127,
            "the codes, not the levels": lambda s: torch.round(s.clamp(-1, 1) * 127),
            "128 levels per side": lambda s: torch.round(s.clamp(-1, 1) * 128) / 128,
            "rounding halves up": lambda s: torch.floor(s.clamp(-1, 1) * 127 + 0.5) / 127,
        }),
    Exercise(
        "04.framebuffer_pixel",
        "return (column, row, component) of the frame-buffer pixel value that holds `channel` of cell (x, y).",
        framebuffer_pixel_reference, _framebuffer_pixel_cases,
        "4 values per pixel: channels 0-3 are tile 0, 4-7 tile 1, 8-11 tile 2 (tile = channel // 4); tile k "
        "starts at column k * width, so the column is k * width + x; the component is channel % 4.",
        outputs=("column", "row", "component"),
        mistakes={
            "three values per pixel": lambda x, y, c, w: ((c // 3) * w + x, y, c % 3),
            "interleaved tiles": lambda x, y, c, w: (3 * x + c // 4, y, c % 4),
            "the tile and component swapped": lambda x, y, c, w: ((c % 4) * w + x, y, c // 4),
        }),
]}
