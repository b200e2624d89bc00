"""The course's shipped assets: texture images (data/textures/*.png).

``load_texture(name)`` returns a texture as a float tensor [3, H, W] in [0, 1];
``list_textures()`` names the available ones. The textures are made by data/make_textures.py.
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


def load_texture(name: str, size: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Texture ``name`` as float32 [3, H, W] in [0, 1] (RGB), optionally resized to ``size`` x ``size``.

    Resizing uses a box filter when shrinking (no aliasing) and bicubic when enlarging.
    """
    with Image.open(texture_path(name)) as image:
        image = image.convert("RGB")
        if size is not None:
            if not isinstance(size, int) or size < 8:
                raise ValueError(f"size must be an integer >= 8, got {size!r}")
            shrinking = size < min(image.size)
            image = image.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return tensor.to(device) if device is not None else tensor
