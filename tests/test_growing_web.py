"""Tests of helpers.growing_web: the growing NCA as a live JavaScript page, checked against PyTorch.

The page's rule runs in headless Chromium in deterministic mode (fire masks from a hash of step, row
and column that Python computes too) and must reproduce ``reference_rollout`` to float32 rounding;
a rule with one weight changed must not. Five Chromium runs in all, each about a second.
"""
import base64
import json
import re
import subprocess

import numpy as np
import pytest
import torch

from helpers import growing_nca, growing_web
from helpers.export import find_chromium, webgl

SIZE = 20
ATOL = 1e-4   # float32 rounding differs (JS sums in float64); measured gaps are about 1e-6


def random_rule(alpha_bias: float | None = None, seed: int = 0) -> growing_nca.GrowingNCA:
    """A small rule (hidden 16) whose last layer is random, so every step changes the state."""
    torch.manual_seed(seed)
    model = growing_nca.GrowingNCA(hidden=16)
    with torch.no_grad():
        torch.nn.init.normal_(model.act.weight, std=0.05)
        torch.nn.init.normal_(model.act.bias, std=0.05)
        if alpha_bias is not None:  # alpha drains away: many cells die, so the alive masks matter
            model.act.bias[growing_nca.ALPHA] = alpha_bias
    return model


def random_state(seed: int = 1) -> torch.Tensor:
    """Every channel random in [0, 1), the colour premultiplied by the alpha."""
    state = torch.rand(1, growing_nca.CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    state[:, :3] *= state[:, 3:4]
    return state


def embedded(page: str, element: str) -> np.ndarray:
    text = re.search(rf'<script id="{element}" type="text/plain">([^<]*)</script>', page).group(1)
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


# --------------------------------------------------------------------------- fire masks

def hashed_uniform(step: int, y: int, x: int) -> float:
    """The hash chain written out for one cell with Python integers (what the page's JavaScript computes)."""
    def mix(h):
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)
    h = mix((step + 0x9E3779B9) & 0xFFFFFFFF)
    h = mix((h + y) & 0xFFFFFFFF)
    h = mix((h + x) & 0xFFFFFFFF)
    return (h >> 8) / 2 ** 24


def test_fire_mask_is_the_scalar_hash_fires_at_the_rate_and_changes_every_step():
    mask = growing_web.fire_mask(7, 64, 48, 0.5)
    assert mask.shape == (1, 1, 64, 48) and mask.dtype == torch.bool
    for y, x in [(0, 0), (5, 40), (63, 47)]:
        assert bool(mask[0, 0, y, x]) == (hashed_uniform(7, y, x) < 0.5)
    assert torch.equal(mask, growing_web.fire_mask(7, 64, 48, 0.5))             # a pure function
    for rate in (0.25, 0.5, 0.9):
        fraction = growing_web.fire_mask(3, 64, 64, rate).float().mean().item()
        assert abs(fraction - rate) < 0.03                                         # 4096 cells: sd < 0.008
    masks = torch.stack([growing_web.fire_mask(t, 32, 32, 0.5) for t in range(20)]).float()
    agreement = (masks[1:] == masks[:-1]).float().mean().item()
    assert 0.4 < agreement < 0.6                                                   # independent from step to step
    assert growing_web.fire_mask(0, 8, 8, 1.0).all()
    with pytest.raises(ValueError, match="fire_rate"):
        growing_web.fire_mask(0, 8, 8, 0.0)
    with pytest.raises(ValueError, match="step"):
        growing_web.fire_mask(-1, 8, 8, 0.5)


def test_reference_rollout_fires_everywhere_at_rate_one_and_keeps_unfired_cells():
    model = random_rule()
    state = random_state()
    everywhere = growing_nca.GrowingNCA(hidden=16, fire_rate=1.0)
    everywhere.load_state_dict(model.state_dict())
    expected = state
    with torch.no_grad():
        for _ in range(3):
            expected = model.step(expected, fire=torch.ones(1, 1, SIZE, SIZE))
    assert torch.equal(growing_web.reference_rollout(everywhere, state, 3), expected)
    one = growing_web.reference_rollout(model, state, 1)
    with torch.no_grad():
        kept = ~growing_web.fire_mask(0, SIZE, SIZE, 0.5)[0, 0] & (one[0] != 0).any(0)
    assert kept.sum() > 50 and torch.equal(one[0][:, kept], state[0][:, kept])
    with torch.no_grad():
        assert not torch.equal(one, model.step(state, fire=torch.ones(1, 1, SIZE, SIZE)))


