"""helpers.data and data/: the shipped textures, their generator and their loader."""
import http.server
import importlib.util
import io
import struct
import threading
import time
import zlib

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


def test_held_out_textures_are_what_the_script_makes_and_not_course_textures():
    """The held-out textures (never trained on while the recipe was chosen) ship beside, not among,
    the course textures, so the check judges them as a learner's own image."""
    generator = load_generator()
    assert not set(generator.HELD_OUT) & set(data.list_textures())
    readme = (env.data_dir() / "README.md").read_text()
    for name, draw in generator.HELD_OUT.items():
        shipped = np.asarray(Image.open(generator.HELD_OUT_DIR / f"{name}.png").convert("RGB"))
        assert np.array_equal(shipped, np.clip(np.round(draw()), 0, 255).astype(np.uint8)), name
        assert shipped.shape == (128, 128, 3) and f"textures_held_out/{name}.png" in readme


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
    assert data.fetch_image(photo.as_uri(), folder=tmp_path / "downloads") == photo     # checked, not copied
    assert not (tmp_path / "downloads").exists()
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


# ---------------------------------------------------------------------------- downloads that lie or trickle

def noise_png(side=64) -> bytes:
    """A PNG of random pixels: about 12 KB that no compression shrinks."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


class LyingHandler(http.server.BaseHTTPRequestHandler):
    """A server that misbehaves as asked by the path: honest, cut short, endless, trickling, or not an image."""

    def log_message(self, *args):
        pass

    def send(self, status=200, length=None):
        self.send_response(status)
        self.send_header("Content-Type", "image/png")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_GET(self):
        png = noise_png()
        try:
            if self.path == "/honest.png":
                self.send(length=len(png))
                self.wfile.write(png)
            elif self.path == "/huge.png":               # announces 2 GB (and would send 4 MB)
                self.send(length=2 * 10**9)
                self.wfile.write(bytes(4 * 2**20))
            elif self.path == "/cut.png":                # announces the whole file, sends half, closes
                self.send(length=len(png))
                self.wfile.write(png[:len(png) // 2])
            elif self.path == "/endless.png":            # no length, zeros until the client gives up
                self.send()
                while True:
                    self.wfile.write(bytes(65536))
            elif self.path == "/trickle.png":            # one byte every 50 ms
                self.send(length=len(png))
                for byte in png:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            elif self.path == "/page.png":               # a web page, honestly sized
                page = b"<html><body>not an image</body></html>"
                self.send(length=len(page))
                self.wfile.write(page)
            else:
                self.send(status=404, length=0)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
            pass


@pytest.fixture
def lying_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LyingHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path, options, message", [
    ("/huge.png", {}, "announces 2000000000 bytes, more than the limit"),
    ("/cut.png", {}, r"was cut short: \d+ of the \d+ bytes it announced"),
    ("/endless.png", {"max_bytes": 200_000}, "sent more than the limit of 200000 bytes"),
    ("/trickle.png", {"timeout": 1}, r"did not finish within 1 s"),
    ("/page.png", {}, "is not an image Pillow can read"),
    ("/missing.png", {}, "could not download .*404"),
])
def test_a_download_that_lies_trickles_or_is_no_image_is_refused_and_nothing_is_cached(
        lying_server, tmp_path, path, options, message):
    url = lying_server + path
    started = time.monotonic()
    with pytest.raises(ValueError, match=message) as error:
        data.fetch_image(url, folder=tmp_path / "cache", **options)
    assert url in str(error.value)                                   # every error names the URL
    assert time.monotonic() - started < 10                           # the trickle met its deadline
    assert list((tmp_path / "cache").iterdir()) == []                # no final name, no .part left


def test_an_honest_download_is_cached_once_under_its_final_name(lying_server, tmp_path):
    url = lying_server + "/honest.png"
    local = data.fetch_image(url, folder=tmp_path / "cache")
    assert local.read_bytes() == noise_png() and list((tmp_path / "cache").iterdir()) == [local]
    assert data.fetch_image(url, folder=tmp_path / "cache", timeout=0.001) == local  # reused, not fetched again


def test_file_urls_are_limited_to_image_files_and_nothing_is_copied(tmp_path):
    folder = tmp_path / "cache"
    notes = tmp_path / "notes.txt"
    notes.write_text("secret")
    fake = tmp_path / "fake.png"
    fake.write_text("not a png")
    for url, message in [("file:///etc/passwd", "does not name an image file"),
                         (notes.as_uri(), "does not name an image file"),
                         ("file:///dev/zero", "does not name an image file"),
                         (fake.as_uri(), "is not an image Pillow can read"),
                         ((tmp_path / "missing.png").as_uri(), "no regular file")]:
        with pytest.raises(ValueError, match=message) as error:
            data.fetch_image(url, folder=folder)
        assert url in str(error.value)
    photo = striped_photo(tmp_path / "photo.png")
    with pytest.raises(ValueError, match="more than the limit of 10"):
        data.fetch_image(photo.as_uri(), folder=folder, max_bytes=10)
    assert not folder.exists()                                        # nothing was ever copied


@pytest.mark.parametrize("options, message", [({"timeout": 0}, "timeout"), ({"timeout": float("nan")}, "timeout"),
                                              ({"max_bytes": 0}, "max_bytes"), ({"max_bytes": 2.5}, "max_bytes")])
def test_fetch_image_refuses_a_bad_timeout_or_size_cap(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        data.fetch_image("https://example.invalid/a.png", folder=tmp_path, **options)


# ---------------------------------------------------------------------------- emoji files of every kind

def png_16bit_rgba(pixels: np.ndarray) -> bytes:
    """A 16-bit RGBA PNG of ``pixels`` [H, W, 4] uint16, written by hand (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)     # filter 0 on every row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)                 # 16 bits, RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_a_16_bit_rgba_emoji_is_scaled_not_saturated(tmp_path):
    pixels = np.zeros((8, 8, 4), np.uint16)
    pixels[..., 0] = np.linspace(0, 65535, 64).reshape(8, 8).round()
    pixels[..., 3] = 65535
    (tmp_path / "deep.png").write_bytes(png_16bit_rgba(pixels))
    emoji = data.load_emoji(tmp_path / "deep.png")
    assert emoji.shape == (4, 8, 8) and torch.all(emoji[3] == 1.0)
    expected = torch.from_numpy(pixels[..., 0] / 65535.0).float()
    assert (emoji[0] - expected).abs().max() <= 1 / 255 + 1e-6                 # was: 99.6 % read as white


