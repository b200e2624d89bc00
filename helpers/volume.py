"""A small volume raycaster (chapter 08): how a pattern grown in a 3D grid looks from outside.

Emission-absorption rendering, the way medical and scientific volumes are drawn: from every pixel a
ray crosses the volume; at each sample along it the volume has a density (how much light it stops
per voxel of path) and a colour; a sample of density s over a length dl is opaque by
``alpha = 1 - exp(-s dl)`` and adds its colour weighted by alpha and by the light not yet stopped in
front of it (``transmittance``). What passes all the way shows the background.

The camera is orthographic and looks at the centre of the volume from ``azimuth`` and ``elevation``
(degrees); the volume fills the cube [-1, 1]^3 of ``grid_sample``'s coordinates.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def camera_rays(azimuth: float, elevation: float, pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray starts ``[pixels, pixels, 3]`` on a square that covers the cube from any side, and the
    common direction ``[3]``, in (x, y, z) = (width, height, depth) coordinates of the volume."""
    az, el = math.radians(azimuth), math.radians(elevation)
    forward = torch.tensor([-math.cos(el) * math.sin(az), -math.sin(el), -math.cos(el) * math.cos(az)])
    up_hint = torch.tensor([0.0, 1.0, 0.0]) if abs(math.cos(el)) > 1e-6 else torch.tensor([0.0, 0.0, 1.0])
    right = torch.linalg.cross(forward, up_hint)
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    reach = math.sqrt(3)                                   # half the cube's diagonal: every view fits
    side = torch.linspace(-reach, reach, pixels)
    rows, cols = torch.meshgrid(-side, side, indexing="ij")   # image rows go down
    starts = cols[..., None] * right + rows[..., None] * up - reach * forward
    return starts, forward


def raycast(density: torch.Tensor, colour: torch.Tensor, azimuth: float = 30.0, elevation: float = 20.0,
            pixels: int = 128, samples: int = 160, background: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a volume: ``density`` [D, H, W] (per voxel of path, >= 0) and ``colour`` [3, D, H, W] in
    [0, 1]. Returns the image [3, pixels, pixels] over a ``background`` grey and its opacity
    [pixels, pixels]. Outside the volume the density is zero."""
    if density.dim() != 3 or colour.shape != (3, *density.shape):
        raise ValueError(f"need density [D, H, W] and colour [3, D, H, W], got {tuple(density.shape)} and "
                         f"{tuple(colour.shape)}")
    starts, forward = camera_rays(azimuth, elevation, pixels)
    reach = math.sqrt(3)
    t = torch.linspace(0, 2 * reach, samples)
    points = starts[:, :, None, :] + t[None, None, :, None] * forward        # [P, P, S, 3]
    grid = points[None].to(density)                                           # grid_sample wants [1, P, P, S, 3]
    # density and density x colour are interpolated, then divided: at the volume's edge (where the
    # samples blend with the empty outside) a voxel keeps its colour and only its density fades
    volume = torch.cat([density[None], density[None] * colour])[None]         # [1, 4, D, H, W]
    sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    sample_density = sampled[0]                                                # [P, P, S]
    sample_colour = sampled[1:] / sample_density.clamp(min=1e-6)               # [3, P, P, S]
    voxels_per_unit = (max(density.shape) - 1) / 2        # align_corners: [-1, 1] spans n - 1 voxels
    step = (t[1] - t[0]).item() * voxels_per_unit
    alpha = 1 - torch.exp(-sample_density.clamp(min=0) * step)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]], -1), -1)
    weights = alpha * transmittance
    image = (weights[None] * sample_colour).sum(-1)
    opacity = weights.sum(-1)
    return image + background * (1 - opacity)[None], opacity


def pattern_density(rgb: torch.Tensor, sharpness: float = 6.0) -> torch.Tensor:
    """A density for a coloured volume ``[3, D, H, W]``: zero where a voxel has the volume's most
    common (median) colour, the background of the pattern, rising with the colour distance from it."""
    background = rgb.flatten(1).median(dim=1).values.reshape(3, 1, 1, 1)
    return sharpness * (rgb - background).norm(dim=0).clamp(max=1.0) ** 2