def test_erase_empties_a_disc_of_cells():
    state = random_state()
    cut = growing_web.erase(state, x=3, y=10, radius=2)
    gone = (cut[0] == 0).all(0)
    assert gone.sum() == 13 and gone[10, 3] and gone[10, 5] and not gone[10, 6] and not gone[12, 4]
    assert torch.equal(cut[0][:, ~gone], state[0][:, ~gone])


# --------------------------------------------------------------------------- the page

def test_page_has_the_canvas_eraser_controls_and_the_embedded_rule_and_state():
    model = random_rule()
    state = random_state()
    page = growing_web.growing_page(model, state, zoom=5)
    assert '<canvas id="view" width="20" height="20" style="width:100px;height:100px"' in page
    for needle in ['addEventListener("pointermove"', "function erase(", 'id="radius"', 'id="play"', 'id="reset"',
                   'id="info"', "requestAnimationFrame", "putImageData", "Math.random()", "Math.imul"]:
        assert needle in page, needle
    assert "http://" not in page and "https://" not in page and not growing_web.PLACEHOLDER.search(page)
    weights = embedded(page, "weights")
    assert weights.size == 48 * 9 + 16 * 48 + 16 + 16 * 16 + 16
    assert np.array_equal(weights, growing_web.rule_vector(model))
    assert np.array_equal(weights[48 * 9:48 * 9 + 16 * 48], model.sense.weight.detach().reshape(-1).numpy())
    assert np.array_equal(embedded(page, "initial-state"), state[0].permute(1, 2, 0).reshape(-1).numpy())
    config = json.loads(re.search(r'<script id="config" type="application/json">([^<]*)</script>', page).group(1))
    assert config["fireRate"] == 0.5 and config["deterministic"] is False and config["testSteps"] == 0
    default = growing_web.growing_page(model)                     # the seed of the chapter's 72x72 grid
    seed_cell = growing_nca.seed_state(1, 72)[0].permute(1, 2, 0).reshape(-1)
    assert np.array_equal(embedded(default, "initial-state"), seed_cell)


def test_back_to_the_start_is_offered_only_where_it_differs_from_reset_to_seed():
    model = random_rule()

    def config(page):
        return json.loads(re.search(r'<script id="config" type="application/json">([^<]*)</script>', page).group(1))

    assert 'id="restart"' in growing_web.growing_page(model, random_state())
    assert "restart.hidden = !initialText || config.startsAtSeed" in growing_web.growing_page(model)
    assert config(growing_web.growing_page(model))["startsAtSeed"] is True                       # the chapter's page
    assert config(growing_web.growing_page(model, growing_nca.seed_state(1, (SIZE, SIZE + 4))))["startsAtSeed"] is True
    assert config(growing_web.growing_page(model, random_state()))["startsAtSeed"] is False
    grown = growing_web.reference_rollout(model, growing_nca.seed_state(1, SIZE), 3)
    assert config(growing_web.growing_page(model, grown))["startsAtSeed"] is False


