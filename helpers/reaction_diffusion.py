"""Reaction-diffusion rules for chapter 08: cells that talk to each other ONLY by diffusion.

A reaction-diffusion (RD) system changes every cell's state by two terms::

    state <- state + diffusion_speed * D * laplacian(state) + reaction_speed * reaction(state)

* **diffusion**: each channel spreads to the neighbours at its own fixed rate ``D[c]`` through the
  discrete Laplacian. The 3x3 stencil used here is the isotropic one (its error term is the same in
  every direction, not only its leading term), and it is symmetric under 90-degree turns and mirror
  flips, so a step cannot tell up from left;
* **reaction**: a function of the cell's OWN state only. In the classic Gray-Scott system it is a
  polynomial in two chemicals; in the neural version (Mordvintsev, Randazzo and Niklasson, ALIFE
  2021) it is a small network, channels -> hidden (ReLU) -> channels, applied to every cell.

Nothing in a step knows a direction, so the rule commutes with rotations and flips of the grid, and
the same rule runs on any space that has a Laplacian: a 3D volume (``LAPLACIAN_3D``) or a mesh
(``helpers.meshes``). The state is ``[batch, channels, *space]``; channels 0..2 are RGB offset by 0.5
(as in chapter 03).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import checks
from .checks import check_speeds, check_steps
from .nca import to_rgb  # noqa: F401  (the visible colour: channels 0..2 plus 0.5, clipped; as chapter 03)

#: The isotropic 9-point Laplacian (Patra and Karttunen 2006): edge neighbours 4/6, corners 1/6.
#: Its Fourier symbol is -|k|^2 + |k|^4 / 12 + ..., the same in every direction up to fourth order.
LAPLACIAN_2D = torch.tensor([[1.0, 4.0, 1.0],
                             [4.0, -20.0, 4.0],
                             [1.0, 4.0, 1.0]], dtype=torch.float64) / 6

#: The isotropic 27-point Laplacian in 3D (Patra and Karttunen 2006): faces 14/30, edges 3/30, corners 1/30.
LAPLACIAN_3D = torch.zeros(3, 3, 3, dtype=torch.float64)
for _z in range(3):
    for _y in range(3):
        for _x in range(3):
            _offsets = abs(_z - 1) + abs(_y - 1) + abs(_x - 1)      # 1: face, 2: edge, 3: corner neighbour
            LAPLACIAN_3D[_z, _y, _x] = {0: -128.0, 1: 14.0, 2: 3.0, 3: 1.0}[_offsets] / 30


def laplacian(state: torch.Tensor) -> torch.Tensor:
    """The Laplacian of every channel, on a grid that wraps around (a torus): ``[B, C, H, W]`` with the
    2D stencil, ``[B, C, D, H, W]`` with the 3D one. Same shape out."""
    if not isinstance(state, torch.Tensor) or state.dim() not in (4, 5):
        shape = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
        raise ValueError(f"a grid state is [batch, channels, height, width] or [batch, channels, depth, height, "
                         f"width], got {shape}")
    channels = state.shape[1]
    if state.dim() == 4:
        kernel = LAPLACIAN_2D.to(state)[None, None].repeat(channels, 1, 1, 1)
        return F.conv2d(F.pad(state, (1, 1, 1, 1), mode="circular"), kernel, groups=channels)
    if state.dim() == 5:
        kernel = LAPLACIAN_3D.to(state)[None, None].repeat(channels, 1, 1, 1, 1)
        return F.conv3d(F.pad(state, (1, 1, 1, 1, 1, 1), mode="circular"), kernel, groups=channels)
    raise ValueError(f"a grid state is [batch, channels, height, width] or [batch, channels, depth, height, width], "
                     f"got shape {tuple(state.shape)}")


# The largest |eigenvalue| of each stencil (at the finest checkerboard), which limits a stable step's
# diffusion speed (helpers.checks): 2D 20/6 + 4 * 4/6 - 4 * 1/6 = 16/3; 3D (128 + 6 * 14 - 12 * 3 + 8) / 30.
laplacian.largest_eigenvalue = lambda state: 16 / 3 if state.dim() == 4 else 184 / 30


# --------------------------------------------------------------------------------- Gray-Scott

#: Gray-Scott's diffusion rates in cells^2 per step (the usual 2:1 ratio), one Euler step per unit time.
GRAY_SCOTT_DIFFUSION = (0.2, 0.1)


def gray_scott_seed(batch: int, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, 2, size, size]``: chemical u = 1 everywhere, v = 0, except a few random squares of v = 1
    (where the reaction can start)."""
    checks.check_count("batch", batch, 1, "batch=4")
    checks.check_count("size", size, 7, "size=64")             # the seed squares are 6 cells wide
    state = torch.zeros(batch, 2, size, size)
    state[:, 0] = 1.0
    for b in range(batch):
        for _ in range(6):
            y, x = torch.randint(0, size - 6, (2,), generator=generator).tolist()
            state[b, 0, y:y + 6, x:x + 6] = 0.5
            state[b, 1, y:y + 6, x:x + 6] = 0.5
    return state


