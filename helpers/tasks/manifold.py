"""The manifold task of chapter 07: one NCA grows many emoji, each named by a code.

Three stages, one command each (``--stage``):

* ``codes``: the rule and a learned code per training image, trained together;
* ``encoder``: the rule and codes of a ``codes`` model (``--init``) are frozen and an encoder
  (image -> code) is trained through the NCA, so that an image it never saw gets its code in one
  forward pass; the frozen language stays the same for the table's codes and the encoder's.
* ``joint``: the manifold paper's way (Hernandez Ruiz et al., arXiv 2006.12155): encoder and rule
  trained together, end to end, as an auto-encoder (image -> encoder -> code -> the NCA grows the
  image); there is no table, every code is the encoder's. Meant for the large emoji set
  (``--emoji-set many``, several hundred emoji), where there is enough to learn a language from.

Training is the course's pool loop (``helpers.train.train_pool``) with chapter 06's hooks, written
for codes: every pool entry belongs to one training image, and its code conditions the rollout; in
every batch the worst ``reseed_count`` entries are replaced by their image's seed and the best
``damage_count`` get a circular hole (chapter 06's "regenerating" experiment); the loss is the mean
squared error of RGBA. So a stage gets what every task gets: a partial save on Ctrl-C, the
divergence check before saving, ``--checkpoint``/``--resume`` and, in a notebook, the dashboard.
The split into training and held-out images is drawn from ``split_seed`` BEFORE any training, and
recorded in the model's JSON.

The CPU recipe of the shipped models is the default (16-px emoji, a margin of 3: 22 x 22 grids; 16
channels, 64 hidden units, 12-number codes; rollouts of 24 to 32 steps; 4000 iterations, about 7
minutes per method on one CPU core)::

    python -m helpers train manifold --method hyper --out data/models/manifold_hyper.pt
    python -m helpers train manifold --stage encoder --init data/models/manifold_hyper.pt \\
        --out data/models/manifold_hyper_encoder.pt
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass

import torch
from torch import nn

from .. import checks, data, models
from ..checks import check_learning_rate
from ..growing_nca import to_rgb
from ..manifold_nca import ALPHA, CHANNELS, CODE_SIZE, METHODS, ManifoldNCA, check_codes
from ..train import History, loss_curve, mean_of_last, setting, train_pool
from . import run
from .growing import RECOVERY_FACTOR, damage_masks
from .growing import per_sample_loss as per_image_loss  # chapter 06's loss; here each state has its own image

STAGES = ("codes", "encoder", "joint")
EMOJI_SETS = ("course", "many")         # data/emoji (64, the shipped two-stage models) or data/emoji/many


@dataclass
class Settings(run.CellNetworkSettings):
    """Every default of the manifold task, and of the pool loop it extends."""
    method: str = setting("hyper", "how the code reaches the rule: broadcast (every cell reads it), stamp (written "
                                   "into the seed cell) or hyper (a hypernetwork makes each image's rule)")
    stage: str = setting("codes", "codes: train the rule and a code per training image; encoder: freeze the rule "
                                  "and codes of --init and train an image -> code encoder through the NCA")
    init: str = setting("", "encoder stage: the codes model to start from (NAME.pt with NAME.json beside it)")
    emoji_set: str = setting("course", "course: the 64 emoji of data/emoji; many: the several hundred of "
                                       "data/emoji/many (data/make_emoji.py --many)")
    mirror: bool = setting(False, "also train on every training emoji mirrored left to right (twice the images)")
    held_out: int = setting(16, "emoji kept out of training, drawn with split-seed before training")
    split_seed: int = setting(0, "seed of the split into training and held-out emoji")
    target_size: int = setting(16, "each emoji is resized to this side, in cells")
    margin: int = setting(3, "empty cells around the emoji on every side (grid side: target-size + 2 margin)")
    hidden: int = setting(64, "width of the rule's hidden 1x1 layer")
    code_size: int = setting(CODE_SIZE, "numbers in an image's code")
    hyper_hidden: int = setting(32, "width of the hypernetwork's hidden layer (method hyper)")
    encoder_width: int = setting(32, "channels of the encoder's first convolution")
    reseed_count: int = setting(6, "the worst entries of a batch replaced by their image's seed")
    damage_count: int = setting(1, "the best entries of a batch that get a circular hole")
    # the pool loop's sizes for this task
    iterations: int = setting(4000, "optimizer steps")
    batch_size: int = setting(8, "pool entries per iteration")
    min_steps: int = setting(24, "fewest CA steps per iteration")
    max_steps: int = setting(33, "CA steps per iteration are drawn from [min-steps, max-steps)")
    reseed_every: int = setting(0, "the loop's own reseeding is off: the worst entries are reseeded (--reseed-count)")
    learning_rate: float = setting(2e-3, "Adam's learning rate")
    lr_milestones: tuple = setting((3000,), "iterations at which the learning rate is multiplied by lr-gamma")

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.emoji_set not in EMOJI_SETS:
            raise ValueError(f"emoji_set must be one of {EMOJI_SETS}, got {self.emoji_set!r}")
        if self.stage == "encoder" and not self.init:
            raise ValueError("the encoder stage starts from a trained codes model: pass --init NAME.pt")
        if self.stage != "encoder" and self.init:
            raise ValueError(f"--init {self.init} would be ignored: only the encoder stage starts from a saved model "
                             f"(this is the {self.stage} stage, which trains a fresh one); pass --stage encoder or "
                             "leave --init out")
        for name in ("hidden", "code_size", "hyper_hidden", "encoder_width"):     # 0 would train without codes
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r} ({run.flag(name)})")
        if self.method == "stamp" and self.code_size > CHANNELS - ALPHA - 1:
            raise ValueError(f"the stamp writes the code into the seed cell's {CHANNELS - ALPHA - 1} hidden channels: "
                             f"code_size must be at most that, got {self.code_size}")
        if self.target_size < 8 or self.margin < 1:
            raise ValueError(f"need target_size >= 8 and margin >= 1, got {self.target_size}, {self.margin}")
        if self.reseed_count < 0 or self.damage_count < 0 or self.reseed_count + self.damage_count > self.batch_size:
            raise ValueError(f"need reseed_count, damage_count >= 0 with their sum at most batch_size, got "
                             f"{self.reseed_count} + {self.damage_count} > {self.batch_size}")
        names = emoji_names(self.emoji_set)
        if not 1 <= self.held_out <= len(names) - 2:
            raise ValueError(f"held_out must leave at least 2 of the {len(names)} emoji for training, "
                             f"got {self.held_out}")

    @property
    def grid(self) -> int:
        return self.target_size + 2 * self.margin

    @property
    def trained_steps(self) -> int:
        """The step count at which a model is judged: the longest training rollout."""
        return self.max_steps - 1


# ------------------------------------------------------------------------------ data

def emoji_names(emoji_set: str = "course") -> list[str]:
    """Every emoji of a set, sorted (the same list on every machine): ``course``, the shipped emoji of
    data/emoji; ``many``, the large set of data/emoji/many (``python data/make_emoji.py --many``)."""
    if emoji_set == "course":
        return sorted(data.list_emoji())
    if emoji_set == "many":
        names = sorted(path.stem for path in many_dir().glob("*.png"))
        if not names:
            raise FileNotFoundError(f"no emoji in {many_dir()}: render them with `python data/make_emoji.py --many`")
        return names
    raise ValueError(f"emoji_set must be one of {EMOJI_SETS}, got {emoji_set!r}")


def many_dir():
    return data.emoji_dir() / "many"


def split(settings: Settings) -> tuple[list[str], list[str]]:
    """``(training, held_out)`` names: a shuffle of the set's names by ``split_seed``; held-out first."""
    names = emoji_names(settings.emoji_set)
    random.Random(settings.split_seed).shuffle(names)
    return sorted(names[settings.held_out:]), sorted(names[:settings.held_out])


