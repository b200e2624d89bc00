"""The shipped texture models (data/models/texture_*.pt) load, stay in range over long rollouts,
and grow their texture by the texture check of helpers.tasks.texture_quality."""
import pytest
import torch

from helpers import data, models, nca
from helpers.tasks import texture

MODEL_FILES = sorted(models.shipped_dir().glob("texture_*.pt"))

#: Shipped models that are documented failures: kept to show what the 588-parameter rule could not
#: grow at the budget the course can afford (their JSON says the check fails, and chapter 03 says why).
KNOWN_FAILURES = {"bubbles", "zigzag"}


def test_at_least_three_texture_models_ship():
    assert len(MODEL_FILES) >= 3, f"found {[p.name for p in MODEL_FILES]}"


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_pretrained_model_metadata(path):
    info = models.load_metadata(path)
    for key in ("command", "settings", "loss_kind", "eval", "date", "target"):
        assert key in info, f"{path.name}: metadata lacks {key!r}"
    assert info["command"].startswith("python -m helpers train texture")
    assert info["settings"]["target"] == info["target"] and info["device"].startswith(("cpu", "cuda", "mps"))
    assert info["parameters"] == 588 and info["target"] in data.list_textures()


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_pretrained_model_grows_its_texture_and_stays_in_range(path):
    """Re-measured here, from another seed than the training command's measurement: the texture
    check must pass unless the model is a documented failure, and fail if it is one."""
    info = models.load_metadata(path)
    model = models.load(path)
    assert nca.count_parameters(model) == 588
    result = texture.judge(model, info["target"], info["eval"]["image_size"], info["eval"]["size"], steps=2000,
                           seed=1, batch=2)
    state = result["state"]
    assert torch.isfinite(state).all() and state.abs().max() <= 1.5
    if info["target"] in KNOWN_FAILURES:
        assert not result["passed"]
    else:
        assert result["passed"], f"{path.name}: {result['reasons']}"


def test_five_textures_pass_three_of_them_multi_colour_and_their_json_says_so():
    """Polka dots (both dot colours), stripes, Voronoi, checkerboard and weave grow right; at least three
    of them have three or more colours. (Bubbles and zigzag ship as measured failures.)"""
    passing = ("polka_dots", "stripes", "voronoi", "checkerboard", "weave")
    colours = {}
    for name in passing:
        info = models.load_metadata(models.shipped_dir() / f"texture_{name}.pt")
        assert info["eval"]["passed"], name
        colours[name] = len(info["eval"]["quality"]["palette"]["colours"])
    assert sum(count >= 3 for count in colours.values()) >= 3, colours