def gray_scott_step(state: torch.Tensor, feed: torch.Tensor | float, kill: torch.Tensor | float) -> torch.Tensor:
    """One step of Gray-Scott for a batch ``[B, 2, H, W]`` (channels u, v); ``feed`` and ``kill`` are
    numbers or one value per sample ``[B]``:  u' = Du lap(u) - u v^2 + feed (1 - u),
    v' = Dv lap(v) + u v^2 - (feed + kill) v."""
    check_field(state, 2)
    feed = torch.as_tensor(feed, dtype=state.dtype).reshape(-1, 1, 1)
    kill = torch.as_tensor(kill, dtype=state.dtype).reshape(-1, 1, 1)
    u, v = state[:, 0], state[:, 1]
    lap = laplacian(state)
    reaction = u * v * v
    du = GRAY_SCOTT_DIFFUSION[0] * lap[:, 0] - reaction + feed * (1 - u)
    dv = GRAY_SCOTT_DIFFUSION[1] * lap[:, 1] + reaction - (feed + kill) * v
    return torch.stack([u + du, v + dv], dim=1)


# ------------------------------------------------------------------------------ the neural rule

def diffusion_coefficients(channels: int, smallest: float, largest: float) -> torch.Tensor:
    """``[channels]`` rates spread geometrically from ``smallest`` (channel 0) to ``largest``: slow
    channels keep sharp detail, fast ones carry signals far (a Turing pattern needs both)."""
    if channels == 1:
        return torch.tensor([smallest])
    return smallest * (largest / smallest) ** (torch.arange(channels) / (channels - 1))


#: A step is stable while speed * D * 16/3 < 2 (16/3 is the largest |eigenvalue| of LAPLACIAN_2D), so
#: the largest rate 0.25 leaves room to run a trained rule with diffusion up to 1.5x faster.
STABLE_LIMIT = 2 / (16 / 3)


def check_field(state, channels: int) -> None:
    """A reaction-diffusion state: a floating-point tensor ``[batch, channels, *space]`` (a grid, a volume
    or a mesh's vertices)."""
    if not isinstance(state, torch.Tensor) or state.dim() < 3 or state.shape[1] != channels:
        shape = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
        raise ValueError(f"the state must be a tensor [batch, {channels}, *space], got {shape}; make one with "
                         "random_field")
    if not state.is_floating_point():
        raise ValueError(f"the state must hold floating point values, got {state.dtype}; use state.float()")


class ReactionDiffusionNCA(nn.Module):
    """The neural RD rule: fixed per-channel diffusion plus a per-cell reaction network
    ``channels -> hidden (ReLU) -> channels`` (the second layer without bias, and zero at the start, so
    an untrained rule only diffuses). 32 channels and 128 hidden units: 8,320 parameters.

    ``clamp_state=True``: chemicals with a bounded concentration, every step's state clamped to [-1, 1].
    A state can then never pay the overflow loss; in training, the plain rule's loss spikes come from
    states pushed past the bound (chapter 08, section 5.1), and the clamped rule has none."""

    architecture = "ReactionDiffusionNCA"      # what a saved model's JSON records (helpers.models.save)

    def __init__(self, channels: int = 32, hidden: int = 128, diffusion_min: float = 0.005,
                 diffusion_max: float = 0.25, clamp_state: bool = False):
        super().__init__()
        if not (isinstance(channels, int) and channels >= 3) or not (isinstance(hidden, int) and hidden >= 1):
            raise ValueError(f"need channels >= 3 (RGB first) and hidden >= 1, got {channels}, {hidden}")
        if not 0 < diffusion_min <= diffusion_max < STABLE_LIMIT:
            raise ValueError(f"need 0 < diffusion_min <= diffusion_max < {STABLE_LIMIT:.3f} (above it a step "
                             f"amplifies the finest checkerboard), got {diffusion_min}, {diffusion_max}")
        if not isinstance(clamp_state, bool):
            raise ValueError(f"clamp_state must be True or False, got {clamp_state!r}")
        self.channels, self.hidden, self.clamp_state = channels, hidden, clamp_state
        self.diffusion_min, self.diffusion_max = diffusion_min, diffusion_max
        self.register_buffer("diffusion", diffusion_coefficients(channels, diffusion_min, diffusion_max))
        self.reaction_in = nn.Linear(channels, hidden)
        self.reaction_out = nn.Linear(hidden, channels, bias=False)
        nn.init.zeros_(self.reaction_out.weight)

    def config(self) -> dict:
        return {"channels": self.channels, "hidden": self.hidden, "diffusion_min": self.diffusion_min,
                "diffusion_max": self.diffusion_max, "clamp_state": self.clamp_state}

    def reaction(self, state: torch.Tensor) -> torch.Tensor:
        """Each cell's change from its own channels alone, for a state ``[B, C, *space]`` of any layout."""
        cells = rearrange(state, "b c ... -> b ... c")
        change = self.reaction_out(F.relu(self.reaction_in(cells)))
        return rearrange(change, "b ... c -> b c ...")

    def step(self, state: torch.Tensor, laplacian_of: Callable = laplacian, diffusion_speed: float = 1.0,
             reaction_speed: float = 1.0) -> torch.Tensor:
        """One explicit Euler step. ``laplacian_of``: the space's Laplacian (default: a 2D or 3D grid
        that wraps around; ``helpers.meshes.MeshLaplacian`` for a mesh). The two speeds are the texture
        scale knob: faster diffusion relative to the reaction gives a larger pattern."""
        check_field(state, self.channels)
        rates = self.diffusion.to(state).reshape(1, -1, *[1] * (state.dim() - 2))
        state = state + diffusion_speed * rates * laplacian_of(state) + reaction_speed * self.reaction(state)
        return state.clamp(-1, 1) if self.clamp_state else state

    def rollout(self, state: torch.Tensor, steps: int, laplacian_of: Callable = laplacian,
                diffusion_speed: float = 1.0, reaction_speed: float = 1.0, generator=None) -> torch.Tensor:
        """``steps`` steps (deterministic: ``generator`` is accepted, and ignored, so the rule fits the
        pool loop's and the stability check's calls). A diffusion speed beyond the stability limit of the
        space, or a speed that is negative or not finite, is refused (``helpers.checks.check_speeds``)."""
        steps = check_steps(steps)
        check_field(state, self.channels)
        check_speeds(diffusion_speed, reaction_speed, float(self.diffusion.max()), laplacian_of, state)
        for _ in range(steps):
            state = self.step(state, laplacian_of, diffusion_speed, reaction_speed)
        return state

    def forward(self, state: torch.Tensor, steps: int = 1) -> torch.Tensor:
        return self.rollout(state, steps)