def images(names: list[str], settings: Settings, device=None) -> torch.Tensor:
    """``[N, 4, target, target]``: the emoji as premultiplied RGBA, what the encoder reads."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"names must be a non-empty list of emoji names, got {names!r}; e.g. ['lizard', 'apple']")
    folder = many_dir() if settings.emoji_set == "many" else None
    return torch.stack([data.load_emoji(name if folder is None else folder / f"{name}.png", settings.target_size)
                        for name in names]).to(device)


def targets(names: list[str], settings: Settings, device=None) -> torch.Tensor:
    """``[N, 4, grid, grid]``: the emoji with their margin of empty cells, what the grown states are compared to."""
    return nn.functional.pad(images(names, settings, device), [settings.margin] * 4)


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for values in [0, 1]: 10 log10(1 / MSE)."""
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


# ------------------------------------------------------------------------------ models

def new_model(settings: Settings, image_count: int | None = None) -> ManifoldNCA:
    """The model of the settings' stage, with the parts that stage does not train frozen (the pool
    loop trains what requires a gradient): stage ``codes``, a fresh model for ``image_count`` images
    (default: the split's training emoji); stage ``encoder``, the ``init`` codes model, whose rule
    and codes stay as they are."""
    if settings.stage in ("codes", "joint"):
        image_count = len(split(settings)[0]) if image_count is None else image_count
        model = ManifoldNCA(settings.method, image_count, hidden=settings.hidden, code_size=settings.code_size,
                            hyper_hidden=settings.hyper_hidden, encoder_width=settings.encoder_width)
    else:
        model = init_model(settings)
    return freeze_for(model, settings)


