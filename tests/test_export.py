"""Tests of helpers.export: quantization, the generated GLSL, C and WebGL page, and their parity with PyTorch.

The parity tests compare independent implementations of the same quantized rule in deterministic
mode (every value updates every step): PyTorch (the reference), the C program compiled with the
system compiler, and the WebGL2 page run in headless Chromium. The tolerance is derived, not picked:
``export.parity_tolerance`` measures how far float32 rounding noise is amplified by the dynamics
(float32 against float64 runs) and allows ten times that. Each parity test also checks that a change
of a single weight by one quantization step moves the result by more than the tolerance, so the
comparison is sharp enough to catch a wrong implementation.

The sections follow the modules of the package: quantize, glsl (and the frame buffer), c, webgl,
parity, circuit, and the templates the generators fill.
"""
import re
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from helpers import export, models, nca
from helpers.export import template

SIZE = (24, 32)  # a small non-square grid, so a swapped height/width would show


def damped_model(scale: float = 0.02, decay: float = 0.3, seed: int = 0) -> nca.NCA:
    """A random rule whose deterministic dynamics stay bounded but keep spatial structure.

    A plain random rule either dies out or explodes within 50 steps (the Laplacian amplifies
    checkerboards); a self-decay term on every channel keeps it bounded (max |state| about 3 after 50
    steps) while the random couplings keep the state far from uniform (spatial std about 0.3).
    """
    generator = torch.Generator().manual_seed(seed)
    model = nca.NCA()
    with torch.no_grad():
        weight = torch.randn(nca.CHANNELS, 48, generator=generator) * scale
        for channel in range(nca.CHANNELS):
            weight[channel, channel] -= decay        # relu(state) of the same channel
            weight[channel, 24 + channel] -= decay   # negative part of the same channel
        model.update.weight.copy_(weight[:, :, None, None])
        model.update.bias.copy_(torch.randn(nca.CHANNELS, generator=generator) * 0.05)
    return model


def random_state(seed: int = 1, size=SIZE) -> torch.Tensor:
    return torch.rand(1, nca.CHANNELS, *size, generator=torch.Generator().manual_seed(seed)) - 0.5


def deterministic_rollout(model: nca.NCA, state: torch.Tensor, steps: int) -> torch.Tensor:
    with torch.no_grad():
        for _ in range(steps):
            state = model(state, mask=torch.ones(1))
    return state


def nudged(rule: export.QuantizedRule, output: int = 0, inp: int = 12) -> export.QuantizedRule:
    """The same rule with one weight code changed by one step (a minimal 'wrong implementation')."""
    codes = rule.weight_codes.copy()
    codes[output, inp] += 1
    return export.QuantizedRule(codes, rule.bias_codes, rule.weight_scale, rule.bias_scale, rule.bits,
                                rule.update_rate)


# --------------------------------------------------------------------------- quantization

def test_quantization_error_is_at_most_half_a_step():
    model = damped_model()
    rule = export.quantize(model, bits=8)
    weight = model.update.weight.detach().reshape(12, 48)
    assert rule.parameter_count == 588
    assert np.abs(rule.weight_codes).max() == 127 and np.abs(rule.bias_codes).max() == 127
    error = (rule.weight() - weight).abs()
    assert error.max() <= rule.weight_scale / 2 * (1 + 1e-6)
    assert (rule.bias() - model.update.bias.detach()).abs().max() <= rule.bias_scale / 2 * (1 + 1e-6)
    assert error.max() > 0  # the rounding really happened


def test_fewer_bits_give_smaller_codes_and_larger_errors():
    model = damped_model()
    with pytest.warns(RuntimeWarning, match="rounded to zero"):   # 4 bits keep only 7 levels a side
        rule4 = export.quantize(model, bits=4)
    rule8 = export.quantize(model, bits=8)
    assert np.abs(rule4.weight_codes).max() == 7 and rule4.zeroed_weights > rule8.zeroed_weights
    weight = model.update.weight.detach().reshape(12, 48)
    assert (rule4.weight() - weight).abs().mean() > 5 * (rule8.weight() - weight).abs().mean()


