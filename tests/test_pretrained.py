"""The shipped texture models (data/models/texture_*.pt) load, stay in range over long rollouts,
and grow their texture: the VGG-free loss to the target is below the value reported for them."""
import pytest
import torch

from helpers import data, losses, nca
from helpers.tasks import texture

MODEL_FILES = sorted(nca.models_dir().glob("texture_*.pt"))

#: Tolerance on the reported value: the test grows from another random seed than the one measured.
TOLERANCE = 1.5


def test_at_least_three_texture_models_ship():
    assert len(MODEL_FILES) >= 3, f"found {[p.name for p in MODEL_FILES]}"


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_pretrained_model_metadata(path):
    info = nca.load_metadata(path)
    for key in ("command", "settings", "loss_kind", "eval", "date", "target"):
        assert key in info, f"{path.name}: metadata lacks {key!r}"
    assert info["command"].startswith("python -m helpers train texture")
    assert info["settings"]["target"] == info["target"] and info["device"].startswith(("cpu", "cuda", "mps"))
    assert info["parameters"] == 588 and info["target"] in data.list_textures()


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_pretrained_model_grows_its_texture_and_stays_in_range(path):
    info = nca.load_metadata(path)
    model = nca.load_model(path)
    assert nca.count_parameters(model) == 588
    size = info["eval"]["size"]
    target = data.load_texture(info["target"], info["settings"]["target_size"])
    result = texture.quality(model, target, size=size, steps=2000, seed=1, batch=1)
    state = result["state"]
    assert torch.isfinite(state).all() and state.abs().max() <= 1.5
    assert result["loss"] < TOLERANCE * info["eval"]["swd_loss"]
    # and closer to its target than a uniform grey image or the nearest *other* shipped texture is
    measure = losses.SlicedWassersteinLoss(target, projections=256)
    nearest = min(info["eval"]["other_textures"], key=info["eval"]["other_textures"].get)
    for image in (torch.full((1, 3, size, size), 0.5), data.load_texture(nearest, size)[None]):
        assert result["loss"] < measure(image, generator=torch.Generator().manual_seed(1)).item()
