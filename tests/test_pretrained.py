"""The shipped texture models (data/models/texture_*.pt) load, stay in range over long rollouts,
and grow their texture by the texture check of helpers.tasks.texture_quality."""
import pytest
import torch

from helpers import data, models, nca
from helpers.tasks import texture

MODEL_FILES = sorted(models.shipped_dir().glob("texture_*.pt"))

#: The one shipped model that grows its texture right, by the validated check and by eye.
PASSING = {"stripes"}
#: Shipped models that are documented failures (their JSON says the check fails, chapter 03 shows and
#: names them; issue 30 retrains them). These four fail by a clear margin from every start measured...
CLEAR_FAILURES = {"polka_dots", "weave", "voronoi", "zigzag"}
#: ...while these two lie near a threshold of the check (each passed from one of five starts, seeds 5-9,
#: though wrong by eye), so a new start's verdict is not asserted for them: their JSON is.
NEAR_THRESHOLD_FAILURES = {"checkerboard", "bubbles"}


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
    check must pass for the passing model and fail for the clear failures."""
    info = models.load_metadata(path)
    model = models.load(path)
    assert nca.count_parameters(model) == 588
    result = texture.judge(model, info["target"], info["eval"]["image_size"], info["eval"]["size"], steps=2000,
                           seed=1, batch=2)
    state = result["state"]
    assert torch.isfinite(state).all() and state.abs().max() <= 1.5
    assert info["target"] in PASSING | CLEAR_FAILURES | NEAR_THRESHOLD_FAILURES, f"{path.name}: not classified"
    if info["target"] in PASSING:
        assert result["passed"], f"{path.name}: {result['reasons']}"
    elif info["target"] in CLEAR_FAILURES:
        assert not result["passed"], f"{path.name} passed: a documented failure should fail the check"


def test_every_json_says_what_the_check_says_today():
    """Each shipped model's stored verdict was written by `python -m helpers evaluate texture MODEL --write`
    with the validated check: only the stripes pass."""
    for path in MODEL_FILES:
        info = models.load_metadata(path)
        assert info["eval"]["passed"] == (info["target"] in PASSING), f"{path.name}: {info['eval']['reasons']}"
        assert "layout" in info["eval"]["quality"], f"{path.name}: measured with the old check; re-run evaluate --write"