@pytest.mark.parametrize("mode, suffix", [("RGB", "png"), ("RGB", "jpg"), ("L", "png"), ("I;16", "png")])
def test_an_image_without_transparency_is_refused_not_trained_as_an_opaque_square(tmp_path, mode, suffix):
    path = tmp_path / f"photo.{suffix}"
    picture = Image.new("RGB", (12, 12), (200, 40, 40))
    if mode == "I;16":
        picture = Image.fromarray(np.full((12, 12), 40000, np.uint16))
    elif mode != "RGB":
        picture = picture.convert(mode)
    picture.save(path)
    with pytest.raises(ValueError, match=r"photo\.\w+ has no transparency .*PNG with a transparent background"):
        data.load_emoji(path)


def test_a_colour_key_or_palette_transparency_counts_as_alpha(tmp_path):
    picture = Image.new("RGB", (8, 8), (0, 255, 0))
    picture.putpixel((3, 3), (255, 0, 0))
    picture.save(tmp_path / "keyed.png", transparency=(0, 255, 0))        # green means transparent
    emoji = data.load_emoji(tmp_path / "keyed.png")
    assert emoji[3].sum() == 1.0 and emoji[:, 3, 3].tolist() == [1.0, 0.0, 0.0, 1.0]


def test_tiny_or_fully_transparent_emoji_are_refused(tmp_path):
    Image.new("RGBA", (1, 1), (255, 0, 0, 255)).save(tmp_path / "dot.png")
    Image.new("RGBA", (3, 9), (255, 0, 0, 255)).save(tmp_path / "thin.png")
    Image.new("RGBA", (16, 16), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    with pytest.raises(ValueError, match="dot.png is 1x1 pixels: an emoji needs at least 4x4"):
        data.load_emoji(tmp_path / "dot.png")
    with pytest.raises(ValueError, match="3x9 pixels"):
        data.load_emoji(tmp_path / "thin.png")
    with pytest.raises(ValueError, match="clear.png is fully transparent"):
        data.load_emoji(tmp_path / "clear.png")


def test_a_non_square_emoji_is_padded_with_transparent_cells_not_squashed(tmp_path):
    wide = np.zeros((10, 40, 4), np.uint8)
    wide[:, :, 0] = 255
    wide[:, :, 3] = 255                                      # an opaque red bar, 40 wide and 10 high
    Image.fromarray(wide, "RGBA").save(tmp_path / "bar.png")
    emoji = data.load_emoji(tmp_path / "bar.png")
    assert emoji.shape == (4, 40, 40)
    opaque = emoji[3] > 0
    assert opaque[15:25].all() and not opaque[:15].any() and not opaque[25:].any()   # centred, 10 rows kept
    resized = data.load_emoji(tmp_path / "bar.png", size=20)
    rows = (resized[3] > 0.5).any(1).nonzero().flatten()
    assert resized.shape == (4, 20, 20) and 4 <= len(rows) <= 5 and abs(rows.float().mean() - 9.5) < 0.6
    assert (resized[3, 9:11] > 0.5).all()                    # still across the whole width: 4x as wide as high
