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
``Rule``: what a saved model's JSON records (``NCA.config()``) and what ``helpers.fast`` runs.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib
import io
import json
import math
import os
import pickle
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import env

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
    else:
        raise ValueError(f"unknown filter kind {kind!r}; use 'laplacian_sobel' or 'side'")
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
    if not isinstance(state, torch.Tensor):
        raise ValueError(f"the state must be a torch tensor [batch, {channels}, height, width], "
                         f"got {type(state).__name__}")
    if state.ndim != 4 or state.shape[1] != channels:
        raise ValueError(f"the state must be shaped [batch, {channels}, height, width], got {tuple(state.shape)}")
    if state.shape[2] < 3 or state.shape[3] < 3:
        raise ValueError(f"the grid must be at least 3x3, got {tuple(state.shape[2:])}")


UPDATE_PER = ("channel", "cell")
FILTER_KINDS = ("laplacian_sobel", "side")
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
            raise ValueError(f"unknown filter kind {self.filters!r}; use 'laplacian_sobel' or 'side'")
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
    ``"channel"`` or ``"cell"``; ``filters`` is ``"laplacian_sobel"`` or ``"side"``; ``padding``
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
        if not is_int(steps) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
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
    height, width = (size, size) if isinstance(size, int) else size
    return torch.zeros(batch, channels, height, width, device=device)


def to_rgb(state: torch.Tensor) -> torch.Tensor:
    """Channels 0..2 plus 0.5, clipped to [0, 1]: the visible image, ``[B, 3, H, W]``."""
    return (state[:, :3] + 0.5).clamp(0.0, 1.0)


# ------------------------------------------------------------------------------ files

# A saved model is a pair: NAME.pt (the state_dict, tensors only) and NAME.json (config + metadata).
# The JSON records the SHA-256 of the exact .pt bytes, so a pair mixed from two saves is caught on load.
RESERVED_KEYS = ("architecture", "config", "parameters", "weights_sha256")   # written by save_model itself
CHECKPOINT_KEYS = ("model", "model_state_dict", "state_dict", "optimizer", "optimizer_state_dict", "epoch")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomically(files: dict[Path, bytes]) -> None:
    """Write every file to a temporary file in its folder, then ``os.replace`` each into place.

    A failure before the replaces leaves the old files untouched and no temporary files behind.
    (Two files cannot be replaced in one step: the weights' hash in the JSON catches a pair
    left half-replaced.)"""
    temporary = {}
    try:
        for path, data in files.items():
            handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temporary[path] = Path(name)
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())    # the bytes are on disk before the name points at them
        for path, name in temporary.items():
            os.replace(name, path)
    finally:
        for name in temporary.values():
            name.unlink(missing_ok=True)   # only what was not replaced into place is still there


def save_model(model: NCA, path: str | Path, metadata: dict | None = None) -> Path:
    """Save ``model.state_dict()`` to ``path`` (.pt) and its config plus ``metadata`` to ``path`` .json.

    Everything is checked before anything is written; then both files are replaced atomically,
    so an interrupted save leaves the previous pair (or a pair that ``load_model`` refuses)."""
    path = Path(path)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    reserved = sorted(set(metadata) & set(RESERVED_KEYS))
    if reserved:
        raise ValueError(f"metadata may not set {reserved}: save_model writes them from the model")
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    bad = [key for key, value in state_dict.items() if value.is_floating_point() and not value.isfinite().all()]
    if bad:
        raise ValueError(f"refusing to save {path.name}: non-finite weights (NaN or inf) in {bad}")
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    weights = buffer.getvalue()
    info = {"architecture": getattr(model, "architecture", "NCA"), "config": model.config(),
            "parameters": count_parameters(model),
            "saved": datetime.date.today().isoformat(), **metadata, "weights_sha256": sha256(weights)}
    try:
        text = json.dumps(info, indent=2) + "\n"
    except (TypeError, ValueError) as error:
        raise TypeError(f"the metadata for {path.name} must be JSON-serializable ({error}); nothing was written") \
            from error
    path.parent.mkdir(parents=True, exist_ok=True)
    # the JSON first: a save stopped between the two replaces leaves a new JSON whose hash the old .pt fails
    write_atomically({path.with_suffix(".json"): text.encode(), path: weights})
    return path


def load_metadata(path: str | Path) -> dict:
    path = Path(path).with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"no metadata file {path}; a model is saved as NAME.pt with NAME.json beside it")
    try:
        info = json.loads(path.read_text())
    except ValueError as error:    # json.JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path.name} is not valid JSON ({error}); save models with helpers.nca.save_model") \
            from error
    if not isinstance(info, dict):
        raise ValueError(f"{path.name} holds a JSON {type(info).__name__}, not an object; a model's JSON is the "
                         f"object ({{'architecture', 'config', ...}}) that helpers.nca.save_model writes")
    return info


