"""helpers.display: image conversion, grids, zoom, videos, dashboard, weight views."""
import matplotlib

matplotlib.use("Agg")

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import PIL.Image
import PIL.ImageSequence
import pytest
import torch

from helpers import display

# ------------------------------------------------------------------ as_image_array

def test_float_chw_tensor_becomes_hwc():
    image = torch.rand(3, 5, 7)
    array = display.as_image_array(image)
    assert array.shape == (5, 7, 3) and array.dtype == np.float32
    assert np.allclose(array, image.permute(1, 2, 0).numpy())


def test_uint8_hwc_array_is_scaled_to_unit_range():
    image = np.array([[[0, 128, 255]]], dtype=np.uint8)
    assert np.allclose(display.as_image_array(image), [[[0.0, 128 / 255, 1.0]]])


def test_batched_bchw_and_bhwc():
    assert display.as_image_array(torch.rand(2, 4, 6, 6)).shape == (2, 6, 6, 4)
    assert display.as_image_array(np.random.rand(2, 6, 6, 1)).shape == (2, 6, 6, 1)


def test_grey_2d_gets_a_channel_axis():
    assert display.as_image_array(np.zeros((4, 5))).shape == (4, 5, 1)


def test_floats_are_clipped():
    array = display.as_image_array(np.array([[[-0.5, 0.5, 1.5]]]))
    assert array.min() == 0.0 and array.max() == 1.0


def test_ambiguous_layout_follows_the_library_convention():
    # 3 x 4 x 3 could be CHW or HWC: torch reads CHW, numpy reads HWC
    assert display.as_image_array(torch.rand(3, 4, 3)).shape == (4, 3, 3)
    assert display.as_image_array(np.random.rand(3, 4, 3)).shape == (3, 4, 3)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((5, 6, 5)), "no axis of size 1, 3 or 4"),
    (np.zeros((2, 2, 2, 2, 3)), "5 dimensions"),
    (np.zeros(4), "1 dimensions"),
    (np.zeros((4, 4, 3), dtype=np.int64), "unsupported dtype int64"),
    (np.array([[[np.nan, 0, 0]]]), "NaN"),
    ([[0, 1]], "got list"),
])
def test_bad_images_raise_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message) as error:
        display.as_image_array(bad)
    assert "accepted" in str(error.value) or "NaN" in message


def test_to_uint8_and_rgb_array():
    assert display.to_uint8(np.full((2, 2, 3), 0.5)).max() == 128
    rgba = np.zeros((1, 1, 4), np.float32)
    rgba[..., 0], rgba[..., 3] = 1.0, 0.5  # half-transparent red over white
    assert np.allclose(display.rgb_array(rgba), [[[1.0, 0.5, 0.5]]])
    assert display.rgb_array(np.full((2, 2), 0.25)).shape == (2, 2, 3)


# ----------------------------------------- refusals instead of silently mangled pictures

def photo_0_255(dtype=np.float32):
    return (np.arange(4 * 4 * 3).reshape(4, 4, 3) * 5).astype(dtype)  # 0..235, as float


@pytest.mark.parametrize("convert", [display.as_image_array, display.to_uint8, display.rgb_array,
                                     display.tile, display.show])
def test_float_0_255_is_refused_not_clipped_to_white(convert):
    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\].*divide by 255"):
        convert(photo_0_255())
    with pytest.raises(ValueError, match="divide by 255"):
        convert(torch.from_numpy(photo_0_255()).permute(2, 0, 1))
    convert(photo_0_255(np.uint8))  # the same values as uint8 are fine


def test_float_limits_are_half_a_unit_either_side():
    display.as_image_array(np.array([[[-0.5, 0.5, 1.5]]]))  # overshoot is clipped (see above)
    for bad in (1.51, -0.51):
        with pytest.raises(ValueError, match="must be in"):
            display.as_image_array(np.array([[[0.0, 0.5, bad]]]))


def test_video_refuses_a_float_0_255_frame(tmp_path):
    video = display.VideoWriter(tmp_path / "v.gif")
    with pytest.raises(ValueError, match="divide by 255"):
        video.add(photo_0_255())
    assert video.frames == []


@pytest.mark.parametrize("shape", [(1, 12, 8, 8), (2, 16, 5, 7), (12, 8, 8)])
def test_an_nca_state_is_refused_with_a_pointer_to_to_rgb(shape):
    with pytest.raises(ValueError, match=r"helpers\.nca\.to_rgb"):
        display.show(torch.rand(shape))


