"""The Triton backend of helpers.fast (backend="triton", helpers/fast/triton_kernels.py) must compute
what the plain model (helpers.nca.NCA) computes: the same states (1e-5) and gradients (1e-4 relative),
for every option of nca.Rule, NaN and inf included.

No GPU is needed: with TRITON_INTERPRET=1 Triton's interpreter runs the very same kernels on CPU
tensors (slowly, so the grids here are tiny and the rollouts short). What the interpreter cannot
check, it says below: it multiplies tl.dot with NumPy and ignores ``input_precision``, so the
kernels' source is checked for IEEE float32 products instead, and ``tools/gpu_measure.py`` repeats the
equality checks on a GPU.
"""
import ast
import sys

import pytest
import torch

pytest.importorskip("triton", reason="the Triton backend needs the triton package (installed with CUDA torch)")

from test_fast_properties import assert_agree, make_inputs, random_case  # noqa: E402

from helpers import fast, nca  # noqa: E402
from helpers.fast import triton_engine  # noqa: E402

#: NaN and inf are what those tests feed in: NumPy (the interpreter's arithmetic) warns about them
NON_FINITE = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:overflow encountered:RuntimeWarning")
SHAPE = (2, 12, 9, 11)       # 99 cells: one block of 128 whose last 29 lanes lie outside the grid
STEPS = 3