def test_quantized_model_computes_with_the_dequantized_parameters():
    rule = export.quantize(damped_model())
    model = rule.model()
    assert torch.equal(model.update.weight.detach().reshape(12, 48), rule.weight())
    assert torch.equal(model.update.bias.detach(), rule.bias())
    assert model.update_rate == 0.5


@pytest.mark.parametrize("model, problem", [
    (nca.NCA(channels=6), "channels"),
    (nca.NCA(split_relu=False), "split_relu"),
    (nca.NCA(filters="side"), "filters"),
    (nn.Conv2d(48, 12, 1), "helpers.nca.NCA"),
])
def test_other_architectures_are_refused_with_a_clear_error(model, problem):
    with pytest.raises(ValueError, match=problem):
        export.quantize(model)


def test_generators_refuse_a_model_instead_of_a_rule_and_bad_bits():
    model = damped_model()
    for generate in (export.glsl_buffer_shader, export.c_source, export.webgl_page):
        with pytest.raises(ValueError, match="QuantizedRule"):
            generate(model)
    with pytest.raises(ValueError, match="bits"):
        export.quantize(model, bits=1)


# ------------------------------------------------------- the generated text holds every parameter

def parse_glsl(text: str):
    """Rebuild (weight codes [12, 48], bias codes [12], weight scale, bias scale) from the shader text."""
    scales = {name: float(value) for name, value in re.findall(r"#define (WS|BS) (\S+)", text)}
    weights_text = re.search(r"const mat4 W\[36\] = mat4\[\]\((.*?)\);", text, re.S).group(1)
    blocks = [np.array([int(v) for v in body.split(",")]).reshape(4, 4)
              for body in re.findall(r"mat4\(([-\d,\s]+)\)", weights_text)]
    assert len(blocks) == 36
    codes = np.zeros((12, 48), int)
    for index, block in enumerate(blocks):  # W[12 * tile + group]
        tile, group = divmod(index, 12)
        codes[4 * tile:4 * tile + 4, 4 * group:4 * group + 4] = block
    biases_text = re.search(r"const vec4 B\[3\] = vec4\[\]\((.*?)\);", text, re.S).group(1)
    bias = np.array([int(v) for body in re.findall(r"vec4\(([-\d,\s]+)\)", biases_text) for v in body.split(",")])
    return codes, bias, scales["WS"], scales["BS"]


def parse_c(text: str):
    weights_text = re.search(r"WEIGHT_CODES\[CH\]\[IN\] = \{(.*?)\};", text, re.S).group(1)
    rows = [[int(v) for v in row.split(",")] for row in re.findall(r"\{([-\d,\s]+)\}", weights_text)]
    bias = [int(v) for v in re.search(r"BIAS_CODES\[CH\] = \{([-\d,\s]+)\};", text).group(1).split(",")]
    weight_scale = float(re.search(r"WEIGHT_SCALE = (\S+)f;", text).group(1))
    bias_scale = float(re.search(r"BIAS_SCALE = (\S+)f;", text).group(1))
    return np.array(rows), np.array(bias), weight_scale, bias_scale


@pytest.mark.parametrize("parse, generate", [(parse_glsl, export.glsl_buffer_shader), (parse_c, export.c_source)])
def test_exported_text_contains_every_parameter(parse, generate):
    rule = export.quantize(damped_model(seed=3))
    codes, bias, weight_scale, bias_scale = parse(generate(rule))
    assert codes.shape == (12, 48) and bias.shape == (12,)
    rebuilt_weight = torch.from_numpy(codes.astype(np.float32) * np.float32(weight_scale))
    rebuilt_bias = torch.from_numpy(bias.astype(np.float32) * np.float32(bias_scale))
    assert torch.equal(rebuilt_weight, rule.weight())  # bit for bit, not merely close
    assert torch.equal(rebuilt_bias, rule.bias())


