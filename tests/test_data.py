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