def test_bhwc_batches_are_still_fine():
    assert display.as_image_array(np.random.rand(1, 12, 8, 3)).shape == (1, 12, 8, 3)
    assert display.as_image_array(torch.rand(4, 24, 24, 3)).shape == (4, 24, 24, 3)  # as in chapter 03
    assert display.as_image_array(torch.rand(1, 8, 12, 3).permute(0, 3, 1, 2)).shape == (1, 8, 12, 3)


# -------------------------------------------------------------------- zoom and tile

def test_zoom_repeats_pixels():
    image = np.arange(4, dtype=np.float32).reshape(2, 2, 1) / 4
    zoomed = display.zoom(image, 3)
    assert zoomed.shape == (6, 6, 1)
    assert np.all(zoomed[:3, :3] == image[0, 0]) and np.all(zoomed[3:, 3:] == image[1, 1])
    assert display.zoom(torch.rand(2, 3, 4, 4), 2).shape == (2, 8, 8, 3)


@pytest.mark.parametrize("factor", [0, -1, 1.5])
def test_zoom_rejects_non_positive_integers(factor):
    with pytest.raises(ValueError, match="positive integer"):
        display.zoom(np.zeros((2, 2, 3)), factor)


def test_tile_places_images_in_a_grid():
    batch = np.stack([np.full((2, 3, 3), value, np.float32) for value in (0.1, 0.2, 0.3)])
    grid = display.tile(batch, columns=2, padding=1, pad_value=1.0)
    assert grid.shape == (2 * 2 + 1, 2 * 3 + 1, 3)
    assert np.allclose(grid[0:2, 0:3], 0.1) and np.allclose(grid[0:2, 4:7], 0.2)
    assert np.allclose(grid[3:5, 0:3], 0.3)
    assert np.allclose(grid[2, :], 1.0) and np.allclose(grid[3:5, 4:7], 1.0)  # padding and empty slot


def test_tile_defaults_to_a_square_grid_and_accepts_lists():
    grid = display.tile([torch.rand(3, 4, 4) for _ in range(4)], padding=0)
    assert grid.shape == (8, 8, 3)


def test_tile_rejects_mixed_shapes():
    with pytest.raises(ValueError, match="one shape"):
        display.tile([np.zeros((4, 4, 3)), np.zeros((5, 4, 3))])


def test_show_draws_pixels():
    image = np.zeros((4, 4, 3), np.float32)
    image[0, 0] = 1.0
    ax = display.show(image, title="t", zoom_factor=2)
    drawn = ax.get_images()[0].get_array()
    assert drawn.shape == (8, 8, 3) and drawn[0, 0, 0] == 1.0 and ax.get_title() == "t"


def test_show_tiles_a_batch():
    ax = display.show(torch.rand(4, 3, 5, 5), columns=4)
    assert ax.get_images()[0].get_array().shape == (5, 4 * 5 + 3 * 2, 3)


# ---------------------------------------------------------------------- weight view

def test_weight_image_colours_by_sign():
    image = display.weight_image(torch.tensor([[-2.0, 0.0, 1.0]]))
    assert np.allclose(image[0, 0], [1.0, 0.0, 0.0])  # most negative: full red
    assert np.allclose(image[0, 1], [0.0, 0.0, 0.0])
    assert np.allclose(image[0, 2], [0.0, 0.5, 0.0])  # half the largest magnitude, green


def test_weight_image_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D matrix"):
        display.weight_image(torch.zeros(12, 48, 1, 1))


def test_show_weights_labels_axes():
    ax = display.show_weights(np.array([[1.0, -1.0]]), title="w")
    assert "red < 0 < green" in ax.get_xlabel() and ax.get_title() == "w"


# ----------------------------------------------------------------------------- video

def moving_square_frames(count=6, size=16):
    frames = []
    for step in range(count):
        frame = np.zeros((size, size, 3), np.float32)
        frame[4:10, step:step + 6, 0] = 1.0
        frames.append(frame)
    return frames