# ------------------------------------------------------------------------------ frame buffer

def test_framebuffer_layout_puts_four_channels_per_tile_side_by_side():
    state = random_state()
    pixels = export.to_framebuffer(state)
    height, width = SIZE
    assert pixels.shape == (height, 3 * width, 4)
    for tile, x, y, rgba in [(0, 0, 0, 0), (1, 5, 7, 2), (2, width - 1, height - 1, 3)]:
        assert pixels[y, tile * width + x, rgba] == state[0, 4 * tile + rgba, y, x]
    assert torch.equal(export.from_framebuffer(pixels), state)


# ------------------------------------------------------------------------------------- C

needs_cc = pytest.mark.skipif(export.find_c_compiler() is None,
                              reason="no C compiler (cc, gcc or clang) on this machine; CI has one")


@needs_cc
def test_c_program_matches_pytorch_in_deterministic_mode(tmp_path):
    rule = export.quantize(damped_model())
    state, steps = random_state(), 60
    reference = deterministic_rollout(rule.model(), state, steps)
    tolerance = export.parity_tolerance(rule.model(), state, steps)
    assert reference.std(dim=(2, 3)).mean() > 0.05  # the comparison is on a structured state, not a flat one
    result = export.run_c(export.compile_c(export.c_source(rule), tmp_path), state, steps)
    gap = (result - reference).abs().max().item()
    assert gap <= tolerance, f"C and PyTorch differ by {gap:.3g} > tolerance {tolerance:.3g}"
    # Sharp enough: one weight off by one step changes the result by far more than the tolerance.
    wrong = deterministic_rollout(nudged(rule).model(), state, steps)
    assert (wrong - reference).abs().max().item() > 10 * tolerance


@needs_cc
def test_c_program_reports_a_diverged_state_and_lets_nan_spread_as_pytorch_does(tmp_path):
    rule = export.quantize(damped_model())
    binary = export.compile_c(export.c_source(rule), tmp_path)
    state = random_state()
    state[0, 5, 3, 4] = float("nan")                    # one NaN value
    reference = deterministic_rollout(rule.model(), state, 3)
    assert torch.isnan(reference).sum() > 1               # PyTorch spreads it to the neighbours
    with pytest.raises(RuntimeError, match="NaN or infinite .* diverged"):
        export.run_c(binary, state, 3)


def test_quantization_reports_its_error_and_warns_when_an_outlier_zeroes_the_rule():
    rule = export.quantize(damped_model())
    assert rule.zeroed_weights < 576 // 10 and 0 < rule.relative_error < 0.05 and "rounded to zero" in rule.report()
    model = damped_model()
    with torch.no_grad():
        model.update.weight[0, 0] = 1e30                  # one absurd weight sets the one scale
    with pytest.warns(RuntimeWarning, match="rounded to zero"):
        outlier = export.quantize(model)
    assert outlier.zeroed_weights > 500


@needs_cc
def test_c_program_random_mode_updates_about_half_the_values(tmp_path):
    rule = export.quantize(damped_model())
    binary = export.compile_c(export.c_source(rule), tmp_path)
    state = random_state()
    full = export.run_c(binary, state, 1, update_rate=1.0)
    half = export.run_c(binary, state, 1, update_rate=0.5, seed=7)
    changed = (half != state)
    assert 0.45 < changed.float().mean().item() < 0.55
    assert torch.equal(half[changed], full[changed])  # the values that changed took the full update
    grown = export.run_c(binary, None, 5, size=SIZE, update_rate=0.5, seed=7)
    assert grown.shape == (1, 12, *SIZE) and grown.abs().max() > 0


def test_compile_c_reports_compiler_errors(tmp_path):
    if export.find_c_compiler() is None:
        with pytest.raises(FileNotFoundError, match="C compiler"):
            export.compile_c("int main(void) { return 0; }", tmp_path)
    else:
        with pytest.raises(RuntimeError, match="failed to compile"):
            export.compile_c("this is not C", tmp_path)


