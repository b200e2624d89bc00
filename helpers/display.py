"""Pictures, videos and live plots for the notebooks.

Every function accepts images the way they come out of a chapter: a NumPy array or a torch
tensor, float in [0, 1] or uint8, laid out HWC or CHW, one image or a batch, with 1, 3 or 4
channels. ``as_image_array`` turns all of these into one form (float32, HWC or BHWC, in [0, 1]);
everything else builds on it. Floats far outside [0, 1] (e.g. 0..255) and arrays with no
channel axis (e.g. a 12-channel NCA state) are refused with a ValueError rather than drawn wrong.

* ``show(img)``             draw an image (a batch is tiled) with nearest-neighbour pixels
* ``tile(batch)``           a grid of images as one image
* ``zoom(img, k)``          nearest-neighbour upscaling by an integer factor
* ``VideoWriter``           frames to MP4 (imageio-ffmpeg) or animated GIF (Pillow), shown inline
* ``Dashboard``             a training view that updates in place: loss (log scale), images, weights
* ``weight_image(w)``       a weight matrix as colours: negative red, positive green
"""
from __future__ import annotations

import base64
import importlib.util
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import checks

ACCEPTED = ("a NumPy array or torch tensor shaped HW, HWC, CHW, BHWC or BCHW with 1, 3 or 4 channels, "
            "dtype uint8 (0..255) or float (0..1)")
# Floats a little outside [0, 1] (overshoot of a model's output) are clipped; beyond these limits the
# values are on another scale (0..255, or raw NCA state channels) and clipping would show a flat image.
FLOAT_LIMITS = (-0.5, 1.5)
STATE_HINT = ("an NCA state with more than 4 channels is not an image: show helpers.nca.to_rgb(state) "
              "(channels 0..2), or one channel per picture")


# ------------------------------------------------------------------------ image conversion

def as_image_array(image) -> np.ndarray:
    """Any accepted image (see module doc) as float32 NumPy, HWC or BHWC, values clipped to [0, 1].

    A CHW/BCHW layout is recognised by a channel axis of size 1, 3 or 4 in front; when both ends
    could be channels (e.g. 3x4x4 ... 4x4x3), torch tensors are read as CHW and arrays as HWC,
    following each library's convention. An NCA state [B, 12, H, W] has no such axis and is
    refused with a pointer to ``helpers.nca.to_rgb`` (unless W happens to be 1, 3 or 4: then it
    cannot be told from a BHWC batch, which chapter 03 shows as torch tensors).

    Refused with a ValueError, never silently clipped: floats outside ``FLOAT_LIMITS`` (-0.5..1.5;
    e.g. 0..255 stored as float), and shapes with no channel axis of size 1, 3 or 4.
    """
    is_torch = isinstance(image, torch.Tensor)
    if is_torch:
        array = image.detach().cpu()
        array = array.float().numpy() if array.is_floating_point() else array.numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise ValueError(f"expected an image, got {type(image).__name__}; accepted: {ACCEPTED}")
    if array.size == 0:
        raise ValueError(f"the image is empty (shape {tuple(array.shape)}): nothing to draw; check the slice or "
                         "crop that made it")

    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError("the image contains NaN or infinite values; check the computation that made it")
        low, high = float(array.min()), float(array.max())
        if low < FLOAT_LIMITS[0] or high > FLOAT_LIMITS[1]:
            raise ValueError(f"float images must be in [0, 1], got values {low:g}..{high:g}; for 0..255 "
                             "data divide by 255 (or pass uint8); for other ranges rescale or clamp(0, 1) "
                             "first; accepted: " + ACCEPTED)
        array = np.clip(array, 0.0, 1.0)
    elif array.dtype == np.bool_:
        array = array.astype(np.float32)
    else:
        raise ValueError(f"unsupported dtype {array.dtype} for an image of shape {tuple(array.shape)}; "
                         f"accepted: {ACCEPTED}")

    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim not in (3, 4):
        raise ValueError(f"got an array of shape {tuple(array.shape)} ({array.ndim} dimensions); accepted: {ACCEPTED}")
    channels_first = array.shape[-3] in (1, 3, 4)
    channels_last = array.shape[-1] in (1, 3, 4)
    if channels_first and (not channels_last or is_torch):
        array = np.moveaxis(array, -3, -1)
    elif not channels_last:
        raise ValueError(f"got shape {tuple(array.shape)}: no axis of size 1, 3 or 4 for the channels; "
                         f"{STATE_HINT}; accepted: {ACCEPTED}")
    return np.ascontiguousarray(array)


