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


# ---------------------------------------------------------------------------- your own image

def striped_photo(path, height=12, width=20):
    """A non-square image: a blue central square between red side bands (a squashed resize would mix them)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:] = (255, 0, 0)
    left = (width - height) // 2
    pixels[:, left:left + height] = (0, 0, 255)
    Image.fromarray(pixels).save(path)
    return path


def test_a_non_square_image_is_cut_to_its_central_square_not_squashed(tmp_path):
    photo = striped_photo(tmp_path / "wide.png")
    square = data.load_image(photo)
    assert square.shape == (3, 12, 12)
    assert torch.equal(square, torch.tensor([0.0, 0, 1])[:, None, None].expand(3, 12, 12))   # all blue
    resized = data.load_image(photo, size=8)
    assert resized.shape == (3, 8, 8) and resized[0].max() < 0.01                            # no red mixed in
    Image.new("RGB", (12, 20), (0, 255, 0)).save(tmp_path / "tall.png")                  # 12 wide, 20 high
    assert data.load_image(tmp_path / "tall.png").shape == (3, 12, 12)
    assert data.load_image(photo, crop=False).shape == (3, 12, 20)


def test_unreadable_files_get_a_clear_error_naming_them(tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all")
    good = striped_photo(tmp_path / "good.png")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])                 # a truncated PNG
    for path, message in [(tmp_path / "notes.png", "notes.png is not an image file"),
                          (tmp_path / "cut.png", "cut.png is not an image file"),
                          (tmp_path / "missing.png", "no image file at .*missing.png"),
                          (tmp_path, "it is a folder")]:
        with pytest.raises(ValueError, match=message):
            data.load_image(path)


def test_load_target_takes_a_shipped_name_a_path_or_a_file_url(tmp_path):
    assert torch.equal(data.load_target("stripes", 16), data.load_texture("stripes", 16))
    photo = striped_photo(tmp_path / "wide.png")
    assert torch.equal(data.load_target(str(photo)), data.load_image(photo))
    assert data.is_url(photo.as_uri()) and not data.is_url(str(photo)) and not data.is_url("stripes")
    local = data.fetch_image(photo.as_uri(), folder=tmp_path / "downloads")
    assert local.parent == tmp_path / "downloads" and local.read_bytes() == photo.read_bytes()
    with pytest.raises(ValueError, match="neither a shipped texture"):
        data.load_target("no_such_texture")


def test_fetch_image_downloads_over_http_once_and_names_a_failed_url(tmp_path):
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    striped_photo(served / "photo.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/photo.png"
        local = data.fetch_image(url, folder=tmp_path / "cache")
        assert torch.equal(data.load_image(local), data.load_image(served / "photo.png"))
        (served / "photo.png").unlink()                      # a second call reuses the download
        assert data.fetch_image(url, folder=tmp_path / "cache") == local
        with pytest.raises(ValueError, match="could not download .*missing.png"):
            data.fetch_image(f"http://127.0.0.1:{server.server_port}/missing.png", folder=tmp_path / "cache")
        assert not list((tmp_path / "cache").glob("*.part"))  # no half-written file left behind
    finally:
        server.shutdown()