def init_model(settings: Settings) -> ManifoldNCA:
    """The ``init`` codes model whose rule and codes the encoder stage keeps, checked against the settings."""
    model = models.load(settings.init)
    if not isinstance(model, ManifoldNCA):
        raise ValueError(f"--init {settings.init} is a {type(model).__name__}, not a manifold model")
    stored = run.stored_settings("manifold", Settings, models.load_metadata(settings.init)["settings"])
    mismatched = {key: (getattr(stored, key), getattr(settings, key))
                  for key in ("method", "held_out", "split_seed", "target_size", "margin", "hidden", "code_size",
                              "hyper_hidden", "encoder_width")
                  if getattr(stored, key) != getattr(settings, key)}
    if mismatched:
        raise ValueError(f"--init {settings.init} was trained with other settings (stored, given): {mismatched}; "
                         "give the same ones")
    return model


def freeze_for(model: ManifoldNCA, settings: Settings) -> ManifoldNCA:
    """The codes stage trains the rule and the table; the encoder stage only the encoder; the joint
    stage the rule and the encoder together (the table stays unused)."""
    trained = {"codes": ("rule", "codes"), "encoder": ("encoder",), "joint": ("rule", "encoder")}[settings.stage]
    for name, part in model.named_children():
        part.requires_grad_(name in trained)
    return model


def codes_for(model: ManifoldNCA, settings: Settings, indices: torch.Tensor, pictures: torch.Tensor) -> torch.Tensor:
    """The codes a stage trains with: the table's (``codes``) or the encoder's (``encoder``, ``joint``)."""
    return model.codes(indices) if settings.stage == "codes" else model.encoder(pictures[indices])


# ------------------------------------------------------------------------------ training

def training_hooks(settings: Settings, model: ManifoldNCA, device=None, names: list[str] | None = None) -> dict:
    """What ``helpers.train.train_pool`` needs to train ``model`` on the emoji ``names`` (default: the
    split's training emoji), as the module's doc says: every pool entry belongs to one image (its
    ``image``, in turn) and starts as that image's seed; each entry's code is the ``condition`` (the
    table's or the encoder's, with gradients); ``prepare_batch`` reseeds the worst and damages the best."""
    names = split(settings)[0] if names is None else names
    goals, pictures = targets(names, settings, device), images(names, settings, device)
    if settings.mirror:                  # image i + N is image i mirrored left to right
        goals, pictures = torch.cat([goals, goals.flip(-1)]), torch.cat([pictures, pictures.flip(-1)])
    damage_generator = torch.Generator().manual_seed(settings.seed + 1)
    # the joint stage trains on more images than the pool holds: every reseeded entry takes a random one
    image_generator = torch.Generator().manual_seed(settings.seed + 2)
    roaming = settings.stage == "joint"

    def make_samples(count: int) -> dict:
        owner = (torch.randint(len(goals), (count,), generator=image_generator) if roaming
                 else torch.arange(count) % len(goals)).to(device)
        with torch.no_grad():
            return {"state": model.rule.seed(codes_for(model, settings, owner, pictures), settings.grid),
                    "image": owner}

    def prepare_batch(batch: dict, iteration: int) -> dict:
        worst_first = per_image_loss(batch["state"], goals[batch["image"]]).argsort(descending=True)
        if roaming:
            batch = dict(batch, image=batch["image"].clone())
            reseeded = worst_first[:settings.reseed_count]
            batch["image"][reseeded] = torch.randint(len(goals), (len(reseeded),),
                                                     generator=image_generator).to(device)
            batch["condition"] = codes_for(model, settings, batch["image"], pictures)
        states = prepare(model, settings, batch["state"], batch["condition"], goals[batch["image"]],
                         damage_generator, worst_first)
        return {**batch, "state": states}

    def loss_fn(final: torch.Tensor, batch: dict) -> torch.Tensor:
        return per_image_loss(final, goals[batch["image"]]).mean()

    return {"make_samples": make_samples, "loss_fn": loss_fn,
            "condition": lambda batch: codes_for(model, settings, batch["image"], pictures),
            "prepare_batch": prepare_batch, "preview": to_rgb}


