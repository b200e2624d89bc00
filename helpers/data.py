"""The course's shipped assets: texture images (data/textures/*.png) and emoji (data/emoji/*.png).

``load_texture(name)`` returns a texture as a float tensor [3, H, W] in [0, 1];
``list_textures()`` names the available ones. The textures are made by data/make_textures.py.
``load_image(path)`` reads any other image file (your own texture) the same way, and
``fetch_image(url)`` downloads one (only when you ask: nothing else here uses the network);
``load_target(target)`` takes any of the three: a shipped name, a file path or a URL.
``load_emoji(name)`` returns an emoji target of chapter 06 as premultiplied RGBA [4, H, W].
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import env


def texture_dir() -> Path:
    return env.data_dir() / "textures"


def list_textures() -> list[str]:
    """Names of the shipped textures, sorted (file names without .png)."""
    return sorted(path.stem for path in texture_dir().glob("*.png"))


class UnknownName(KeyError, ValueError):
    """An unknown texture name: a KeyError (a name not in the collection) and a ValueError (bad input), so
    that either ``except`` catches it; its message is shown as written (a KeyError alone shows it quoted)."""

    def __str__(self) -> str:
        return str(self.args[0])


def texture_path(name: str) -> Path:
    """The file of texture ``name``; an unknown name raises ``UnknownName`` (a KeyError and a ValueError)
    listing the available ones."""
    if not isinstance(name, str):
        raise TypeError(f"a texture is named by a string, got {type(name).__name__}")
    path = texture_dir() / f"{name}.png"
    if not path.is_file():
        available = ", ".join(list_textures()) or "none (run python data/make_textures.py)"
        raise UnknownName(f"no texture named {name!r}; available: {available}")
    return path


def load_texture(name: str, size: int | None = None, device: torch.device | str | None = None,
                 background: float | tuple[float, float, float] = 1.0) -> torch.Tensor:
    """Texture ``name`` as float32 [3, H, W] in [0, 1] (RGB); see ``load_image`` for the arguments."""
    return load_image(texture_path(name), size=size, device=device, background=background)


# Pillow modes that hold one channel of 16-bit (or wider) integers; convert("RGB") would clip
# every value above 255 to white, so these are scaled by 65535 instead.
_WIDE_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def load_image(path: str | Path, size: int | None = None, device: torch.device | str | None = None,
               background: float | tuple[float, float, float] = 1.0, crop: bool = True) -> torch.Tensor:
    """The image file ``path`` as float32 [3, H, W] in [0, 1] (RGB), optionally resized to ``size`` x ``size``.

    * A non-square image is cut to its central square first (``crop=False``: kept whole), so
      resizing it never squashes the texture.
    * A missing file, a folder or a file Pillow cannot read raises a ``ValueError`` naming it.

    * 8-bit images are divided by 255; 16-bit greyscale (Pillow modes "I;16", "I") by 65535.
    * Transparent pixels (RGBA, LA, palette or RGB with a transparency entry) are composited
      on ``background``, a grey level or an (r, g, b) triple in [0, 1], white by default: a
      fully transparent pixel reads as the background, never as its hidden colour.
    * Resizing uses a box filter when shrinking (no aliasing) and bicubic when enlarging.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if not isinstance(path, (str, Path)):
        raise ValueError(f"path must be an image file's path, got {path!r} ({type(path).__name__})")
    background_colour(background)        # checked for every image, not only for those with transparency
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no image file at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        opened = Image.open(path)
        opened.load()        # decode now: a truncated file fails here, with its name
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{path} is not an image file Pillow can read ({error}); use PNG or JPEG") from error
    with opened as image:
        if image.mode in _WIDE_GREY_MODES:
            grey = np.asarray(image).astype(np.float32)
            if grey.min() < 0 or grey.max() > 65535:
                raise ValueError(f"{path}: {image.mode} image with values {grey.min():g}..{grey.max():g}; "
                                 "only 16-bit greyscale (0..65535) is supported")
            # A float ("F") image resizes without rounding to 8 bits.
            image = Image.fromarray(grey / 65535.0)  # float32 -> mode "F"
        elif image.mode == "F":
            raise ValueError(f"{path}: floating-point image files are not supported; save it as 8- or 16-bit")
        elif image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
            image = _composite(image.convert("RGBA"), background)
        else:
            image = image.convert("RGB")
        if crop and image.width != image.height:
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if size is not None:
            shrinking = size < min(image.size)
            image = image.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
        if image.mode == "F":
            array = np.repeat(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)[:, :, None], 3, axis=2)
        else:
            array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()
    return tensor.to(env.checked_device(device)) if device is not None else tensor


def background_colour(background) -> tuple[float, float, float]:
    """``background`` (a grey level or an (r, g, b) triple, each in [0, 1]) as (r, g, b)."""
    number = (int, float, np.number)
    colour = (background,) * 3 if isinstance(background, number) else \
        tuple(background) if isinstance(background, (tuple, list)) else ()
    if len(colour) != 3 or not all(isinstance(c, number) and not isinstance(c, bool) and 0.0 <= c <= 1.0
                                   for c in colour):
        raise ValueError(f"background must be a grey level or an (r, g, b) triple in [0, 1], got {background!r}; "
                         "e.g. 1.0 (white)")
    return colour


