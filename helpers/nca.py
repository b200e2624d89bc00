"""The neural cellular automaton of chapter 03, as the later chapters import it.

The state is a tensor ``[batch, 12, height, width]``; channels 0..2 read as RGB after adding 0.5.
One step of the rule:

1. **perceive**: every channel is convolved with one fixed 3x3 filter (a depthwise convolution
   with wraparound padding, or zero padding with ``padding="zeros"``): a Laplacian on channels 0..3,
   Sobel-x on 4..7, Sobel-y on 8..11;
2. **update**: the 12 state values and the 12 perception values of a cell (24 numbers) are split
   into positive and negative parts (48 numbers) and mapped by one 1x1 convolution to 12 changes:
   48 x 12 weights + 12 biases = **588 parameters**;
3. **stochastic update**: each change is applied with probability 0.5 (a random mask).

Chapter 03 builds this from scratch and asserts that it agrees with ``NCA`` here. ``NCA.rule()``
describes a model's options (channels, split_relu, filters, update_rate, update_per, padding) as one frozen
``Rule``: what a saved model's JSON records (``NCA.config()``; saving and loading are ``helpers.models``)
and what ``helpers.fast`` runs.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import checks
from .checks import check_steps

CHANNELS = 12

LAPLACIAN = torch.tensor([[1.0, 2.0, 1.0], [2.0, -12.0, 2.0], [1.0, 2.0, 1.0]])
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = SOBEL_X.T.contiguous()


def side_filters() -> list[torch.Tensor]:
    """The four "side" filters: each is (one neighbour) - (centre), for up, down, left and right."""
    filters = []
    for row, column in [(0, 1), (2, 1), (1, 0), (1, 2)]:
        kernel = torch.zeros(3, 3)
        kernel[row, column] = 1.0
        kernel[1, 1] = -1.0
        filters.append(kernel)
    return filters


def perception_filters(kind: str = "laplacian_sobel", channels: int = CHANNELS) -> torch.Tensor:
    """One 3x3 filter per channel, shaped ``[channels, 1, 3, 3]`` for a depthwise convolution.

    ``"laplacian_sobel"``: Laplacian on the first third of the channels, Sobel-x on the second
    third, Sobel-y on the last (for 12 channels: 0..3, 4..7, 8..11).
    ``"side"``: the four side filters (up, down, left, right), each on a quarter of the channels
    (for 12 channels: 0..2, 3..5, 6..8, 9..11).
    ``"laplacian"``: the Laplacian on every channel. Nothing the cell sees depends on direction, so the
    rule cannot prefer one (isotropic): it can grow spots and labyrinths, not stripes at an angle.
    """
    if kind == "laplacian_sobel":
        if channels % 3 != 0 or channels < 3:
            raise ValueError(f"the Laplacian/Sobel filters need a positive multiple of 3 channels, got {channels}")
        third = channels // 3
        kernels = [LAPLACIAN] * third + [SOBEL_X] * third + [SOBEL_Y] * third
    elif kind == "side":
        if channels % 4 != 0 or channels < 4:
            raise ValueError(f"the side filters need a positive multiple of 4 channels, got {channels}")
        quarter = channels // 4
        kernels = [kernel for kernel in side_filters() for _ in range(quarter)]
    elif kind == "laplacian":
        if channels < 1:
            raise ValueError(f"the Laplacian filters need at least one channel, got {channels}")
        kernels = [LAPLACIAN] * channels
    else:
        raise ValueError(f"unknown filter kind {kind!r}; use one of {', '.join(FILTER_KINDS)}")
    return torch.stack(kernels)[:, None]


def perceive(state: torch.Tensor, filters: torch.Tensor, padding: str = "circular") -> torch.Tensor:
    """Depthwise 3x3 convolution of every channel with its own filter.

    ``padding="circular"``: the grid wraps around (a torus: the left edge's neighbours are the
    right edge's cells); ``"zeros"``: the cells beyond the border read as 0 (a flat world with edges).
    """
    check_state(state, filters.shape[0])
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    mode = "circular" if padding == "circular" else "constant"
    padded = F.pad(state, (1, 1, 1, 1), mode=mode)
    return F.conv2d(padded, filters.to(state.dtype), groups=state.shape[1])


def split_signs(values: torch.Tensor) -> torch.Tensor:
    """``[relu(v), -relu(-v)]`` along the channels: each value gets a coefficient per sign."""
    return torch.cat([F.relu(values), -F.relu(-values)], dim=1)


def update_mask(shape, rate: float = 0.5, per: str = "channel", generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """A random 0/1 mask of which values update this step.

    ``per="channel"``: every value decides alone, shape ``[B, C, H, W]``;
    ``per="cell"``: all channels of a cell decide together, shape ``[B, 1, H, W]``.
    """
    batch, channels, height, width = shape
    if per == "channel":
        mask_shape = (batch, channels, height, width)
    elif per == "cell":
        mask_shape = (batch, 1, height, width)
    else:
        raise ValueError(f"per must be 'channel' or 'cell', got {per!r}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"update rate must be in [0, 1], got {rate}")
    return (torch.rand(mask_shape, generator=generator, device=device) < rate).float()


def check_state(state: torch.Tensor, channels: int = CHANNELS) -> None:
    checks.check_state(state, channels, least_side=3)     # the 3x3 filters need a 3x3 grid


UPDATE_PER = ("channel", "cell")
FILTER_KINDS = ("laplacian_sobel", "side", "laplacian")
PADDINGS = ("circular", "zeros")


def is_int(value) -> bool:
    """A plain int (``True``/``False`` are ints to Python, but never a channel count or a step count)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Rule:
    """What an ``NCA`` computes, apart from its weights: the options of its constructor, frozen.

    ``NCA.rule()`` returns it, ``NCA.config()`` is it as a dict (what a saved model's JSON holds),
    ``NCA(**dataclasses.asdict(rule))`` builds the model again, and ``helpers.fast`` runs it.
    """

    channels: int = CHANNELS
    split_relu: bool = True              # [relu(v), min(v, 0)] per feature (588 parameters) or v (300)
    filters: str = "laplacian_sobel"     # the kind of perception filters, see perception_filters
    update_rate: float = 0.5             # the probability that a value (or a cell) updates in one step
    update_per: str = "channel"          # "channel": every value decides alone; "cell": a cell's channels together
    padding: str = "circular"            # what lies beyond the border: "circular" (wrap around) or "zeros"

    def __post_init__(self):
        # every option is checked here, so NCA(...), a saved model's config and helpers.fast share one path
        if not is_int(self.channels):
            raise TypeError(f"channels must be an int, got {self.channels!r} ({type(self.channels).__name__})")
        if self.channels < 1:
            raise ValueError(f"channels must be positive, got {self.channels}")
        if not isinstance(self.split_relu, bool):
            raise TypeError(f"split_relu must be True or False, got {self.split_relu!r}")
        if not isinstance(self.filters, str) or self.filters not in FILTER_KINDS:
            raise ValueError(f"unknown filter kind {self.filters!r}; use one of {', '.join(FILTER_KINDS)}")
        if isinstance(self.update_rate, bool) or not isinstance(self.update_rate, (int, float)):
            raise TypeError(f"update_rate must be a number in [0, 1], got {self.update_rate!r}")
        if not (math.isfinite(self.update_rate) and 0.0 <= self.update_rate <= 1.0):
            raise ValueError(f"update_rate must be a finite number in [0, 1], got {self.update_rate}")
        if not isinstance(self.update_per, str) or self.update_per not in UPDATE_PER:
            raise ValueError(f"update_per must be one of {UPDATE_PER}, got {self.update_per!r}")
        if not isinstance(self.padding, str) or self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")

    @property
    def inputs(self) -> int:
        """The inputs of the 1x1 layer per cell: state and perception (2C), split into signs (4C)."""
        return 2 * self.channels * (2 if self.split_relu else 1)


class NCA(nn.Module):
    """The 12-channel texture NCA: fixed perception, one 1x1 convolution, stochastic updates.

    ``split_relu=True`` gives the 588-parameter rule of the course (48 inputs per cell);
    ``split_relu=False`` the plain 300-parameter rule (24 inputs). ``update_per`` is
    ``"channel"`` or ``"cell"``; ``filters`` is ``"laplacian_sobel"``, ``"side"`` or ``"laplacian"``; ``padding``
    is ``"circular"`` (the world wraps around, as in chapter 03) or ``"zeros"`` (a world with edges).
    ``rule()`` returns these options as one frozen ``Rule``.
    """

    def __init__(self, channels: int = CHANNELS, split_relu: bool = True, filters: str = "laplacian_sobel",
                 update_rate: float = 0.5, update_per: str = "channel", padding: str = "circular",
                 init_scale: float = 1e-3):
        super().__init__()
        rule = Rule(channels, split_relu, filters, update_rate, update_per, padding)   # clear errors for bad options
        self.channels, self.split_relu, self.filter_kind = channels, split_relu, filters
        self.update_rate, self.update_per, self.padding = update_rate, update_per, padding
        self.register_buffer("filters", perception_filters(filters, channels))
        self.update = nn.Conv2d(rule.inputs, channels, kernel_size=1)
        with torch.no_grad():
            self.update.weight.normal_().mul_(init_scale)
            self.update.bias.zero_()

    def rule(self) -> Rule:
        """The rule this model computes (its options, frozen; the weights are not part of it)."""
        return Rule(channels=self.channels, split_relu=self.split_relu, filters=self.filter_kind,
                    update_rate=self.update_rate, update_per=self.update_per, padding=self.padding)

    def config(self) -> dict:
        """The constructor arguments (``rule()`` as a dict), stored next to saved weights."""
        return dataclasses.asdict(self.rule())

    def delta(self, state: torch.Tensor) -> torch.Tensor:
        """The proposed change of every value (before the random mask)."""
        features = torch.cat([state, perceive(state, self.filters, self.padding)], dim=1)
        if self.split_relu:
            features = split_signs(features)
        return self.update(features)

    def forward(self, state: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """One step. ``mask`` (broadcastable to the state) overrides the random update mask;
        pass ``torch.ones(1)`` to update every value (deterministic mode)."""
        check_state(state, self.channels)
        if mask is None:
            mask = update_mask(state.shape, self.update_rate, self.update_per, generator, state.device)
        return state + self.delta(state) * mask

    def rollout(self, state: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                keep_every: int | None = None):
        """Run ``steps`` steps. With ``keep_every=k`` also return the list of states every k steps."""
        steps = check_steps(steps)        # a whole number >= 0 (a NumPy integer too), the check every rule shares
        frames = []
        for step in range(steps):
            if keep_every and step % keep_every == 0:
                frames.append(state.detach().clone())
            state = self(state, generator=generator)
        if keep_every:
            frames.append(state.detach().clone())
            return state, frames
        return state


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def seed_state(batch: int, size: int | tuple[int, int], channels: int = CHANNELS, device=None) -> torch.Tensor:
    """The seed: every value zero (so the visible image starts uniform grey)."""
    checks.check_count("batch", batch, 1, "batch=1")
    height, width = checks.grid_shape(size)
    return torch.zeros(batch, channels, height, width, device=device)


def to_rgb(state: torch.Tensor) -> torch.Tensor:
    """Channels 0..2 plus 0.5, clipped to [0, 1]: the visible image, ``[B, 3, H, W]`` (of a volume's state
    ``[B, C, D, H, W]`` or a mesh's ``[B, C, V]`` alike: chapter 08 shows both)."""
    if not isinstance(state, torch.Tensor) or state.ndim < 3 or state.shape[1] < 3:    # a mesh's [B, C, V] is fine too
        checks.check_state(state, CHANNELS)       # says what a state is (any number of channels >= 3 is shown)
    return (state[:, :3] + 0.5).clamp(0.0, 1.0)
