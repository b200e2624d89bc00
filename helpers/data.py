"""The course's shipped assets: texture images (data/textures/*.png).

``load_texture(name)`` returns a texture as a float tensor [3, H, W] in [0, 1];
``list_textures()`` names the available ones. The textures are made by data/make_textures.py.
``load_image(path)`` reads any other image file (your own texture) the same way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import env


def texture_dir() -> Path:
    return env.data_dir() / "textures"


def list_textures() -> list[str]:
    """Names of the shipped textures, sorted (file names without .png)."""
    return sorted(path.stem for path in texture_dir().glob("*.png"))


def texture_path(name: str) -> Path:
    """The file of texture ``name``; an unknown name raises a KeyError listing the available ones."""
    if not isinstance(name, str):
        raise TypeError(f"a texture is named by a string, got {type(name).__name__}")
    path = texture_dir() / f"{name}.png"
    if not path.is_file():
        available = ", ".join(list_textures()) or "none (run python data/make_textures.py)"
        raise KeyError(f"no texture named {name!r}; available: {available}")
    return path


def load_texture(name: str, size: int | None = None, device: torch.device | str | None = None,
                 background: float | tuple[float, float, float] = 1.0) -> torch.Tensor:
    """Texture ``name`` as float32 [3, H, W] in [0, 1] (RGB); see ``load_image`` for the arguments."""
    return load_image(texture_path(name), size=size, device=device, background=background)


# Pillow modes that hold one channel of 16-bit (or wider) integers; convert("RGB") would clip
# every value above 255 to white, so these are scaled by 65535 instead.
_WIDE_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def load_image(path: str | Path, size: int | None = None, device: torch.device | str | None = None,
               background: float | tuple[float, float, float] = 1.0) -> torch.Tensor:
    """The image file ``path`` as float32 [3, H, W] in [0, 1] (RGB), optionally resized to ``size`` x ``size``.

    * 8-bit images are divided by 255; 16-bit greyscale (Pillow modes "I;16", "I") by 65535.
    * Transparent pixels (RGBA, LA, palette or RGB with a transparency entry) are composited
      on ``background``, a grey level or an (r, g, b) triple in [0, 1], white by default: a
      fully transparent pixel reads as the background, never as its hidden colour.
    * Resizing uses a box filter when shrinking (no aliasing) and bicubic when enlarging.
    """
    if size is not None and (not isinstance(size, int) or size < 8):
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    with Image.open(path) as image:
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
        if size is not None:
            shrinking = size < min(image.size)
            image = image.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
        if image.mode == "F":
            array = np.repeat(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)[:, :, None], 3, axis=2)
        else:
            array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()
    return tensor.to(device) if device is not None else tensor


def _composite(rgba: Image.Image, background: float | tuple[float, float, float]) -> Image.Image:
    """``rgba`` laid over a plain ``background`` (grey level or r, g, b in [0, 1]); returns an RGB image."""
    colour = (background,) * 3 if isinstance(background, (int, float)) else tuple(background)
    if len(colour) != 3 or not all(0.0 <= c <= 1.0 for c in colour):
        raise ValueError(f"background must be a grey level or an (r, g, b) triple in [0, 1], got {background!r}")
    plain = Image.new("RGBA", rgba.size, tuple(round(255 * c) for c in colour) + (255,))
    return Image.alpha_composite(plain, rgba).convert("RGB")