def _composite(rgba: Image.Image, background: float | tuple[float, float, float]) -> Image.Image:
    """``rgba`` laid over a plain ``background`` (grey level or r, g, b in [0, 1]); returns an RGB image."""
    colour = background_colour(background)
    plain = Image.new("RGBA", rgba.size, tuple(round(255 * c) for c in colour) + (255,))
    return Image.alpha_composite(plain, rgba).convert("RGB")


def is_url(target: str) -> bool:
    """Whether ``target`` names an image by URL (http, https or file) rather than a name or a path."""
    return isinstance(target, str) and urllib.parse.urlparse(target).scheme in ("http", "https", "file")


#: The most bytes ``fetch_image`` reads: far above any texture or emoji (a 4096x4096 PNG is rarely 40 MB).
MAX_DOWNLOAD_BYTES = 50 * 2**20
#: The longest a single read may wait; the whole download's deadline is ``fetch_image``'s ``timeout``.
READ_TIMEOUT = 15.0
#: The file names a ``file://`` URL may point at: images only (never /etc/passwd, /dev/zero, ...).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def fetch_image(url: str, folder: str | Path | None = None, timeout: float = 60,
                max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """The image at ``url`` as a local file. An http(s) image is downloaded once into ``folder`` (default
    ``outputs/downloads``) and reused by later calls; a ``file://`` URL names a file on this machine,
    which is checked and returned itself (nothing is copied).

    Nothing enters the cache unless it is whole and an image: the download gives up after ``timeout``
    seconds in all (a server that trickles is not waited for forever; one read waits at most
    ``READ_TIMEOUT``), refuses more than ``max_bytes`` bytes, must bring exactly the bytes its
    Content-Length announced, and must decode as an image (Pillow) before it gets its final name. A
    ``file://`` URL must name a regular image file (by its suffix, ``IMAGE_SUFFIXES``) of at most
    ``max_bytes`` bytes that decodes. Every failure raises a ``ValueError`` that names the URL."""
    if not is_url(url):
        raise ValueError(f"not an http(s) or file URL: {url!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return _checked_local_image(url, Path(urllib.request.url2pathname(parsed.path)), max_bytes)
    folder = Path(folder) if folder is not None else env.REPO_ROOT / "outputs" / "downloads"
    name = Path(parsed.path).name or "image"
    local = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}_{name}"
    if local.is_file():
        return local                         # only a complete, decodable download ever gets this name
    folder.mkdir(parents=True, exist_ok=True)
    handle, partial_name = tempfile.mkstemp(dir=folder, prefix=local.name + ".", suffix=".part")
    os.close(handle)
    partial = Path(partial_name)
    try:
        _download(url, partial, timeout, max_bytes)
        _check_decodes(partial, url)
        partial.replace(local)
    finally:
        partial.unlink(missing_ok=True)
    return local


def _download(url: str, partial: Path, timeout: float, max_bytes: int) -> None:
    """Write the body at ``url`` into ``partial``, within the deadline, the size cap and the announced length."""
    deadline = time.monotonic() + timeout
    advice = "Without internet, save the image and give its file path instead"
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=min(timeout, READ_TIMEOUT)) as response, open(partial, "wb") as file:
            announced = response.headers.get("Content-Length")
            expected = int(announced) if announced is not None and announced.strip().isdigit() else None
            if expected is not None and expected > max_bytes:
                raise ValueError(f"{url} announces {expected} bytes, more than the limit of {max_bytes} (max_bytes); "
                                 "an image to train on is far smaller")
            # read1: whatever has arrived (at most one read on the socket), so a trickle meets the deadline
            while chunk := response.read1(65536):
                received += len(chunk)
                if received > max_bytes:
                    raise ValueError(f"{url} sent more than the limit of {max_bytes} bytes (max_bytes); "
                                     "an image to train on is far smaller")
                if time.monotonic() > deadline:
                    raise ValueError(f"the download of {url} did not finish within {timeout:g} s (timeout; "
                                     f"{received} bytes arrived). {advice}")
                file.write(chunk)
    except ValueError:
        raise
    except (OSError, http.client.HTTPException) as error:     # URLError and socket timeouts are OSErrors
        raise ValueError(f"could not download {url}: {error}. {advice}") from error
    if expected is not None and received != expected:
        raise ValueError(f"the download of {url} was cut short: {received} of the {expected} bytes it announced "
                         "arrived; nothing was kept, try again")


def _check_decodes(path: Path, url: str) -> None:
    """A ValueError naming ``url`` unless the file at ``path`` is an image Pillow can decode whole."""
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{url} is not an image Pillow can read ({error}); give the address of a PNG or "
                         "JPEG file itself, not of a web page that shows it") from error