def decoded_frames(path) -> np.ndarray:
    """A video written by ``display.VideoWriter``, decoded into uint8 frames [T, H, W, 3]."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        with PIL.Image.open(path) as gif:
            return np.stack([np.asarray(frame.convert("RGB")) for frame in PIL.ImageSequence.Iterator(gif)])
    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return np.stack([np.frombuffer(chunk, np.uint8).reshape(height, width, 3) for chunk in reader])


@pytest.mark.parametrize("format", ["mp4", "gif"])
def test_video_is_written_and_decodable(tmp_path, format):
    frames = moving_square_frames()
    with display.VideoWriter(tmp_path / f"clip.{format}", fps=10) as video:
        for frame in frames:
            video.add(frame)
    decoded = decoded_frames(video.path)
    assert decoded.shape == (len(frames), 16, 16, 3)
    # the red square moves: compare its mean column in first and last frame
    first_columns = np.nonzero(decoded[0, 6, :, 0] > 128)[0]
    last_columns = np.nonzero(decoded[-1, 6, :, 0] > 128)[0]
    assert last_columns.mean() - first_columns.mean() == pytest.approx(len(frames) - 1, abs=1)


def test_video_pads_odd_sizes_for_mp4_and_zooms(tmp_path):
    with display.VideoWriter(tmp_path / "odd.mp4", zoom_factor=3) as video:
        for _ in range(3):
            video.add(torch.rand(3, 5, 7))
    assert decoded_frames(video.path).shape[1:] == (16, 22, 3)  # 15x21 padded to even


def test_video_format_defaults_to_mp4_with_ffmpeg_else_gif(monkeypatch, tmp_path):
    assert display.VideoWriter().format == "mp4"
    monkeypatch.setattr(display, "has_ffmpeg", lambda: False)
    video = display.VideoWriter()
    assert video.format == "gif"
    with pytest.raises(ValueError, match="imageio-ffmpeg"):
        display.VideoWriter(format="mp4")


def test_video_html_embeds_the_file(tmp_path):
    video = display.VideoWriter(tmp_path / "a.gif")
    video.add(np.zeros((4, 4, 3)))
    html = video.to_html()
    assert html.startswith("<img") and "data:image/gif;base64," in html
    video_mp4 = display.VideoWriter(tmp_path / "a.mp4")
    video_mp4.add(np.zeros((4, 4, 3)))
    assert "data:video/mp4;base64," in video_mp4._repr_html_()


def test_video_errors(tmp_path):
    with pytest.raises(ValueError, match="'mp4' or 'gif'"):
        display.VideoWriter(format="avi")
    video = display.VideoWriter(tmp_path / "x.gif")
    with pytest.raises(ValueError, match="no frames"):
        video.close()
    video.add(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="differs from the first frame"):
        video.add(np.zeros((5, 4, 3)))
    video.close()
    with pytest.raises(ValueError, match="closed"):
        video.add(np.zeros((4, 4, 3)))


# ------------------------------------------------------------------------- dashboard

def test_dashboard_records_and_throttles():
    board = display.Dashboard(every_seconds=3600)
    assert board.update(0, 1.0) is True        # the first update always draws
    assert board.update(1, 0.5) is False       # then only every hour...
    assert board.update(2, 0.25, force=True)   # ...or when forced
    assert board.steps == [0, 1, 2] and board.losses == [1.0, 0.5, 0.25] and board.redraws == 2


def test_dashboard_rejects_a_diverged_loss():
    with pytest.raises(ValueError, match="diverged"):
        display.Dashboard().update(3, float("nan"))


def test_dashboard_draws_in_place_in_a_notebook(monkeypatch):
    shown = []

    class Handle:
        def update(self, figure):
            shown.append(("update", figure))

    def fake_display(figure, display_id=False):
        shown.append(("display", figure))
        return Handle()

    import IPython.display

    monkeypatch.setattr(display, "_in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    board = display.Dashboard(every_seconds=0)
    board.update(0, 1.0, images=torch.rand(2, 3, 8, 8), weights=torch.randn(12, 48))
    board.update(1, 0.5, images=torch.rand(2, 3, 8, 8), weights=torch.randn(12, 48), force=True)
    assert [kind for kind, _ in shown] == ["display", "update"]      # one output, updated in place
    figure = shown[-1][1]
    assert shown[0][1] is figure and len(figure.axes) == 3
    assert figure.axes[0].get_yscale() == "log"


def test_dashboard_spaces_redraws_by_their_cost(monkeypatch):
    board = display.Dashboard(every_seconds=0)
    clock = iter([0.0, 10.0, 10.5, 20.0, 51.0, 60.0])  # drawing takes 10 s each time
    monkeypatch.setattr(display.time, "monotonic", lambda: next(clock))
    assert board.update(0, 1.0) is True      # draws from t=0 to t=10
    assert board.update(1, 1.0) is False     # t=10.5: within 4 x 10 s of the last draw
    assert board.update(2, 1.0) is False     # t=20
    assert board.update(3, 1.0) is True      # t=51: more than 40 s later; draws until t=60