def test_bad_inputs_are_refused_with_clear_errors(monkeypatch):
    model = random_rule()
    with pytest.raises(ValueError, match="GrowingNCA"):
        growing_web.growing_page(torch.nn.Conv2d(16, 16, 1))
    with pytest.raises(ValueError, match=r"\[1, 16, height, width\]"):
        growing_web.growing_page(model, torch.zeros(1, 12, 8, 8))
    with pytest.raises(ValueError, match=r"\[1, 16, height, width\]"):
        growing_web.browser_rollout(model, torch.zeros(16, 8, 8), 3)
    with pytest.raises(ValueError, match=r"\[1, 16, height, width\]"):
        growing_web.browser_rollout(model, torch.zeros(2, 16, 8, 8), 3)
    bad = random_state()
    bad[0, 5, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        growing_web.growing_page(model, bad)
    with pytest.raises(ValueError, match="zoom"):
        growing_web.growing_page(model, zoom=0)
    with pytest.raises(ValueError, match="radius"):
        growing_web.growing_page(model, random_state(), radius=50)
    with pytest.raises(ValueError, match="steps"):
        growing_web.browser_rollout(model, random_state(), 0)
    with pytest.raises(RuntimeError, match="did not return a state"):
        growing_web.browser_rollout(model, random_state(), 2, browser="false")    # a 'browser' that fails
    monkeypatch.setattr(webgl, "find_chromium", lambda: None)     # the one lookup, shared with chapter 04
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        growing_web.browser_rollout(model, random_state(), 2)


def test_damage_explorer_renders_its_default_view(monkeypatch):
    """On ipywidgets 8 and on Colab's 7.7.1 alike (7 computes an ``interactive`` only when displayed: the
    explorer computes its first view itself, and a redraw of the same setting runs no steps again)."""
    pytest.importorskip("ipywidgets")
    import matplotlib.pyplot as plt

    model = random_rule()
    grown = growing_web.reference_rollout(model, growing_nca.seed_state(1, SIZE), 10)
    rollouts = []
    original = growing_web.reference_rollout
    monkeypatch.setattr(growing_web, "reference_rollout", lambda *args: rollouts.append(args[2]) or original(*args))
    explorer = growing_web.damage_explorer(model, grown, max_steps=20, steps=5)
    assert explorer.result is not None, "the default view failed"     # ipywidgets logs callback errors only
    damaged, after = explorer.result["damaged"], explorer.result["after"]
    assert (damaged[0, :, SIZE // 2, SIZE // 2] == 0).all() and not torch.equal(damaged, grown)
    assert torch.equal(after, original(model, damaged, 5))
    assert len(explorer.children) == 5                                  # four sliders and the output
    explorer.update()                                                   # what displaying it does on ipywidgets 7
    assert rollouts == [5] and explorer.result["after"] is after
    explorer.children[3].value = 7                                      # the steps slider
    assert rollouts == [5, 7] and torch.equal(explorer.result["after"], original(model, damaged, 7))
    plt.close("all")


# --------------------------------------------------------------------------- headless Chromium

needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="no Chromium on this machine (apt-get install chromium); CI installs it")


@needs_chromium
def test_page_grows_the_seed_as_pytorch_does():
    model = random_rule()
    seed = growing_nca.seed_state(1, SIZE)
    reference = growing_web.reference_rollout(model, seed, 30)
    result = growing_web.browser_rollout(model, seed, 30)
    assert result.shape == (1, 16, SIZE, SIZE) and result.dtype == torch.float32
    assert (reference != 0).any(1).sum() > 100                           # it grew
    gap = (result - reference).abs().max().item()
    assert gap <= ATOL, f"browser and PyTorch differ by {gap:.3g}"


@needs_chromium
def test_page_matches_pytorch_from_a_random_state_with_dying_cells_and_a_changed_weight_does_not():
    model = random_rule(alpha_bias=-0.05)
    state = random_state()
    reference = growing_web.reference_rollout(model, state, 30)
    result = growing_web.browser_rollout(model, state, 30)
    gap = (result - reference).abs().max().item()
    assert gap <= ATOL, f"browser and PyTorch differ by {gap:.3g}"
    dead = (result[0] == 0).all(0)
    assert dead.sum() > 50 and torch.equal(dead, (reference[0] == 0).all(0))  # the alive masks zeroed the same cells
    assert (reference - state).abs().max() > 0.5                               # and the others changed
    with torch.no_grad():  # one weight, from the most active hidden unit (a silent one would change nothing)
        hidden = torch.relu(model.sense(growing_nca.perceive(state, model.filters)))
        model.act.weight[0, hidden.sum((0, 2, 3)).argmax()] += 0.1
    wrong = growing_web.browser_rollout(model, state, 30)
    assert (wrong - reference).abs().max().item() > 10 * ATOL


@needs_chromium
def test_the_live_page_shows_back_to_the_start_only_away_from_the_seed(tmp_path):
    """The interactive page as loaded in Chromium: from the seed one reset button, from another state two
    (and in both the animation runs: the info line counts steps)."""
    model = random_rule()
    for state, hidden in [(growing_nca.seed_state(1, SIZE), True), (random_state(), False)]:
        page = tmp_path / "page.html"
        page.write_text(growing_web.growing_page(model, state), encoding="utf-8")
        dom = subprocess.run([find_chromium(), *webgl.CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                              "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
        button = re.search(r'<button id="restart"[^>]*>', dom).group(0)
        assert ("hidden" in button) == hidden, button
        assert re.search(r'<span id="info">step \d+', dom) and '<pre id="result"></pre>' in dom   # no error