def _checked_local_image(url: str, path: Path, max_bytes: int) -> Path:
    """The file a ``file://`` URL names, once it is known to be a regular image file (nothing is read before)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{url} does not name an image file: a file URL must end in one of "
                         f"{', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():                   # missing, a folder, or a device such as /dev/zero
        raise ValueError(f"{url}: no regular file at {path}")
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{url} holds {path.stat().st_size} bytes, more than the limit of {max_bytes} (max_bytes)")
    _check_decodes(path, url)
    return path


def check_target_size(target_size) -> None:
    """A texture task's ``target_size``: 0 (the grid's size) or a side ``load_image`` can resize to (>= 8)."""
    if target_size != 0 and target_size < 8:
        raise ValueError(f"target_size (the side the texture is resized to) must be 0 (the grid's size) or at least "
                         f"8 pixels, got {target_size}")


def load_target(target: str | Path, size: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """A texture to train on or judge against, as ``load_image`` returns it: a shipped texture's name
    (``list_textures()``), an image file's path, or a URL (downloaded once by ``fetch_image``)."""
    if isinstance(target, str) and target in list_textures():
        return load_texture(target, size, device)
    if isinstance(target, str) and is_url(target):
        return load_image(fetch_image(target), size, device)
    if isinstance(target, (str, Path)) and Path(target).is_file():
        return load_image(target, size, device)
    raise ValueError(f"{target!r} is neither a shipped texture ({', '.join(list_textures())}), an image file, "
                     "nor an http(s) or file URL")


def emoji_dir() -> Path:
    return env.data_dir() / "emoji"


def list_emoji() -> list[str]:
    """Names of the shipped emoji (rendered by data/make_emoji.py), sorted."""
    return sorted(path.stem for path in emoji_dir().glob("*.png"))


#: Pillow modes that carry an alpha channel (a palette, RGB or L image may carry a transparent colour instead).
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
MIN_EMOJI_SIDE = 4


def load_emoji(name: str | Path, size: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """A shipped emoji (by name) or any image file with transparency as float32 **premultiplied** RGBA
    [4, H, W] in [0, 1].

    Premultiplied: the colour channels are already multiplied by alpha, so a transparent pixel is
    all zeros whatever colour the file hides there, as a dead cell of chapter 06 is. ``size``
    resizes (on premultiplied values, so edges get no dark or coloured fringe).

    * The image must carry transparency (an alpha channel, or a palette, RGB or greyscale PNG with a
      transparent colour): a growing pattern's shape IS its alpha, so an image without it (RGB, JPEG,
      plain or 16-bit greyscale) is refused rather than trained as an opaque square. 16-bit RGBA PNGs
      are read at 8 bits per channel by Pillow (scaled, not clipped).
    * At least ``MIN_EMOJI_SIDE`` pixels on each side, and at least one pixel not fully transparent.
    * A non-square image is padded with transparent pixels to a square, centred (never squashed):
      the empty margin is what a growing target has around its shape anyway.
    """
    if not isinstance(name, (str, Path)):
        raise ValueError(f"an emoji is a shipped emoji's name or an image file's path, got {name!r} "
                         f"({type(name).__name__}); e.g. load_emoji('lizard')")
    path = emoji_dir() / f"{name}.png" if str(name) in list_emoji() else Path(name)
    if not path.is_file():
        raise ValueError(f"no emoji {name!r}: shipped ones are {', '.join(list_emoji())}, or give an RGBA image path")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < MIN_EMOJI_SIDE):
        raise ValueError(f"size must be an integer >= {MIN_EMOJI_SIDE}, got {size!r}")
    try:
        with Image.open(path) as opened:
            opened.load()
            mode = opened.mode
            transparent = mode in _ALPHA_MODES or ("transparency" in opened.info and mode in ("P", "RGB", "L"))
            image = opened.convert("RGBA") if transparent else None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{path} is not an image file Pillow can read ({error}); use a PNG") from error
    if image is None:
        raise ValueError(f"{path} has no transparency (Pillow mode {mode}: an RGB, JPEG or greyscale image): a growing "
                         "target's shape is its alpha channel, so it would train as an opaque square. Save it as a "
                         "PNG with a transparent background (RGBA)")
    if min(image.size) < MIN_EMOJI_SIDE:
        raise ValueError(f"{path} is {image.width}x{image.height} pixels: an emoji needs at least "
                         f"{MIN_EMOJI_SIDE}x{MIN_EMOJI_SIDE}")
    if image.getchannel("A").getextrema()[1] == 0:
        raise ValueError(f"{path} is fully transparent: there is no shape to grow")
    if image.width != image.height:
        side = max(image.size)
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = square
    image = image.convert("RGBa")                           # "RGBa": Pillow's premultiplied RGBA
    if size is not None:
        image = image.resize((size, size), Image.Resampling.LANCZOS if size < image.width else Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()
    return tensor.to(env.checked_device(device)) if device is not None else tensor