# --------------------------------------------------------------------------------- WebGL page

def test_webgl_page_is_standalone_and_embeds_the_shader():
    rule = export.quantize(damped_model())
    page = export.webgl_page(rule, size=(16, 20))
    assert not re.search(r"https?://|<script[^>]+src=|<link", page), "the page must not load anything"
    assert export.glsl_buffer_shader(rule) in page
    assert '"width": 20' in page and '"height": 16' in page and '"testSteps": 0' in page
    assert 'id="speed"' in page and 'id="mouse-mode"' in page  # the controls the chapter promises


def test_parity_tolerance_leaves_the_model_as_it_is():
    model = damped_model().double()  # e.g. a model a learner keeps in float64 for a reference run
    before = {name: value.clone() for name, value in model.state_dict().items()}
    state = random_state()
    tolerance = export.parity_tolerance(model, state, 10, floor=0.0)
    assert tolerance > 0
    after = model.state_dict()
    assert all(value.dtype == torch.float64 for value in after.values()), "parity_tolerance changed the dtype"
    assert all(torch.equal(after[name], value) for name, value in before.items())
    assert model.update.weight.dtype == torch.float64
    # The same call again gives the same answer: nothing about the model changed in between.
    assert export.parity_tolerance(model, state, 10, floor=0.0) == tolerance


def test_parity_tolerance_grows_with_steps_on_an_unstable_rule():
    model = nca.NCA(init_scale=0.005)  # a plain random rule: its state (and rounding noise) grows
    state = random_state()
    short = export.parity_tolerance(model, state, 5, floor=0.0)
    long = export.parity_tolerance(model, state, 50, floor=0.0)
    assert 0 < short < long
    assert export.parity_tolerance(model, state, 5) >= 1e-5  # the floor


def test_draw_circuit_draws_the_strongest_weights_with_their_signs():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rule = export.quantize(damped_model())
    ax = export.draw_circuit(rule, keep=30)
    colours = [patch.get_edgecolor() for patch in ax.patches if getattr(patch, "get_linestyle", None)
               and tuple(np.round(patch.get_edgecolor()[:3], 3)) in {(0.173, 0.627, 0.173), (0.839, 0.153, 0.157)}]
    assert len(colours) == 30
    weight = rule.weight_codes.reshape(-1)
    strongest = weight[np.argsort(np.abs(weight))[::-1][:30]]
    red = sum(1 for colour in colours if colour[0] > 0.5)
    assert red == int((strongest < 0).sum())
    plt.close(ax.figure)


needs_chromium = pytest.mark.skipif(export.find_chromium() is None,
                                    reason="no Chromium on this machine (apt-get install chromium); CI installs it")


@needs_chromium
def test_webgl_page_matches_pytorch_in_headless_chromium():
    rule = export.quantize(damped_model())
    state, steps = random_state(), 30
    reference = deterministic_rollout(rule.model(), state, steps)
    tolerance = export.parity_tolerance(rule.model(), state, steps)
    result = export.browser_rollout(rule, state, steps)
    gap = (result - reference).abs().max().item()
    assert gap <= tolerance, f"WebGL and PyTorch differ by {gap:.3g} > tolerance {tolerance:.3g}"
    wrong = deterministic_rollout(nudged(rule).model(), state, steps)
    assert (wrong - reference).abs().max().item() > 10 * tolerance


@needs_chromium
def test_webgl_page_reports_a_diverged_state_instead_of_returning_it():
    rule = export.quantize(damped_model())
    state = random_state()
    state[0, 2, 4, 5] = float("inf")
    with pytest.raises(RuntimeError, match="NaN or infinite .* diverged"):
        export.browser_rollout(rule, state, 2)


def pretrained_texture_models():
    """The shipped texture models the exporters take: the Laplacian and Sobel rule (not the Laplacian-only one)."""
    folder = models.shipped_dir()
    return sorted(path for path in folder.glob("texture_*.pt")
                  if models.load_metadata(path)["config"]["filters"] == "laplacian_sobel")