def random_field(batch: int, space: int | tuple, channels: int, generator: torch.Generator | None = None,
                 device=None, amplitude: float = 0.5) -> torch.Tensor:
    """The starting state: every channel of every cell uniform in [-amplitude, amplitude]. ``space``:
    a side (a square grid) or a shape (e.g. ``(depth, height, width)``, or ``(vertices,)`` for a mesh)."""
    checks.check_count("batch", batch, 1, "batch=2")
    checks.check_count("channels", channels, 1, "channels=model.channels")
    shape = (space, space) if checks.is_whole(space) else tuple(space) if isinstance(space, (tuple, list)) else None
    if shape is None or not shape or not all(checks.is_whole(side) and side >= 1 for side in shape):
        raise ValueError(f"the space's size must be a grid's side (a whole number >= 1) or a shape of them, e.g. 64 "
                         f"or (depth, height, width), got {space!r}")
    noise = torch.rand(batch, channels, *shape, generator=generator)
    return ((2 * noise - 1) * amplitude).to(device)




def power_spectrum(image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The power spectrum of an image ``[C, *space]`` (each channel's mean removed, summed over the
    channels), and the spatial frequency (cycles per cell) of every entry along each axis."""
    image = image.float().cpu()
    space = tuple(range(1, image.dim()))
    centred = image - image.mean(dim=space, keepdim=True)
    power = torch.fft.fftn(centred, dim=space).abs().square().sum(dim=0)
    return power, list(torch.meshgrid(*[torch.fft.fftfreq(n) for n in power.shape], indexing="ij"))


def dominant_orientation(image: torch.Tensor) -> tuple[float, float]:
    """The orientation of an image ``[3, H, W]`` from its power spectrum: the angle (degrees, in
    [0, 180)) of the wave vectors that carry its energy, and how strongly they agree (0: no preferred
    direction, 1: all energy at one angle). Computed as the power-weighted mean of exp(2i angle)."""
    power, (fy, fx) = power_spectrum(image)
    angle = torch.atan2(fy, fx)
    weights = power / power.sum().clamp(min=1e-12)
    mean = torch.complex((weights * torch.cos(2 * angle)).sum(), (weights * torch.sin(2 * angle)).sum())
    return (math.degrees(torch.angle(mean).item()) / 2) % 180, mean.abs().item()


def orientation_spread(angles_degrees: list[float]) -> float:
    """How concentrated a set of orientations (degrees, period 180) is: the length of the mean of
    exp(2i angle), 1 when all agree, about 1/sqrt(n) for n angles spread at random."""
    doubled = torch.tensor([math.radians(2 * a) for a in angles_degrees])
    return torch.complex(torch.cos(doubled).mean(), torch.sin(doubled).mean()).abs().item()


def wavelength(image: torch.Tensor) -> float:
    """The pattern's dominant wavelength in cells: 1 / (the power-weighted mean spatial frequency) of
    an image ``[3, H, W]`` (or ``[C, *space]`` on a 3D grid), mean removed; ``inf`` for a uniform one."""
    power, frequencies = power_spectrum(image)
    radius = torch.sqrt(sum(f ** 2 for f in frequencies))
    keep = radius > 0
    if power[keep].sum() <= 1e-12:
        return math.inf                          # a uniform image: no pattern, no wavelength
    mean_frequency = (power[keep] * radius[keep]).sum() / power[keep].sum()
    return 1.0 / mean_frequency.item()