@pytest.fixture(autouse=True)
def interpreted(monkeypatch):
    """Triton's interpreter for every test here (kernels on CPU tensors), and the Triton backend on."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("DSOS_TRITON", raising=False)
    assert triton_engine.interpreting()


def make_model(seed=0, scale=0.05, **options):
    """Weights large enough that three steps move the state and every gradient is far from zero
    (longer rollouts need a smaller ``scale``: this rule grows values exponentially)."""
    torch.manual_seed(seed)
    model = nca.NCA(**options)
    with torch.no_grad():
        model.update.weight.normal_(0.0, scale)
        model.update.bias.normal_(0.0, scale)
    return model


def make_state(shape=SHAPE, seed=1):
    """Random values with exact zeros (the relu's kink) and a bright patch at the border (padding)."""
    generator = torch.Generator().manual_seed(seed)
    state = torch.randn(shape, generator=generator) * 0.5
    state[:, :, 2:4, 3:6] = 0.0
    state[:, :, 0, -2:] = 1.0
    return state


def final_and_gradients(model, state, steps, engine, upstream):
    """The final state and d(sum(final * upstream))/d(weight, bias, state)."""
    start = state.clone().requires_grad_(True)
    final = engine(start)
    grads = torch.autograd.grad(final, [model.update.weight, model.update.bias, start], upstream)
    return final.detach(), grads


def compare_with_plain(model, state, steps=STEPS, seed=7, **options):
    """Plain and Triton from generators in the same state: states within 1e-5, gradients within 1e-4."""
    upstream = torch.randn(state.shape, generator=torch.Generator().manual_seed(5))
    plain = final_and_gradients(model, state, steps, lambda s: model.rollout(
        s, steps, generator=torch.Generator().manual_seed(seed)), upstream)
    quick = final_and_gradients(model, state, steps, lambda s: fast.rollout(
        model, s, steps, generator=torch.Generator().manual_seed(seed), backend="triton", **options), upstream)
    assert (plain[0] - state).abs().max() > 0.05, "the rollout should move the state"
    torch.testing.assert_close(quick[0], plain[0], atol=1e-5, rtol=0)
    for name, want, got in zip(["weight", "bias", "state"], plain[1], quick[1]):
        assert want.norm() > 0, f"a zero {name} gradient would make this comparison meaningless"
        error = float((got - want).norm() / want.norm())
        assert error <= 1e-4, f"{name} gradient: relative error {error:.2e}"
    return plain, quick


@pytest.mark.parametrize("options", [
    {},
    {"split_relu": False},
    {"filters": "side"},
    {"update_rate": 0.3},
    {"update_per": "cell", "update_rate": 1.0},
    {"padding": "zeros"},
    {"padding": "zeros", "split_relu": False, "filters": "side", "update_per": "cell"},
], ids=lambda options: ",".join(f"{key}={value}" for key, value in options.items()) or "default")
def test_triton_matches_the_plain_model(options):
    batch = 2 if not options else 1          # the interpreter is slow: two images for the default rule only
    model = make_model(**options)
    compare_with_plain(model, make_state((batch, 12, 9, 11)))


def test_other_channel_counts_run_too():
    """12 channels is the course's rule; the kernels pad any count up to a tile of 16 (here 4 and 8)."""
    compare_with_plain(make_model(channels=4, filters="side"), make_state((1, 4, 5, 7)))
    compare_with_plain(make_model(channels=6, padding="zeros"), make_state((1, 6, 4, 3)))


def test_checkpointing_and_several_blocks_per_image(monkeypatch):
    """Blocks of 32 cells forward, 16 backward: four and seven programs per image, the last sticking
    out, their parameter gradients summed; with checkpointing the backward recomputes states with
    the saved masks."""
    monkeypatch.setattr(triton_engine, "BLOCK", 32)
    monkeypatch.setattr(triton_engine, "BACKWARD_BLOCK", 16)
    model = make_model(padding="zeros")
    compare_with_plain(model, make_state((1, 12, 9, 11)), steps=4, checkpoint_every=3)


def test_the_padding_is_what_lies_beyond_the_border():
    """One bright cell at the left edge: wrapped, the last column feels it after one step; with zeros it does not."""
    state = torch.zeros(1, 12, 5, 6)
    state[:, :, 2, 0] = 1.0
    right_column = {}
    for padding in nca.PADDINGS:
        model = make_model(padding=padding, update_rate=1.0)
        with torch.no_grad():
            expected = model(state)
            actual = fast.infer(model, state, 1, backend="triton")
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
        right_column[padding] = actual[:, :, 2, -1]
    with torch.no_grad():
        untouched = make_model(padding="zeros", update_rate=1.0)(torch.zeros(1, 12, 5, 6))[:, :, 2, -1]
    assert not torch.allclose(right_column["circular"], untouched, atol=1e-4)
    torch.testing.assert_close(right_column["zeros"], untouched, atol=1e-6, rtol=0)


def test_fast_masks_are_the_pytorch_backends_draw_for_draw():
    """masks='bits' unpacks the same random bytes as the PyTorch backend: the same states and gradients."""
    model, state = make_model(), make_state((1, 12, 9, 11))
    upstream = torch.randn(state.shape)
    results = []
    for backend in ("torch", "triton"):
        results.append(final_and_gradients(model, state, STEPS, lambda s, backend=backend: fast.rollout(
            model, s, STEPS, generator=torch.Generator().manual_seed(3), masks="bits", backend=backend), upstream))
    (torch_final, torch_grads), (triton_final, triton_grads) = results
    assert (torch_final - state).abs().max() > 0.05
    torch.testing.assert_close(triton_final, torch_final, atol=1e-5, rtol=0)
    for want, got in zip(torch_grads, triton_grads):
        assert float((got - want).norm() / want.norm()) <= 1e-4


def test_the_generator_ends_where_the_plain_rollout_leaves_it():
    model, state = make_model(), make_state((1, 12, 4, 5))
    plain, quick = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    with torch.no_grad():
        model.rollout(state, 2, generator=plain)
        fast.infer(model, state, 2, generator=quick, backend="triton")
    assert torch.equal(torch.rand(4, generator=plain), torch.rand(4, generator=quick))


def non_finite_cases(count: int):
    """The property test's random rules and states (NaN and inf among the values, sometimes among the
    weights): the float32 ones with short rollouts, as many as the interpreter's time allows."""
    chosen = []
    for index in range(200):
        case = random_case(index)
        if case["dtype"] == torch.float32 and case["steps"] <= 3:
            chosen.append(case)
        if len(chosen) == count:
            return chosen
    raise AssertionError("too few cases")


@NON_FINITE
def test_nan_and_inf_propagate_as_in_the_plain_model():
    checked_non_finite = 0
    for case in non_finite_cases(6):
        model, state, upstream = make_inputs(case)

        def run(engine):
            start = state.clone().requires_grad_(True)
            final = engine(start, torch.Generator().manual_seed(case["seed"]))
            return [final.detach(), *torch.autograd.grad(final, [model.update.weight, model.update.bias, start],
                                                         upstream)]

        expected = run(lambda s, g: model.rollout(s, case["steps"], generator=g))
        actual = run(lambda s, g: fast.rollout(model, s, case["steps"], generator=g, backend="triton"))
        for name, want, got in zip(["final state", "weight grad", "bias grad", "state grad"], expected, actual):
            assert_agree(want, got, f"{case}, {name}")
        checked_non_finite += not expected[0].isfinite().all()
    assert checked_non_finite >= 3


@NON_FINITE
def test_a_nan_weight_leaves_the_closed_relus_gradient_finite():
    """relu's backward selects (threshold_backward), it does not multiply by a 0/1 slope: with a NaN
    weight on relu(x) of channel 0, the state's gradient stays finite where x <= 0, as in the plain model."""
    model = make_model(update_rate=1.0)
    with torch.no_grad():
        model.update.weight[0, 0, 0, 0] = float("nan")
    state = torch.randn(1, 12, 5, 6, generator=torch.Generator().manual_seed(2))
    upstream = torch.ones(state.shape)
    plain = final_and_gradients(model, state, 1, lambda s: model.rollout(s, 1), upstream)
    quick = final_and_gradients(model, state, 1, lambda s: fast.rollout(model, s, 1, backend="triton"), upstream)
    assert 0 < int(plain[1][2].isnan().sum()) < state[0, 0].numel()
    for name, want, got in zip(["weight grad", "bias grad", "state grad"], plain[1], quick[1]):
        assert_agree(want, got, name)


@NON_FINITE
def test_one_nan_spreads_as_in_the_plain_model():
    model, state = make_model(), torch.zeros(1, 12, 6, 6)
    state[0, 3, 2, 2] = float("nan")
    with torch.no_grad():
        expected = model.rollout(state, 3, generator=torch.Generator().manual_seed(1))
        actual = fast.infer(model, state, 3, generator=torch.Generator().manual_seed(1), backend="triton")
    assert torch.equal(actual.isnan(), expected.isnan()) and expected.isnan().any()
    finite = expected.isfinite()
    torch.testing.assert_close(actual[finite], expected[finite], atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled Triton kernels need a CUDA GPU (none here)")
@pytest.mark.parametrize("options", [{}, {"padding": "zeros", "split_relu": False, "update_per": "cell"}])
def test_the_compiled_kernels_match_the_plain_model_on_a_gpu(monkeypatch, options):
    """On a GPU the kernels are compiled, not interpreted: there TF32 would show (the interpreter
    cannot), so the plain reference runs cuDNN in true float32 and the grid is larger."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = make_model(scale=0.005, **options).cuda()
    state = make_state((4, 12, 40, 36)).cuda()
    upstream = torch.randn(state.shape, device="cuda")
    plain = final_and_gradients(model, state, 8, lambda s: model.rollout(
        s, 8, generator=torch.Generator("cuda").manual_seed(3)), upstream)
    quick = final_and_gradients(model, state, 8, lambda s: fast.rollout(
        model, s, 8, generator=torch.Generator("cuda").manual_seed(3)), upstream)      # "auto": Triton on CUDA
    assert fast.uses_triton("cuda")
    assert 0.05 < (plain[0] - state).abs().max() < 10, "the rollout should move the state, not explode"
    torch.testing.assert_close(quick[0], plain[0], atol=1e-5, rtol=0)
    for want, got in zip(plain[1], quick[1]):
        assert float((got - want).norm() / want.norm()) <= 1e-4


# ------------------------------------------------------------------------------ choice of backend

def test_auto_picks_triton_on_cuda_only_and_says_why_not(monkeypatch):
    rule = nca.Rule()
    filters = nca.perception_filters()
    state = torch.zeros(1, 12, 4, 4)
    # on the CPU "auto" stays with the C++ kernel or PyTorch, interpreter or not
    work = fast.make_workspace(rule, filters, state, None, "exact", "auto")
    assert not isinstance(work, triton_engine.TritonWorkspace)
    assert isinstance(fast.make_workspace(rule, filters, state, None, "exact", "triton"), triton_engine.TritonWorkspace)
    assert not fast.uses_triton("cpu")
    with pytest.raises(RuntimeError, match="float32"):
        fast.rollout(make_model().double(), state.double(), 1, backend="triton")
    with pytest.raises(RuntimeError, match="at most 32 channels"):
        fast.rollout(make_model(channels=36), torch.zeros(1, 36, 4, 4), 1, backend="triton")
    monkeypatch.setenv("DSOS_TRITON", "0")
    assert "DSOS_TRITON=0" in triton_engine.fits(rule, torch.float32, "cuda")
    with pytest.raises(RuntimeError, match="DSOS_TRITON=0"):
        fast.rollout(make_model(), state, 1, backend="triton")
    monkeypatch.delenv("DSOS_TRITON")
    # compiled (not interpreted) Triton runs on CUDA only
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "CUDA" in triton_engine.fits(rule, torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="CUDA"):
        fast.rollout(make_model(), state, 1, backend="triton")


def test_without_triton_the_reason_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)          # "import triton" now raises ImportError
    reason = triton_engine.fits(nca.Rule(), torch.float32, "cuda")
    assert reason is not None and "triton does not import" in reason
    assert not fast.uses_triton("cuda")


def test_the_kernels_follow_the_interpreter_switch(monkeypatch):
    interpreted = triton_engine.kernels()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    compiled = triton_engine.kernels()
    assert compiled is not interpreted
    assert type(compiled.step_kernel).__name__ == "JITFunction"
    assert type(interpreted.step_kernel).__name__ == "InterpretedFunction"


def test_every_product_in_the_kernels_is_ieee_float32():
    """The interpreter ignores tl.dot's input_precision; on a GPU the default would be TF32 (about
    1e-3 relative error), so every tl.dot must ask for "ieee" explicitly."""
    tree = ast.parse(triton_engine.KERNELS_FILE.read_text())
    dots = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "dot"]
    assert len(dots) >= 8
    for dot in dots:
        precision = {keyword.arg: keyword.value for keyword in dot.keywords}.get("input_precision")
        assert isinstance(precision, ast.Constant) and precision.value == "ieee", f"line {dot.lineno}"



@pytest.mark.slow
def test_the_kernels_compile_for_a_gpu_in_ieee_float32_without_spills():
    """Triton compiles for a GPU on a machine without one (down to sm_90 machine code), so this CPU
    checks what the interpreter cannot: that the kernels compile, that their products are IEEE
    float32 fused multiply-adds (no tensor-core mma, which would mean TF32), and, where Triton's
    bundled cuobjdump is there, that no kernel spills registers to a stack."""
    import subprocess
    import tempfile
    from pathlib import Path

    compiled = triton_engine.compile_for_gpu(nca.Rule(), capability=90)
    assert set(compiled) == {"step_kernel", "backward_kernel", "adjoint_kernel"}
    cuobjdump = Path(sys.modules["triton"].__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    for name, kernel in compiled.items():
        ptx = kernel.asm["ptx"]
        assert "fma.rn.f32" in ptx, name
        assert "mma" not in ptx and "tf32" not in ptx, f"{name} multiplies on tensor cores (TF32)"
        if cuobjdump.exists():
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{name}.cubin"
                path.write_bytes(kernel.asm["cubin"])
                usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(path)], capture_output=True,
                                       text=True, check=True).stdout
            assert "STACK:0" in usage, f"{name} spills registers: {usage}"


def test_auto_checks_the_kernels_on_the_device_once_and_falls_back_with_a_warning(monkeypatch):
    """What backend="auto" asks before it uses Triton on a GPU (run here under the interpreter):
    the kernels pass on a working installation, and one that fails or computes something else is
    named in a warning, not used. The check leaves the global random stream where it was."""
    monkeypatch.setattr(triton_engine, "_checked_rules", {})
    rule = nca.Rule(padding="zeros")
    before = torch.random.get_rng_state()
    assert triton_engine.self_check(rule, "cpu") is None
    assert torch.equal(torch.random.get_rng_state(), before)

    def broken(self, state, mask, out):
        out.copy_(state)                          # a kernel that forgets the update
        return out

    monkeypatch.setattr(triton_engine, "_checked_rules", {})
    monkeypatch.setattr(triton_engine.TritonWorkspace, "step", broken)
    with pytest.warns(RuntimeWarning, match="PyTorch backend runs instead"):
        assert "states differ" in triton_engine.self_check(rule, "cpu")
    assert "states differ" in triton_engine.self_check(rule, "cpu")      # asked once, remembered

    def failing(self, *args):
        raise RuntimeError("PTX compilation failed")

    monkeypatch.setattr(triton_engine, "_checked_rules", {})
    monkeypatch.setattr(triton_engine.TritonWorkspace, "step", failing)
    with pytest.warns(RuntimeWarning):
        assert "PTX compilation failed" in triton_engine.self_check(rule, "cpu")


def test_auto_on_cuda_uses_triton_only_when_the_check_passes(monkeypatch):
    """make_workspace's choice on a CUDA state (stand-ins: this machine has no GPU): Triton when it
    fits and its check passed, the PyTorch backend when the check failed; "triton" skips the check."""
    from types import SimpleNamespace

    monkeypatch.setattr(fast, "TorchWorkspace", lambda *options: "torch")
    monkeypatch.setattr(fast, "TritonWorkspace", lambda *options: "triton")
    monkeypatch.setattr(triton_engine, "fits", lambda *args: None)
    state = SimpleNamespace(shape=(1, 12, 8, 8), dtype=torch.float32, device=torch.device("cuda"))
    rule, filters = nca.Rule(), nca.perception_filters()
    checked = []
    for verdict, expected in ((None, "triton"), ("their states differ", "torch")):
        monkeypatch.setattr(triton_engine, "self_check", lambda rule, device, verdict=verdict: checked.append(device)
                            or verdict)
        assert fast.make_workspace(rule, filters, state, None, "exact", "auto") == expected
        assert fast.make_workspace(rule, filters, state, None, "exact", "triton") == "triton"
    assert checked == [torch.device("cuda")] * 2