def test_a_laplacian_only_model_is_refused_by_name():
    isotropic = [path for path in models.shipped_dir().glob("texture_*.pt")
                 if models.load_metadata(path)["config"]["filters"] == "laplacian"]
    assert isotropic, "camouflage and bubbles ship as Laplacian-only rules"
    with pytest.raises(ValueError, match="filters='laplacian_sobel'.*'filters': 'laplacian'"):
        export.quantize(models.load(isotropic[0]))


@needs_cc
@pytest.mark.skipif(not pretrained_texture_models(), reason="no pretrained texture model in data/models yet")
def test_c_program_matches_pytorch_on_a_pretrained_texture_model(tmp_path):
    rule = export.quantize(models.load(pretrained_texture_models()[0]))
    state, steps = random_state(size=(32, 32)) * 0.2, 50
    reference = deterministic_rollout(rule.model(), state, steps)
    tolerance = export.parity_tolerance(rule.model(), state, steps)
    result = export.run_c(export.compile_c(export.c_source(rule), tmp_path), state, steps)
    assert (result - reference).abs().max().item() <= tolerance


@needs_chromium
def test_webgl_mouse_erases_the_cells_under_it_and_nothing_else():
    rule = export.quantize(damped_model())
    state, steps, (column, row) = random_state(), 3, (5, 17)   # off-centre, so a flipped axis would show
    result = export.browser_rollout(rule, state, steps, mouse=(column, row))
    reference = deterministic_rollout(rule.model(), state, steps)
    rows, columns = torch.meshgrid(torch.arange(SIZE[0]), torch.arange(SIZE[1]), indexing="ij")
    near = ((rows - row) ** 2 + (columns - column) ** 2).float().sqrt() < 0.06 * SIZE[0]  # the shader's brush
    assert near.sum() == 9  # a 3x3 patch for this grid
    assert torch.all(result[0][:, near] == 0)
    far = ((rows - row).abs() > 1 + steps) | ((columns - column).abs() > 1 + steps)  # beyond the erased cells' reach
    tolerance = export.parity_tolerance(rule.model(), state, steps)
    assert (result[0][:, far] - reference[0][:, far]).abs().max() <= tolerance


@needs_chromium
def test_live_webgl_page_runs_frames_without_errors(tmp_path):
    page_path = tmp_path / "page.html"
    page_path.write_text(export.webgl_page(export.quantize(damped_model()), size=(32, 32), steps_per_frame=4))
    command = [export.find_chromium(), *export.CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
               "--virtual-time-budget=3000", "--dump-dom", page_path.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=180).stdout
    assert "ERROR" not in dom.split('<pre id="result">', 1)[1].split("</pre>", 1)[0]
    steps_run = int(re.search(r'data-step="(\d+)"', dom).group(1))
    assert steps_run >= 4 and steps_run % 4 == 0  # whole frames of 4 steps each were animated


@needs_cc
def test_per_cell_update_mask_is_exported(tmp_path):
    model = damped_model()
    model.update_per = "cell"
    rule = export.quantize(model)
    assert rule.update_per == "cell" and rule.model().update_per == "cell"
    assert "rnd(p, 0, iFrame)" in export.glsl_buffer_shader(rule)  # one draw shared by the cell's 12 values
    state = random_state()
    half = export.run_c(export.compile_c(export.c_source(rule), tmp_path), state, 1, update_rate=0.5, seed=3)
    changed = (half != state)[0]  # [12, H, W]
    cells_changed = changed.any(dim=0)
    assert 0.4 < cells_changed.float().mean().item() < 0.6
    assert torch.equal(changed.all(dim=0), cells_changed)  # a cell updates all its channels or none


# ------------------------------------------------------------------------------- templates

