"""The growing NCA of chapter 06 (Mordvintsev et al., "Growing Neural Cellular Automata", Distill 2020).

The state is ``[batch, 16, height, width]``: channels 0..3 are the cell's colour as premultiplied
RGBA (RGB already multiplied by alpha, each in [0, 1], NOT offset by 0.5 as in chapter 03), channels
4..15 are hidden. One step:

1. **alive before**: a cell is alive if any cell of its 3x3 neighbourhood has alpha > 0.1;
2. **perceive**: every channel convolved with the identity, Sobel-x / 8 and Sobel-y / 8 (zero
   padding: the world has edges): 16 x 3 = 48 numbers per cell;
3. **update**: a 1x1 layer 48 -> 128 with ReLU, then a 1x1 layer 128 -> 16 whose weights and bias
   start at zero (so an untrained rule changes nothing): 6,272 + 2,064 = **8,336 parameters**;
4. **stochastic update**: each cell applies its change with probability 0.5 (all channels together);
5. **alive after**: cells dead before or after the update are set to zero.

Chapter 06 builds this from scratch and asserts that it agrees with ``GrowingNCA`` here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import checks
from .checks import check_steps

CHANNELS = 16
ALPHA = 3                      # the alpha channel: channels 0..2 are premultiplied RGB
IDENTITY = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
SOBEL_Y = SOBEL_X.T.contiguous()


def perception_kernels(angle: float = 0.0) -> torch.Tensor:
    """The three 3x3 kernels ``[3, 3, 3]``: identity, and the Sobel pair turned by ``angle`` radians.

    Turning the gradient pair turns the cells' sense of direction: a rule trained at angle 0 and
    run at angle a grows its pattern turned by a (up to the grid's own squareness)."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.stack([IDENTITY, c * SOBEL_X - s * SOBEL_Y, s * SOBEL_X + c * SOBEL_Y])


def depthwise_filters(channels: int = CHANNELS, angle: float = 0.0) -> torch.Tensor:
    """``[3 * channels, 1, 3, 3]``: the three kernels for every channel, in the order
    (channel 0: identity, x, y), (channel 1: identity, x, y), ... that ``perceive`` produces."""
    kernels = perception_kernels(angle)
    return rearrange(kernels.repeat(channels, 1, 1), "n h w -> n 1 h w").contiguous()


def perceive(state: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, 3C, H, W]``: each channel's value and its two gradients, zero padding."""
    return F.conv2d(state, filters.to(state.dtype), padding=1, groups=state.shape[1])


def alive_mask(state: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """``[B, 1, H, W]`` booleans: some cell of the 3x3 neighbourhood has alpha above ``threshold``."""
    return F.max_pool2d(state[:, ALPHA:ALPHA + 1], kernel_size=3, stride=1, padding=1) > threshold


def check_state(state: torch.Tensor, channels: int) -> None:
    checks.check_state(state, channels)


def check_cell_options(channels, hidden, fire_rate, alive_threshold) -> None:
    """The options every growing rule shares (chapter 06's and chapter 07's), one check for both:
    whole-number sizes, a firing probability that lets cells update, a finite alive threshold."""
    for name, value, least, why in (("channels", channels, ALPHA + 1, "RGBA first"),
                                    ("hidden", hidden, 1, "the width of the hidden layer")):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be a whole number >= {least} ({why}), got {value!r}")
    if isinstance(fire_rate, bool) or not isinstance(fire_rate, (int, float)) or not 0.0 < fire_rate <= 1.0:
        raise ValueError(f"fire_rate is the probability that a cell updates in a step: it must lie in (0, 1] "
                         f"(0 would freeze every cell), got {fire_rate!r}; the course uses 0.5")
    if isinstance(alive_threshold, bool) or not isinstance(alive_threshold, (int, float)) \
            or not 0.0 <= alive_threshold < 1.0:
        raise ValueError(f"alive_threshold is the alpha above which a cell counts as alive: it must lie in "
                         f"[0, 1), got {alive_threshold!r}; the course uses 0.1")


class GrowingNCA(nn.Module):
    """The growing rule. ``hidden``: width of the 1x1 layer (128 in the article)."""

    architecture = "GrowingNCA"      # what a saved model's JSON records (helpers.models.save)

    def __init__(self, channels: int = CHANNELS, hidden: int = 128, fire_rate: float = 0.5,
                 alive_threshold: float = 0.1):
        super().__init__()
        check_cell_options(channels, hidden, fire_rate, alive_threshold)
        self.channels, self.hidden = channels, hidden
        self.fire_rate, self.alive_threshold = fire_rate, alive_threshold
        self.register_buffer("filters", depthwise_filters(channels))
        self.sense = nn.Conv2d(3 * channels, hidden, 1)
        self.act = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.act.weight)      # an untrained rule leaves every state as it is
        nn.init.zeros_(self.act.bias)

    def config(self) -> dict:
        return {"channels": self.channels, "hidden": self.hidden, "fire_rate": self.fire_rate,
                "alive_threshold": self.alive_threshold}

    def change(self, state: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
        """What every cell would add to its state this step (before the random mask).

        The two 1x1 convolutions are written as matrix products over the cells (one row of 48
        numbers per cell): the same arithmetic as ``self.act(relu(self.sense(perceived)))``, about
        1.5x faster on a CPU, most of all for states in channels-last memory order (``rollout``)."""
        perceived = perceive(state, self.filters if filters is None else filters)
        cells = rearrange(perceived, "b c h w -> b h w c")
        hidden = F.relu(F.linear(cells, self.sense.weight.flatten(1), self.sense.bias))
        change = F.linear(hidden, self.act.weight.flatten(1), self.act.bias)
        return rearrange(change, "b h w c -> b c h w")

    def step(self, state: torch.Tensor, generator: torch.Generator | None = None,
             fire: torch.Tensor | None = None, filters: torch.Tensor | None = None) -> torch.Tensor:
        """One step. ``fire``: a ``[B, 1, H, W]`` 0/1 mask of the cells that update (default: random,
        each with probability ``fire_rate``, from ``generator``). ``filters``: other perception
        filters (e.g. ``depthwise_filters(angle=...)`` to grow a turned pattern)."""
        check_state(state, self.channels)
        before = alive_mask(state, self.alive_threshold)
        if fire is None:
            fire = torch.rand(state.shape[0], 1, *state.shape[2:], generator=generator,
                              device=state.device) < self.fire_rate
        state = state + self.change(state, filters) * fire.to(state.dtype)
        after = alive_mask(state, self.alive_threshold)
        return state * (before & after).to(state.dtype)

    def rollout(self, state: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                filters: torch.Tensor | None = None) -> torch.Tensor:
        """``steps`` steps. The state is kept in channels-last memory order (same values, each cell's
        channels side by side), which the matrix products of ``change`` read fastest."""
        steps = check_steps(steps)
        checks.check_state(state, self.channels, least_side=3)    # NaN goes on as NaN, as in the plain model
        state = state.contiguous(memory_format=torch.channels_last)
        for _ in range(steps):
            state = self.step(state, generator, filters=filters)
        return state

    def forward(self, state: torch.Tensor, steps: int = 1) -> torch.Tensor:
        return self.rollout(state, steps)


def seed_state(batch: int, size: int | tuple[int, int], channels: int = CHANNELS, device=None) -> torch.Tensor:
    """``batch`` grids with the single seed cell: every channel but RGB set to 1 at the centre, all else 0
    (the argument order of ``helpers.nca.seed_state``)."""
    checks.check_count("batch", batch, 1, "batch=1")
    height, width = checks.grid_shape(size)
    state = torch.zeros(batch, channels, height, width, device=device)
    state[:, ALPHA:, height // 2, width // 2] = 1.0
    return state


def to_rgba(state: torch.Tensor) -> torch.Tensor:
    """The visible channels, clipped to [0, 1] (premultiplied RGBA)."""
    if not isinstance(state, torch.Tensor) or state.ndim != 4 or state.shape[1] <= ALPHA:
        checks.check_state(state, CHANNELS)       # says what a state is (any number of channels >= 4 is shown)
    return state[:, :ALPHA + 1].clamp(0.0, 1.0)


def to_rgb(state: torch.Tensor, background: float = 1.0) -> torch.Tensor:
    """Composite the premultiplied colour over a ``background`` grey (1: white), ``[B, 3, H, W]`` in [0, 1].

    A trained rule may leave a colour value above its alpha (not a valid premultiplied colour), so
    the result is clipped again: what it shows is the closest displayable colour."""
    rgba = to_rgba(state)
    return (rgba[:, :3] + background * (1.0 - rgba[:, 3:4])).clamp(0.0, 1.0)