def to_uint8(image) -> np.ndarray:
    """An image (or batch) as uint8 HWC/BHWC, 0..255."""
    return np.round(as_image_array(image) * 255.0).astype(np.uint8)


def rgb_array(image, background: float = 1.0) -> np.ndarray:
    """An image as float32 RGB (HWC or BHWC): grey is repeated, RGBA is composited on ``background``."""
    array = as_image_array(image)
    channels = array.shape[-1]
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 4:
        alpha = array[..., 3:4]
        return array[..., :3] * alpha + background * (1.0 - alpha)
    return array


def zoom(image, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer ``factor`` (each pixel becomes a factor x factor block)."""
    if not isinstance(factor, (int, np.integer)) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"zoom factor must be a positive integer, got {factor!r}")
    array = as_image_array(image)
    array = np.repeat(array, factor, axis=-3)
    return np.repeat(array, factor, axis=-2)


def tile(batch, columns: int | None = None, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Arrange a batch of images (BHWC/BCHW, or a list of images) in a grid; returns one HWC image.

    ``columns`` defaults to a near-square grid; ``padding`` pixels of ``pad_value`` separate cells.
    """
    if isinstance(batch, (list, tuple)):
        if not batch:
            raise ValueError("tile() got an empty list; give at least one image")
        images = [as_image_array(item) for item in batch]
        shapes = {im.shape for im in images}
        if len(shapes) != 1 or images[0].ndim != 3:
            raise ValueError(f"tile() needs single images of one shape, got shapes {sorted(shapes)}")
        array = np.stack(images)
    else:
        array = as_image_array(batch)
        if array.ndim == 3:
            array = array[None]
    checks.check_count("padding", padding, 0, "padding=2")
    count, height, width, channels = array.shape
    columns = math.ceil(math.sqrt(count)) if columns is None else checks.check_count("columns", columns, 1, "columns=4")
    rows = math.ceil(count / columns)
    grid = np.full((rows * height + (rows - 1) * padding, columns * width + (columns - 1) * padding, channels),
                   pad_value, dtype=np.float32)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * (height + padding), column * (width + padding)
        grid[top:top + height, left:left + width] = array[index]
    return grid


def show(image, title: str | None = None, zoom_factor: int | None = None, ax=None, columns: int | None = None):
    """Draw an image (or a tiled batch) with crisp, nearest-neighbour pixels; returns the axes."""
    import matplotlib.pyplot as plt

    array = as_image_array(image)
    if array.ndim == 4:
        array = tile(array, columns=columns)
    if zoom_factor is not None:
        array = zoom(array, zoom_factor)
    if ax is None:
        height, width = array.shape[:2]
        scale = 4.0 / max(height, width) * max(1.0, min(2.0, max(height, width) / 128))
        _, ax = plt.subplots(figsize=(max(2.0, width * scale), max(2.0, height * scale) + (0.3 if title else 0)))
    if array.shape[-1] == 1:
        ax.imshow(array[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(array, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------------------- weight view

def weight_image(weights, scale: float | None = None) -> np.ndarray:
    """A 2-D weight matrix as an RGB image: negative entries red, positive green, zero black.

    Brightness is |w| / ``scale`` (default: the largest |w|), so equal colours mean equal sizes.
    """
    if isinstance(weights, torch.Tensor):
        matrix = weights.detach().cpu().double().numpy()
    else:
        try:
            matrix = np.asarray(weights, float)
        except (TypeError, ValueError) as error:
            raise ValueError(f"weight_image needs a 2-D matrix of numbers (a tensor or array), got {weights!r:.80}") \
                from error
    if matrix.ndim != 2:
        raise ValueError(f"weight_image needs a 2-D matrix, got shape {matrix.shape}; "
                         "reshape a 1x1 convolution weight [out, in, 1, 1] to [out, in] first")
    if not np.isfinite(matrix).all():
        raise ValueError("the weight matrix contains NaN or infinite values")
    scale = scale or float(np.abs(matrix).max()) or 1.0
    magnitude = np.clip(np.abs(matrix) / scale, 0.0, 1.0).astype(np.float32)
    image = np.zeros(matrix.shape + (3,), np.float32)
    image[..., 0] = np.where(matrix < 0, magnitude, 0.0)
    image[..., 1] = np.where(matrix > 0, magnitude, 0.0)
    return image


def show_weights(weights, ax=None, title: str | None = None, xlabel: str = "input", ylabel: str = "output"):
    """Draw ``weight_image(weights)`` with labelled axes; returns the axes."""
    import matplotlib.pyplot as plt

    image = weight_image(weights)
    if ax is None:
        rows, cols = image.shape[:2]
        _, ax = plt.subplots(figsize=(min(12, 2 + cols * 0.18), min(8, 1.5 + rows * 0.18)))
    ax.imshow(image, interpolation="nearest")
    ax.set_xlabel(f"{xlabel} (red < 0 < green)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


# ----------------------------------------------------------------------------------- video

def has_ffmpeg() -> bool:
    """True when imageio-ffmpeg (which ships its own ffmpeg binary) is installed."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


class VideoWriter:
    """Collect frames and write a video: MP4 through imageio-ffmpeg, else an animated GIF (Pillow).

    Use it as a context manager, then show it::

        with VideoWriter(fps=30) as video:
            for frame in frames:
                video.add(frame)          # any accepted image; a batch is tiled
        video.show()                      # inline in Jupyter and Colab

    ``path`` defaults to a fresh file in the temporary folder; ``format`` is ``"mp4"``, ``"gif"``
    or ``None`` (MP4 when imageio-ffmpeg is there). ``zoom_factor`` enlarges small frames.
    """

    def __init__(self, path: str | Path | None = None, fps: float = 30, format: str | None = None,
                 zoom_factor: int = 1):
        if format is None:
            format = Path(path).suffix.lstrip(".").lower() if path and Path(path).suffix else None
            format = format or ("mp4" if has_ffmpeg() else "gif")
        format = format.lower()
        if format not in ("mp4", "gif"):
            raise ValueError(f"video format must be 'mp4' or 'gif', got {format!r}")
        if format == "mp4" and not has_ffmpeg():
            raise ValueError("MP4 needs the package imageio-ffmpeg (pip install imageio-ffmpeg); "
                             "or ask for format='gif'")
        if isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) or not 0 < fps < math.inf:
            raise ValueError(f"fps (frames per second) must be a finite number > 0, got {fps!r}; e.g. fps=30")
        checks.check_count("zoom_factor", zoom_factor, 1, "zoom_factor=4")
        if path is None:
            path = Path(tempfile.mkdtemp(prefix="dsos_video_")) / f"video.{format}"
        self.path = Path(path)
        self.format, self.fps, self.zoom_factor = format, fps, zoom_factor
        self.frames: list[np.ndarray] = []
        self.closed = False

    def add(self, frame) -> None:
        """Append one frame (any accepted image; a batch is tiled). All frames must share a size."""
        if self.closed:
            raise ValueError("this VideoWriter is closed; create a new one to record another video")
        array = as_image_array(frame)
        if array.ndim == 4:
            array = tile(array)
        if self.zoom_factor > 1:
            array = zoom(array, self.zoom_factor)
        rgb = np.round(rgb_array(array) * 255).astype(np.uint8)
        if self.frames and rgb.shape != self.frames[0].shape:
            raise ValueError(f"frame of shape {rgb.shape[:2]} differs from the first frame's "
                             f"{self.frames[0].shape[:2]}")
        self.frames.append(rgb)

    def close(self) -> Path:
        """Write the file (once) and return its path."""
        if self.closed:
            return self.path
        if not self.frames:
            raise ValueError("no frames were added; call add(frame) before closing the video")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "mp4":
            self._write_mp4()
        else:
            self._write_gif()
        self.closed = True
        return self.path

    def _write_mp4(self) -> None:
        import imageio_ffmpeg

        height, width = self.frames[0].shape[:2]
        # H.264 in yuv420p needs even sides: pad by repeating the last row/column.
        pad_h, pad_w = height % 2, width % 2
        writer = imageio_ffmpeg.write_frames(str(self.path), (width + pad_w, height + pad_h), fps=self.fps,
                                             codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
                                             quality=8, ffmpeg_log_level="error")
        writer.send(None)
        for frame in self.frames:
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            writer.send(np.ascontiguousarray(frame))
        writer.close()

    def _write_gif(self) -> None:
        from PIL import Image

        images = [Image.fromarray(frame) for frame in self.frames]
        duration_ms = max(20, int(round(1000 / self.fps)))
        images[0].save(self.path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        return False

    def to_html(self, width: int | None = None) -> str:
        """An HTML snippet with the video embedded (works offline, in Jupyter and Colab)."""
        self.close()
        data = base64.b64encode(self.path.read_bytes()).decode("ascii")
        size = f' width="{width}"' if width else ""
        if self.format == "mp4":
            return (f'<video{size} controls autoplay loop muted playsinline '
                    f'src="data:video/mp4;base64,{data}"></video>')
        return f'<img{size} src="data:image/gif;base64,{data}"/>'

    def _repr_html_(self) -> str:
        return self.to_html()

    def show(self, width: int | None = None) -> None:
        """Display the video inline: an HTML5 video for MP4, an image for GIF (both work in Colab)."""
        from IPython.display import HTML, Image, display

        self.close()
        if self.format == "mp4":
            shown = HTML(self.to_html(width))
        else:
            shown = Image(data=self.path.read_bytes(), format="gif", width=width)
        display(shown)


# ------------------------------------------------------------------------------ dashboard

def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class Dashboard:
    """A live training view that redraws in place (no flicker, no growing output).

    ``update(step, loss, images=None, weights=None)`` records the loss and, at most every
    ``every_seconds`` (or when ``force=True``), redraws: the loss curve on a log scale, a strip
    of images, and a weight matrix (red < 0 < green). Outside a notebook it draws nothing, so
    the same training code runs in scripts and tests.
    """

    def __init__(self, title: str = "training", every_seconds: float = 1.0, log_scale: bool = True,
                 image_zoom: int = 1):
        self.title, self.every_seconds, self.log_scale, self.image_zoom = title, every_seconds, log_scale, image_zoom
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.redraws = 0
        self._last_draw = -math.inf
        self._draw_seconds = 0.0
        self._handle = None
        self._figure = None

    def update(self, step: int, loss: float, images=None, weights=None, force: bool = False) -> bool:
        """Record ``loss`` at ``step``; redraw if due. Returns True when it redrew."""
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"loss at step {step} is {loss}: training diverged; lower the learning rate "
                             "or check the model's inputs")
        self.steps.append(int(step))
        self.losses.append(loss)
        now = time.monotonic()
        # Wait at least every_seconds between redraws, and at least 4x the time the last redraw
        # took, so that drawing never eats more than about a fifth of the training time.
        if not force and now - self._last_draw < max(self.every_seconds, 4 * self._draw_seconds):
            return False
        self._draw(images, weights)
        self._last_draw = time.monotonic()
        self._draw_seconds = self._last_draw - now
        self.redraws += 1
        return True

    def _draw(self, images, weights) -> None:
        if not _in_notebook():
            return
        import matplotlib.pyplot as plt
        from IPython.display import display

        panels = 1 + (images is not None) + (weights is not None)
        if self._figure is None or len(self._figure.axes) != panels:
            if self._figure is not None:
                plt.close(self._figure)
            self._figure, _ = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4),
                                           gridspec_kw={"width_ratios": [1.3] + [1] * (panels - 1)})
            plt.close(self._figure)  # keep the inline backend from drawing it a second time
        axes = self._figure.axes
        for ax in axes:
            ax.clear()
        loss_ax = axes[0]
        loss_ax.plot(self.steps, self.losses, lw=1)
        if self.log_scale and min(self.losses) > 0:
            loss_ax.set_yscale("log")
        loss_ax.set_xlabel("iteration")
        loss_ax.set_ylabel("loss")
        loss_ax.set_title(f"{self.title}: step {self.steps[-1]}, loss {self.losses[-1]:.4g}")
        loss_ax.grid(alpha=0.3)
        next_ax = 1
        if images is not None:
            strip = tile(images, columns=len(images) if len(as_image_array(images).shape) == 4 else 1)
            show(strip, ax=axes[next_ax], zoom_factor=self.image_zoom)
            axes[next_ax].set_title("current batch")
            next_ax += 1
        if weights is not None:
            show_weights(weights, ax=axes[next_ax], title="weights")
        self._figure.tight_layout()
        if self._handle is None:
            self._handle = display(self._figure, display_id=True)
        else:
            self._handle.update(self._figure)

    def close(self, images=None, weights=None) -> None:
        """Draw the final state once more."""
        if self.losses:
            self._draw(images, weights)