def test_template_fill_needs_exactly_the_templates_placeholders():
    text = template.read("image.glsl")
    assert text == export.glsl_image_shader() and not template.PLACEHOLDER.search(text)
    with pytest.raises(KeyError, match="WEIGHTS"):
        template.fill("buffer.glsl", BITS=8)  # placeholders left without a value
    with pytest.raises(KeyError, match="EXTRA"):
        template.fill("image.glsl", EXTRA=1)  # a value the template has no place for


def test_generated_texts_fill_every_placeholder_once():
    rule = export.quantize(damped_model())
    title = "__SHADER__ & <b>__WIDTH__</b>"  # placeholder-like text in a value is kept, not filled again
    page = export.webgl_page(rule, size=(16, 20), title=title)
    assert page.count(export.glsl_buffer_shader(rule)) == 1
    assert "<title>__SHADER__ &amp; &lt;b&gt;__WIDTH__&lt;/b&gt;</title>" in page
    for text in (export.glsl_buffer_shader(rule), export.c_source(rule), export.webgl_page(rule)):
        assert not template.PLACEHOLDER.search(text)


# ------------------------------------------------------------------------------- the 8-bit state

def test_state_quantization_has_255_levels_rounds_halves_to_even_and_saturates():
    values = torch.tensor([-3.0, -1.0, 0.0, 0.5 / 127, 1.5 / 127, 2.5 / 127, 0.3, 1.0, 7.0])
    codes = export.state_codes(values)
    assert codes.dtype == torch.int8
    assert codes.tolist() == [-127, -127, 0, 0, 2, 2, 38, 127, 127]   # halves go to the even code
    assert torch.equal(export.quantize_state(values), codes.float() / 127)
    levels = export.quantize_state(torch.linspace(-2, 2, 10001)).unique()
    assert len(levels) == 255 and levels.min() == -1 and levels.max() == 1 and (levels == 0).any()