def train_model(model: ManifoldNCA, settings: Settings, names: list[str], progress: bool = True,
                **options) -> History:
    """Train ``model`` (one stage, ``settings.stage``) on the emoji ``names`` with the course's pool loop
    (``helpers.train.train_pool``; ``options`` go to it, e.g. a ``dashboard``). For a chapter that trains
    on a few emoji; ``train`` trains and saves a model of the settings' split. Returns the loss history;
    the model comes back with every part trainable."""
    freeze_for(model, settings)
    try:
        hooks = training_hooks(settings, model, model.filters.device, names)
        return train_pool(model, hooks.pop("make_samples"), hooks.pop("loss_fn"), settings, progress=progress,
                          **hooks, **options)
    finally:
        model.requires_grad_(True)          # every part trainable again, for the next stage or a code search


def prepare(model: ManifoldNCA, settings: Settings, states: torch.Tensor, codes: torch.Tensor, goals: torch.Tensor,
            generator: torch.Generator, order: torch.Tensor | None = None) -> torch.Tensor:
    """The batch before its rollout: the worst entries back to their seed (with the code stamped in
    for ``stamp``, so the code is trained through it), a hole in the best. ``order``: the entries,
    worst first, if already ranked (the joint stage ranks them before giving the worst new images)."""
    if order is None:
        order = per_image_loss(states, goals).argsort(descending=True)    # worst first
    reseed = torch.zeros(len(states), 1, 1, 1, device=states.device)
    reseed[order[:settings.reseed_count]] = 1.0
    states = reseed * model.rule.seed(codes, settings.grid) + (1 - reseed) * states
    if settings.damage_count:
        holes = torch.zeros_like(states[:, :1])
        best = order[len(order) - settings.damage_count:]
        holes[best] = damage_masks("circle", len(best), settings.grid, generator).to(states.device)
        states = states * (1 - holes)
    return states


# ------------------------------------------------------------------------------ measurements

@torch.no_grad()
def grow(model: ManifoldNCA, codes: torch.Tensor, settings: Settings, steps: int | None = None,
         seed: int = 0) -> torch.Tensor:
    """One rollout per code from its seed, ``steps`` (default: the trained step count), on the model's device."""
    check_codes_for(model, codes)
    device = model.filters.device
    generator = torch.Generator(device).manual_seed(seed)
    return model.grow(codes.to(device), settings.grid, settings.trained_steps if steps is None else steps, generator)


@torch.no_grad()
def encode(model: ManifoldNCA, names: list[str], settings: Settings) -> torch.Tensor:
    """The encoder's codes of the emoji ``names``. Only a model of the encoder or joint stage has a
    trained encoder (its JSON's ``settings.stage``); a codes-stage model's encoder is still its random start."""
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"names must be a list of emoji names, got {names!r}")
    return model.encoder(images(names, settings, model.filters.device))


def check_codes_for(model: ManifoldNCA, codes, names: list[str] | None = None) -> None:
    """Refuse, before any computation, codes that are not ``[N, code_size]`` (one row per image),
    and ``names`` of another count than the codes."""
    size = model.rule.code_size
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.shape[1] != size:
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"codes must be a tensor of shape [N, {size}] (one row of code_size={size} numbers per "
                         f"image), got {shape}; for one code use code[None] or code.reshape(1, -1)")
    if names is not None and len(names) != len(codes):
        raise ValueError(f"{len(codes)} codes for {len(names)} names: give one code per name, codes of shape "
                         f"[{len(names)}, {size}]")
    check_codes(codes, None, size)          # finite floating point numbers


