"""helpers.data and data/: the shipped textures, their generator and their loader."""
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import data, env


def load_generator():
    spec = importlib.util.spec_from_file_location("make_textures", env.REPO_ROOT / "data" / "make_textures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_at_least_eight_textures_are_shipped():
    assert len(data.list_textures()) >= 8


def test_every_texture_is_documented_in_data_readme():
    readme = (env.data_dir() / "README.md").read_text()
    for name in data.list_textures():
        assert f"{name}.png" in readme


def test_shipped_files_are_exactly_what_the_script_makes():
    generator = load_generator()
    assert sorted(generator.TEXTURES) == data.list_textures()
    for name in generator.TEXTURES:
        shipped = np.asarray(Image.open(data.texture_path(name)).convert("RGB"))
        assert np.array_equal(shipped, generator.render(name)), f"{name}.png differs from make_textures.py"


def test_textures_are_colourful_and_periodic_sized():
    generator = load_generator()
    for name in generator.TEXTURES:
        image = generator.render(name).astype(float)
        assert image.shape == (128, 128, 3)
        assert image.std(axis=(0, 1)).max() > 30, f"{name} is nearly flat"
        colours = len(np.unique(image.reshape(-1, 3), axis=0))
        assert colours >= 2


def test_load_texture_returns_float_chw_in_unit_range():
    texture = data.load_texture("checkerboard")
    assert texture.shape == (3, 128, 128) and texture.dtype == torch.float32
    assert 0.0 <= texture.min() and texture.max() <= 1.0
    raw = np.asarray(Image.open(data.texture_path("checkerboard")).convert("RGB"))
    assert torch.allclose(texture.permute(1, 2, 0), torch.from_numpy(raw / 255.0).float())


def test_load_texture_resizes():
    small = data.load_texture("stripes", size=64)
    assert small.shape == (3, 64, 64)
    full = data.load_texture("stripes")
    # shrinking by 2 with a box filter averages 2x2 blocks
    expected = full.reshape(3, 64, 2, 64, 2).mean(dim=(2, 4))
    assert (small - expected).abs().max() < 2.5 / 255


def test_unknown_texture_lists_the_available_ones():
    with pytest.raises(KeyError, match="no texture named 'nope'.*checkerboard"):
        data.load_texture("nope")


def test_bad_size_is_rejected():
    with pytest.raises(ValueError, match="size"):
        data.load_texture("stripes", size=3)


# ------------------------------------------------- other image files: bit depth, transparency

@pytest.fixture
def texture_folder(tmp_path, monkeypatch):
    """Textures are read from tmp_path, so that load_texture sees the test's own files."""
    monkeypatch.setattr(data, "texture_dir", lambda: tmp_path)
    return tmp_path


def test_16_bit_greyscale_is_scaled_by_65535_not_clipped_to_white(texture_folder):
    ramp = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(texture_folder / "deep.png")
    assert Image.open(texture_folder / "deep.png").mode in ("I;16", "I")
    texture = data.load_texture("deep")
    assert texture.shape == (3, 16, 16)
    expected = torch.from_numpy(ramp / 65535.0).float()
    for channel in texture:
        assert torch.allclose(channel, expected, atol=1e-6)
    assert data.load_texture("deep", size=8).mean() == pytest.approx(0.5, abs=0.01)  # resizing keeps the range


def test_transparent_pixels_are_composited_on_the_background(texture_folder):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255                  # hidden colour: red everywhere
    rgba[:4, ..., 3] = 0                # top half fully transparent
    rgba[4:, ..., 3] = 255              # bottom half opaque
    rgba[4:, :4, 3] = 128               # bottom-left quarter half transparent
    Image.fromarray(rgba, "RGBA").save(texture_folder / "glass.png")
    texture = data.load_texture("glass")
    assert torch.allclose(texture[:, :4], torch.ones(3, 4, 8))                      # white, not red
    assert torch.allclose(texture[:, 4:, 4:], torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 4, 4))
    half = texture[:, 4:, :4].mean(dim=(1, 2))
    assert torch.allclose(half, torch.tensor([1.0, 127 / 255, 127 / 255]), atol=1.5 / 255)
    black = data.load_image(texture_folder / "glass.png", background=0.0)
    assert black[:, :4].max() == 0.0
    blue = data.load_image(texture_folder / "glass.png", background=(0.0, 0.0, 1.0))
    assert torch.allclose(blue[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="background"):
        data.load_image(texture_folder / "glass.png", background=2.0)


def test_palette_transparency_is_composited_too(texture_folder):
    picture = Image.new("P", (8, 8), 0)
    picture.putpalette([0, 255, 0] * 256)  # every index green...
    picture.save(texture_folder / "sprite.png", transparency=0)  # ...and index 0 transparent
    assert torch.allclose(data.load_texture("sprite"), torch.ones(3, 8, 8))