def test_rollout_keeps_an_8bit_state_on_its_levels_and_a_float_state_as_the_model_computes_it():
    model, state = damped_model(), random_state()
    eight = export.rollout(model, state, 5, state_bits=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(eight, export.quantize_state(eight)) and not torch.equal(eight, export.quantize_state(state))
    plain = export.rollout(model, state, 5, deterministic=True)
    assert torch.equal(plain, deterministic_rollout(model, state, 5))
    with pytest.raises(ValueError, match="state_bits"):
        export.rollout(model, state, 5, state_bits=16)


def test_eight_bit_tolerance_finds_values_that_land_on_a_half_level():
    model = nca.NCA()
    with torch.no_grad():
        model.update.weight.zero_()
        model.update.bias.fill_(0.5 / 127)   # from the zero state every value lands exactly on a half level
    tied = export.eight_bit_tolerance(model, torch.zeros(1, 12, 8, 8), 3)
    assert tied["near_ties"] >= 12 * 64 and tied["first_near_tie"] == 1 and tied["exact_steps"] == 0
    assert tied["allowed_fraction"] == 1.0
    with torch.no_grad():
        model.update.bias.fill_(0.25 / 127)  # a quarter level from every boundary: no tie, exact agreement required
    clear = export.eight_bit_tolerance(model, torch.zeros(1, 12, 8, 8), 3)
    assert clear == {"near_ties": 0, "first_near_tie": None, "exact_steps": 3, "allowed_fraction": 0.0}


def eight_bit_case(steps: int = 10):
    """A rule, a state on the 8-bit levels, the steps over which every correct 8-bit implementation must
    agree code for code (before the first near tie) and the tolerance after ``steps`` steps. The
    damped rule is busy: on larger grids a near tie comes within a step or two."""
    rule = export.quantize(damped_model())
    state = export.quantize_state(random_state(size=(16, 20)))
    tolerance = export.eight_bit_tolerance(rule.model(), state, steps)
    assert 5 <= tolerance["exact_steps"] < steps and tolerance["allowed_fraction"] < 0.5, tolerance
    return rule, state, tolerance


def check_8bit_parity(run, rule, state, tolerance, steps: int = 10):
    """``run(rule, state, steps)`` (an 8-bit export) agrees with PyTorch code for code before the first
    near tie and within the tolerance after ``steps``; a rule one code off does not."""
    exact = tolerance["exact_steps"]
    for count, allowed in ((exact, 0.0), (steps, tolerance["allowed_fraction"])):
        reference = export.rollout(rule.model(), state, count, state_bits=8, deterministic=True)
        result = run(rule, state, count)
        assert torch.equal(result, export.quantize_state(result))
        assert export.code_differences(result, reference)["differing_fraction"] <= allowed, count
        wrong = export.rollout(nudged(rule).model(), state, count, state_bits=8, deterministic=True)
        assert export.code_differences(wrong, reference)["differing_fraction"] > allowed + 0.001


@needs_cc
def test_c_program_with_8bit_state_matches_pytorch_code_for_code(tmp_path):
    rule, state, tolerance = eight_bit_case()
    binary = export.compile_c(export.c_source(rule, state_bits=8), tmp_path)
    check_8bit_parity(lambda _, start, steps: export.run_c(binary, start, steps, state_bits=8), rule, state, tolerance)
    grown = export.run_c(binary, None, 40, size=SIZE, update_rate=0.5, seed=1, state_bits=8)
    assert grown.abs().max() > 0 and torch.equal(grown, export.quantize_state(grown))   # the zero seed grows


@needs_cc
def test_c_program_refuses_a_state_file_of_the_other_format(tmp_path):
    rule, state = export.quantize(damped_model()), random_state()
    eight = export.compile_c(export.c_source(rule, state_bits=8), tmp_path / "eight")
    single = export.compile_c(export.c_source(rule), tmp_path / "float")
    with pytest.raises(RuntimeError, match="8-bit values"):
        export.run_c(eight, state, 1, state_bits=32)   # four times too many bytes
    with pytest.raises(RuntimeError, match="32-bit values"):
        export.run_c(single, state, 1, state_bits=8)   # four times too few


def test_8bit_shaders_store_and_decode_the_state_and_other_widths_are_refused():
    rule = export.quantize(damped_model())
    eight, single = export.glsl_buffer_shader(rule, state_bits=8), export.glsl_buffer_shader(rule)
    assert "#define STATE_BITS 8" in eight and "#define STATE_BITS 32" in single
    assert "o = store(o);" in eight and "roundEven" in eight
    assert export.glsl_image_shader(8).startswith("#define STATE_BITS 8\n")
    page = export.webgl_page(rule, size=(16, 16), state_bits=8)
    assert '"stateBits": 8' in page and eight in page
    for generate in (lambda: export.c_source(rule, state_bits=16), lambda: export.glsl_buffer_shader(rule, 16),
                     lambda: export.webgl_page(rule, state_bits=True), lambda: export.glsl_image_shader(4)):
        with pytest.raises(ValueError, match="state_bits"):
            generate()


@needs_chromium
def test_webgl_page_with_8bit_state_matches_pytorch_code_for_code():
    rule, state, tolerance = eight_bit_case()
    check_8bit_parity(lambda rule, start, steps: export.browser_rollout(rule, start, steps, state_bits=8),
                      rule, state, tolerance)
    zero = torch.zeros(1, 12, *SIZE)    # the zero seed: byte 127 in the RGBA8 textures
    grown = export.browser_rollout(rule, zero, 3, state_bits=8)
    assert torch.equal(grown, export.rollout(rule.model(), zero, 3, state_bits=8, deterministic=True))


def test_a_model_with_zero_padding_is_refused_by_every_exporter():
    import dataclasses
    if "padding" not in {field.name for field in dataclasses.fields(nca.Rule)}:
        pytest.skip("helpers.nca has no padding option yet")
    model = nca.NCA(padding="zeros")
    for export_it in (export.quantize, export.check_exportable):
        with pytest.raises(ValueError, match="padding='circular'.*padding='zeros'"):
            export_it(model)
    export.quantize(nca.NCA(padding="circular"))   # the wrap-around rule still exports