def table_codes(model: ManifoldNCA) -> torch.Tensor:
    return model.codes.weight.detach()


def interpolate(start: torch.Tensor, end: torch.Tensor, count: int) -> torch.Tensor:
    """``[count, code_size]``: ``count`` codes evenly spaced on the straight line from ``start`` to ``end``
    (each ``[code_size]`` or ``[1, code_size]``), both included."""
    checks.check_count("count", count, 2, "count=8 (the two ends and 6 codes between)")
    if not (isinstance(start, torch.Tensor) and isinstance(end, torch.Tensor)) or start.numel() != end.numel():
        shapes = [tuple(code.shape) if isinstance(code, torch.Tensor) else type(code).__name__ for code in (start, end)]
        raise ValueError(f"start and end must be two codes of the same size (tensors [code_size] or [1, code_size]), "
                         f"got {shapes[0]} and {shapes[1]}")
    weights = torch.linspace(0.0, 1.0, count, dtype=start.dtype, device=start.device)[:, None]
    start, end = start.reshape(1, -1), end.reshape(1, -1)
    path = (1 - weights) * start + weights * end
    path[0], path[-1] = start[0], end[0]           # exactly the two codes, not up to rounding
    return path


def search_codes(model: ManifoldNCA, names: list[str], settings: Settings, start: torch.Tensor,
                 iterations: int = 100, learning_rate: float = 0.05, seed: int = 0) -> tuple[torch.Tensor, list]:
    """Codes for the emoji ``names`` found by gradient descent THROUGH the frozen model: from ``start``
    (e.g. the encoder's codes), Adam on the codes alone, the loss of chapter 06 at the trained step
    count. What a new image costs when no encoder has learned it: seconds, not a training of the rule.
    Returns the codes and the mean loss at each iteration."""
    check_codes_for(model, start, names)
    checks.check_count("iterations", iterations, 1, "iterations=100")
    check_learning_rate(learning_rate)
    device = model.filters.device
    goals = targets(names, settings, device)
    codes = start.detach().clone().to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([codes], lr=learning_rate)
    generator = torch.Generator(device).manual_seed(seed)
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    losses = []
    try:
        for _ in range(iterations):
            grown = model.grow(codes, settings.grid, settings.trained_steps, generator)
            loss = per_image_loss(grown, goals).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        for p, needed in zip(model.parameters(), frozen):
            p.requires_grad_(needed)
    return codes.detach(), losses


def errors(model: ManifoldNCA, codes: torch.Tensor, names: list[str], settings: Settings, steps: int | None = None,
           seed: int = 0) -> torch.Tensor:
    """``[N]`` mean squared errors of the images grown from ``codes`` against the emoji ``names``."""
    check_codes_for(model, codes, names)
    grown = grow(model, codes, settings, steps, seed)
    return per_image_loss(grown, targets(names, settings, grown.device)).cpu()


def summary(mse: torch.Tensor) -> dict:
    """The figures a JSON keeps of per-image errors: mean and median MSE, mean PSNR."""
    return {"count": len(mse), "mean_mse": mse.mean().item(), "median_mse": mse.median().item(),
            "mean_psnr": psnr(mse).mean().item()}


def mean_image_errors(train_names: list[str], names: list[str], settings: Settings) -> torch.Tensor:
    """The floor: every image 'reconstructed' as the mean training image."""
    mean = targets(train_names, settings).mean(dim=0, keepdim=True)
    return per_image_loss(mean.expand(len(names), -1, -1, -1), targets(names, settings))


def nearest_training(train_names: list[str], names: list[str], settings: Settings) -> torch.Tensor:
    """``[N]``: for each emoji of ``names``, the index in ``train_names`` of the training emoji closest
    to it in pixels (mean squared difference of the premultiplied RGBA targets)."""
    train, wanted = targets(train_names, settings).flatten(1), targets(names, settings).flatten(1)
    return torch.cdist(wanted, train).argmin(dim=1)


def retrieval_errors(model: ManifoldNCA, train_codes: torch.Tensor, train_names: list[str], names: list[str],
                     settings: Settings) -> torch.Tensor:
    """The baseline an encoder must beat: each emoji of ``names`` grown, through the same rule, from the
    code of the training emoji nearest to it in pixels (``train_codes``: one per ``train_names``).
    An encoder that only recognises which training emoji an image resembles scores this."""
    check_codes_for(model, train_codes, train_names)
    return errors(model, train_codes[nearest_training(train_names, names, settings)], names, settings)