def check_weights_file(name: str, state_dict) -> None:
    """One clear error for a .pt that is not a state_dict of tensors: say what it holds and what to do."""
    how = "save model.state_dict() with helpers.nca.save_model"
    if isinstance(state_dict, torch.Tensor):
        raise ValueError(f"{name} holds a single tensor, not a model's state_dict; {how}")
    if not isinstance(state_dict, dict):
        raise ValueError(f"{name} holds a {type(state_dict).__name__}, not a model's state_dict; {how}")
    found = sorted(str(key) for key in state_dict if key in CHECKPOINT_KEYS)
    if found:
        raise ValueError(f"{name} looks like a training checkpoint (it has keys {found}), not a model's weights: "
                         f"load its model's state_dict into an NCA, then {how}")
    others = sorted(str(key) for key, value in state_dict.items() if not isinstance(value, torch.Tensor))
    if others:
        raise ValueError(f"{name} is a dict whose values under {others} are not tensors, not a state_dict; {how}")


#: The model classes a saved JSON may name, and the module that defines each (imported when needed:
#: chapter 06's growing rule lives in its own module, which imports this one).
ARCHITECTURES = {"NCA": __name__, "GrowingNCA": "helpers.growing_nca",
                 "ReactionDiffusionNCA": "helpers.reaction_diffusion", "ManifoldNCA": "helpers.manifold_nca"}


def architecture(name, json_name: str = "the JSON") -> type:
    """The class of a saved model's ``architecture`` entry."""
    if name not in ARCHITECTURES:
        raise ValueError(f"{json_name} names the architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return getattr(importlib.import_module(ARCHITECTURES[name]), name)


def load_model(path: str | Path, device=None) -> NCA:
    """Load a model saved by ``save_model`` (weights only, never pickled code).

    Refused with an error that says why: a missing file; a .pt and .json from two different saves;
    a file that is not a state_dict (a list, a tensor, a training checkpoint); weights of another
    architecture; NaN or inf weights; perception filters that contradict the config.
    """
    path = Path(path)
    if not path.is_file():
        folder = path.parent
        available = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
        raise FileNotFoundError(f"no model file {path}; available in {folder}: {', '.join(available) or 'none'}")
    info = load_metadata(path)
    json_name = path.with_suffix(".json").name
    weights = path.read_bytes()     # hashed and loaded from the same bytes
    expected_hash = info.get("weights_sha256")     # absent in files saved before it was recorded
    if expected_hash is not None and expected_hash != sha256(weights):
        raise ValueError(f"{path.name} does not match {json_name}: the pair is from two different saves (a save "
                         f"interrupted between its two files, or one file replaced alone); save the model again")
    config = info.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{json_name}: 'config' must be an object of NCA options, got {type(config).__name__}")
    model = architecture(info.get("architecture", "NCA"), json_name)(**config)    # each checks its options
    try:
        state_dict = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:
        raise ValueError(f"{path.name} cannot be read as saved weights ({error}); it is truncated, corrupt, or "
                         f"holds more than tensors; save models with helpers.nca.save_model") from error
    check_weights_file(path.name, state_dict)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state_dict.items()}
    if expected != found:
        raise ValueError(f"{path.name} does not hold this architecture's weights: expected {expected}, found {found}")
    for key, value in state_dict.items():
        if not value.is_floating_point():
            raise ValueError(f"{path.name}: {key} holds {value.dtype} values, expected floating point weights")
        if not value.isfinite().all():
            raise ValueError(f"{path.name}: {key} holds non-finite values (NaN or inf); the training that saved it "
                             f"diverged: retrain, or load an earlier checkpoint")
    for name, fixed in model.named_buffers():      # fixed by the config (filters, diffusion rates): must agree
        if torch.equal(state_dict[name].to(fixed.dtype), fixed):
            continue
        if name == "filters":
            kind = f"{model.filter_kind!r} " if hasattr(model, "filter_kind") else ""
            raise ValueError(f"{path.name}: its perception filters are not the {kind}filters that "
                             f"{json_name}'s config names; the two files disagree")
        raise ValueError(f"{path.name}: its {name!r} is not what {json_name}'s config makes; the two files disagree")
    model.load_state_dict(state_dict)
    return model.to(device) if device is not None else model


def models_dir() -> Path:
    return env.data_dir() / "models"