def named_as(grown: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
    """``[N]``: for each grown image (RGBA in its first 4 channels), the index of the image of ``goals``
    nearest to it (mean squared error of RGBA). The matching game's answer to "which of these is it?"."""
    if grown.dim() != 4 or goals.dim() != 4 or len(grown) != len(goals) or grown.shape[2:] != goals.shape[2:]:
        raise ValueError(f"need grown [N, C, H, W] and goals [N, 4, H, W] of the same N, H and W, got "
                         f"{tuple(grown.shape)} and {tuple(goals.shape)}")
    return torch.cdist(grown[:, :4].flatten(1), goals.to(grown.device).flatten(1)).argmin(dim=1).cpu()


def identified(grown: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
    """``[N]`` booleans: whether grown image ``i`` is named as its own target ``goals[i]`` (``named_as``):
    the matching game "which of these N emoji is it?", played by pixels; guessing wins it 1 time in N."""
    return named_as(grown, goals) == torch.arange(len(grown))


def shuffled(codes: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The codes given to the wrong images: a random permutation with no image keeping its own."""
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"codes must be a tensor [N, code_size] (one row per image), got {shape}")
    count = len(codes)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return codes[order.roll(1)][order.argsort()] if count > 1 else codes


@torch.no_grad()
def regeneration(model: ManifoldNCA, codes: torch.Tensor, names: list[str], settings: Settings,
                 after: int | None = None, factor: float = RECOVERY_FACTOR, seed: int = 0) -> dict:
    """Chapter 06's measure: grow each image for the trained step count, cut a circular hole, run
    ``after`` more steps (default: the trained step count again). Recovered: the error is back
    within ``factor`` x its own error before the cut. Also the undamaged control, run as long (does
    it keep the image that long at all?), and the median errors before, just after the cut and at
    the end, which show how much of the cut's error has healed even where the strict criterion fails."""
    check_codes_for(model, codes, names)
    after = settings.trained_steps if after is None else after
    device = model.filters.device
    goals = targets(names, settings, device)
    codes = codes.to(device)
    grown = grow(model, codes, settings, seed=seed)
    before = per_image_loss(grown, goals)
    holes = damage_masks("circle", len(names), settings.grid, torch.Generator().manual_seed(seed)).to(device)
    generator = torch.Generator(device).manual_seed(seed + 1)
    result = {"after": after, "factor": factor, "count": len(names)}
    for kind, start in (("circle", grown * (1 - holes)), ("none", grown)):
        end = per_image_loss(model.rollout(start, after, codes, generator), goals)
        result[kind] = {"recovered_fraction": (end <= factor * before).float().mean().item(),
                        "median_mse_end": end.median().item()}
    result["median_mse_before"] = before.median().item()
    result["median_mse_damaged"] = per_image_loss(grown * (1 - holes), goals).median().item()
    return result


@torch.no_grad()
def stability(model: ManifoldNCA, codes: torch.Tensor, names: list[str], settings: Settings,
              lengths=(1, 2, 4, 8)) -> dict:
    """The median error after each multiple of the trained step count (does the image persist?)."""
    medians = [errors(model, codes, names, settings, steps=settings.trained_steps * k).median().item()
               for k in lengths]
    return {"steps": [settings.trained_steps * k for k in lengths], "median_mse": medians}


#: the training emoji a measurement of the large set grows (every k-th, k chosen to keep about this many)
MEASURED_TRAINING = 64


def training_codes(model: ManifoldNCA, train_names: list[str], settings: Settings) -> torch.Tensor:
    """Each training emoji's code as the model gives it: the table's (codes and encoder stages: the
    code the rule was trained with) or the encoder's (joint stage: there is no table)."""
    if settings.stage == "joint":
        return encode(model, train_names, settings)
    return table_codes(model)


def measure(model: ManifoldNCA, settings: Settings) -> dict:
    """Everything a saved model's JSON reports: reconstruction on training and held-out emoji (with
    the table's codes and the encoder's), the mean-image floor, shuffled codes, retrieval (each
    held-out emoji grown from its nearest training emoji's code), stability, regeneration. For the
    large set, the training emoji measured are every k-th of them (about ``MEASURED_TRAINING``)."""
    train_names, held_names = split(settings)
    model = model.eval()
    own = training_codes(model, train_names, settings)
    every = max(1, len(train_names) // MEASURED_TRAINING)
    measured, measured_codes = train_names[::every], own[::every]
    result = {"trained_steps": settings.trained_steps, "split": {"train": train_names, "held_out": held_names},
              "mean_image": {"train": summary(mean_image_errors(train_names, measured, settings)),
                             "held_out": summary(mean_image_errors(train_names, held_names, settings))},
              "retrieval": {"held_out": summary(retrieval_errors(model, own, train_names, held_names, settings))},
              "stability": stability(model, measured_codes, measured, settings),
              "regeneration": regeneration(model, measured_codes, measured, settings)}
    if settings.stage != "joint":
        result["table_codes"] = {"train": summary(errors(model, measured_codes, measured, settings)),
                                 "train_shuffled": summary(errors(model, shuffled(measured_codes), measured,
                                                                  settings))}
    if settings.stage in ("encoder", "joint"):
        train_codes, held_codes = encode(model, measured, settings), encode(model, held_names, settings)
        result["encoder_codes"] = {
            "train": summary(errors(model, train_codes, measured, settings)),
            "held_out": summary(errors(model, held_codes, held_names, settings)),
            "held_out_shuffled": summary(errors(model, shuffled(held_codes), held_names, settings))}
        result["regeneration_held_out"] = regeneration(model, held_codes, held_names, settings)
    return result


def summary_line(metadata: dict) -> str:
    measured = metadata["eval"]
    own = measured["table_codes" if "table_codes" in measured else "encoder_codes"]["train"]["mean_mse"]
    line = f"training emoji, own codes: MSE {own:.4f} (mean image {measured['mean_image']['train']['mean_mse']:.4f})"
    if "encoder_codes" in measured:
        held = measured["encoder_codes"]
        line += (f"; held-out emoji, encoder's codes: MSE {held['held_out']['mean_mse']:.4f} (retrieval "
                 f"{measured['retrieval']['held_out']['mean_mse']:.4f}, shuffled "
                 f"{held['held_out_shuffled']['mean_mse']:.4f}, mean image "
                 f"{measured['mean_image']['held_out']['mean_mse']:.4f})")
    return line


# ------------------------------------------------------------------------------ train and save

def describe(settings: Settings, model: ManifoldNCA, history: History) -> dict:
    return {"final_training_loss_mean_of_last_50": mean_of_last(history.losses),
            "loss_curve": loss_curve(history.losses), "eval": measure(model, settings)}


#: The recipes that were run. The defaults are the shipped two-stage models' (the method and stage chosen
#: by flags); "joint-many" is the shipped joint model's (data/models/manifold_hyper_joint.pt): the
#: paper's end-to-end training of encoder and rule, on the large emoji set with mirrored copies, 64 held
#: out, 32-number codes, 10000 iterations (648 s of training on one CPU core, its JSON says). Measured
#: against it on the same held-out emoji (data/README.md): 5000 iterations, a rule twice as wide, 24-pixel emoji.
PRESETS: dict[str, Settings] = {
    "joint-many": Settings(method="hyper", stage="joint", emoji_set="many", held_out=64, mirror=True, code_size=32,
                           iterations=10000, lr_milestones=(7000,)),
}


def default_out(settings: Settings) -> str:
    suffix = {"codes": "", "encoder": "_encoder", "joint": "_joint"}[settings.stage]
    return f"outputs/manifold_{settings.method}{suffix}.pt"


def evaluate_arguments(parser) -> None:
    """``evaluate manifold`` has no options beyond the model and ``--write``."""


def evaluate_saved(model: ManifoldNCA, metadata: dict, args) -> tuple[dict, str]:
    """Reconstruction, references, stability and regeneration of a saved model again."""
    return run.remeasure(sys.modules[__name__], model, metadata)


def train(settings: Settings, out=None, device=None, progress: bool = True, **options) -> tuple[ManifoldNCA, dict]:
    """Train (one stage), measure and (with ``out``) save a manifold model (``run.train_and_save``)."""
    return run.train_and_save(sys.modules[__name__], settings, out, device, progress, **options)


if __name__ == "__main__":           # pragma: no cover
    sys.exit("use: python -m helpers train manifold --help")
