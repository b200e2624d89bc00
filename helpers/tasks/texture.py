"""The texture task of chapter 03: grow a shipped texture from the all-zero seed.

The loss compares patch statistics of the visible channels with those of the target image (the
VGG-free sliced Wasserstein loss ``"swd"``, on patches plus a single-pixel colour term, or the VGG16
Gram loss ``"vgg"``), plus the overflow loss that keeps the states in range. The defaults are the
recipe of the shipped models (measured: see data/README.md); each is made by one command, e.g.::

    python -m helpers train texture --target stripes --size 48 --target-size 64 --iterations 2000 --min-steps 32 \
        --max-steps 64 --lr-milestones 1000 1600 --colour-weight 1.0 --threads 1 --out data/models/texture_stripes.pt

Training goes through an unstable phase in its first few hundred iterations (the loss jumps to 1e4 and
back): from the zero seed the rule first learns to make faint patterns grow, and a positively
homogeneous rule grows them at every amplitude, so pool states leave [-1, 1] until the overflow loss
has taught it to contract. A lower learning rate only delays it (measured in chapter 03), and so does a
learning-rate warm-up (``--warmup-iterations``; stripes, this recipe for 400 iterations: the first loss
above 10 at iteration 4 / 20 / 32 and the peak 1.1e5 / 4.0e4 / 2.0e4 with no warm-up / 100 / 300
warm-up iterations; every run still blew up, and after 400 iterations the warmed-up runs were further
from the texture). The default stays at no warm-up.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
from torch import nn

from .. import data, fast, losses, nca
from ..train import History, check_weight, loss_curve, mean_of_last, setting
from . import run, texture_quality

#: Steps of the long rollout a saved model is measured after (far beyond its training rollouts).
EVAL_STEPS = 2000


@dataclass
class Settings(run.EngineSettings):
    """Every default of the texture task (and, inherited, of the pool loop)."""
    target: str = setting("stripes", "a texture name from data/textures, an image file's path, or an image URL "
                                     "(http, https, file; downloaded once to outputs/downloads)")
    size: int = setting(48, "side of the training grid, in cells")
    target_size: int = setting(64, "the texture is resized to this side (0: the grid's size)")
    loss: str = setting("swd", "texture loss: swd (VGG-free sliced Wasserstein) or vgg (VGG16 Gram)")
    overflow_weight: float = setting(1.0, "weight of the loss that keeps states in [-1, 1]")
    patch_size: int = setting(3, "side of the patches the swd loss compares (odd)")
    scales: int = setting(4, "levels of the swd loss's image pyramid (full, half, quarter ... resolution)")
    colour_weight: float = setting(1.0, "weight of the swd loss's single-pixel colour term (0: patches only)")
    vgg_weights: str = setting("", "local VGG16 state_dict file (else $DSOS_VGG16_WEIGHTS or a download)")
    update_per: str = setting("channel", "the rule's random updates: channel (each value decides alone) or cell "
                                         "(all channels of a cell update together)")
    filters: str = setting("auto", "the rule's perception: laplacian_sobel (Laplacian, Sobel-x, Sobel-y), laplacian "
                                   "(on every channel: a rule with no sense of direction), or auto: laplacian for a "
                                   "target whose spectrum has no preferred orientation, else laplacian_sobel")
    select_every: int = setting(0, "every N iterations grow the rule for 2000 steps, judge it with the texture "
                                   "check and save the best weights seen, not the last (0: the last)")
    # the pool loop's sizes for this task
    iterations: int = setting(2000, "optimizer steps")
    max_steps: int = setting(64, "CA steps per iteration are drawn from [min-steps, max-steps)")
    lr_milestones: tuple = setting((1000, 1600), "iterations at which the learning rate is multiplied by lr-gamma")
    engine: str = setting("fast", "fast: helpers.fast (the same states and gradients, several times faster); "
                                  "plain: model.rollout, as the chapter teaches it")

    def __post_init__(self):
        super().__post_init__()
        if self.target not in data.list_textures() and not data.is_url(self.target):
            if not Path(self.target).exists():
                raise ValueError(f"unknown texture {self.target!r}: not a shipped texture "
                                 f"({', '.join(data.list_textures())}), an image file or a URL")
            data.load_image(self.target, 8)   # your own image: a file Pillow cannot read fails now, not later
        for name in ("overflow_weight", "colour_weight"):
            check_weight(name, getattr(self, name))
        if self.loss not in ("swd", "vgg"):
            raise ValueError(f"unknown texture loss {self.loss!r}; use 'swd' or 'vgg'")
        if not 1 <= self.scales <= 8 or self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"need 1 <= scales <= 8 and an odd patch_size >= 1, got scales={self.scales}, "
                             f"patch_size={self.patch_size}")
        if self.update_per not in nca.UPDATE_PER:
            raise ValueError(f"update_per must be one of {nca.UPDATE_PER}, got {self.update_per!r}")
        if self.filters not in ("auto", *nca.FILTER_KINDS):
            raise ValueError(f"filters must be auto or one of {nca.FILTER_KINDS}, got {self.filters!r}")
        run.check_select_every(self.select_every)
        if self.size < 3:
            raise ValueError(f"size (the training grid's side, in cells) must be at least 3, got {self.size}; e.g. 48")
        data.check_target_size(self.target_size)

    @property
    def image_size(self) -> int:
        """The side the target texture is resized to."""
        return self.target_size or self.size


#: The recipes that were run: the defaults made the 2000-iteration shipped models; ``long`` made the
#: checkerboard, Voronoi and weave models (4000 iterations, the rate lowered at 2000 and 3200).
PRESETS = {"long": replace(Settings(), iterations=4000, lr_milestones=(2000, 3200))}


def default_out(settings: Settings) -> str:
    """``outputs/texture_NAME.pt``: a shipped texture's name, or your own image's file name (a path or URL)."""
    name = settings.target if settings.target in data.list_textures() else Path(urlparse(settings.target).path).stem
    return f"outputs/texture_{name or 'image'}.pt"


def before_training(settings: Settings) -> None:
    """Download an image URL (once) now: without the internet the command fails before training."""
    if data.is_url(settings.target):
        data.fetch_image(settings.target)
        data.load_target(settings.target, 8)


def visible(state: torch.Tensor) -> torch.Tensor:
    """Channels 0..2 plus 0.5, NOT clipped (unlike ``nca.to_rgb``), so the loss still sees, and
    corrects, values out of range."""
    return state[:, :3] + 0.5


#: ``filters="auto"`` gives the rule no sense of direction (``"laplacian"``) when the target's orientation
#: bias (``texture_quality.orientation_bias``) is below this. Measured at 64 pixels: the irregular course
#: textures (bubbles, camouflage, voronoi; and spots and coral, drawn for the test) lie between 0.03 and
#: 0.11, the oriented and lattice ones (checkerboard, mondrian, plaid, polka dots, stripes, waves, weave,
#: zigzag) between 0.23 and 0.83.
ISOTROPIC_LIMIT = 0.15


def perception_of(settings: Settings) -> str:
    """The perception filters the rule gets: ``settings.filters``, with ``"auto"`` decided by the target.
    With Sobel filters a rule can move things in one direction, and on a target without one it learns to:
    navy spots grew as chevrons gliding down and to the right (data/README.md, issue 30). The Laplacian on
    every channel sees no direction, so a rule built on it can only grow round and winding shapes."""
    if settings.filters != "auto":
        return settings.filters
    target = data.load_target(settings.target, settings.image_size)
    return "laplacian" if texture_quality.orientation_bias(target) < ISOTROPIC_LIMIT else "laplacian_sobel"


def new_model(settings: Settings) -> nca.NCA:
    """The untrained 588-parameter rule of chapter 03 (its initial weights come from torch's seed)."""
    return nca.NCA(filters=perception_of(settings), update_per=settings.update_per)


def training_hooks(settings: Settings, model: nn.Module, device=None) -> dict:
    """What ``helpers.train.train_pool`` needs for this task: fresh samples and the loss."""
    return {"make_samples": make_samples(settings, device), "loss_fn": loss(settings, device), "preview": nca.to_rgb}


def make_samples(settings: Settings, device=None) -> Callable[[int], dict]:
    """``make_samples(n)`` for ``train_pool``: ``n`` all-zero seeds of the training grid."""
    return lambda count: {"state": nca.seed_state(count, settings.size, device=device)}


def loss(settings: Settings, device=None) -> Callable:
    """The training loss for ``settings``: its texture loss to the target image plus the overflow loss."""
    image = data.load_target(settings.target, settings.image_size).to(device)
    return texture_loss(image, settings.loss, settings.overflow_weight, settings.vgg_weights,
                        patch_size=settings.patch_size, colour_weight=settings.colour_weight,
                        scales=settings.scales)


def texture_loss(target: torch.Tensor, kind: str = "swd", overflow_weight: float = 1.0,
                 vgg_weights: str | None = None, patch_size: int = 3, colour_weight: float = 0.0,
                 scales: int = 4) -> Callable:
    """``loss_fn(final_states, batch)`` for ``train_pool``: texture loss (``"vgg"`` or ``"swd"``)
    of the visible channels, averaged over the batch, plus the overflow loss."""
    if kind == "vgg":
        texture = losses.VGGStyleLoss(target, weights_path=vgg_weights or None)
    elif kind == "swd":
        texture = losses.SlicedWassersteinLoss(target, scales=scales, patch=patch_size, colour_weight=colour_weight)
    else:
        raise ValueError(f"unknown texture loss {kind!r}; use 'vgg' or 'swd'")
    return with_overflow(texture, overflow_weight)


def with_overflow(texture: Callable, overflow_weight: float = 1.0) -> Callable:
    """``loss_fn(final_states, batch)``: ``texture`` (images -> [B]) of the visible channels, averaged
    over the batch, plus ``overflow_weight`` times the overflow loss; ``loss_fn.texture`` is ``texture``."""
    def loss_fn(final: torch.Tensor, batch: dict) -> torch.Tensor:
        return texture(visible(final)).mean() + overflow_weight * losses.overflow_loss(final).mean()

    loss_fn.texture = texture
    return loss_fn


@torch.no_grad()
def grow(model: nn.Module, size: int, steps: int = EVAL_STEPS, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """``batch`` states grown from the all-zero seed for ``steps`` steps, masks from a generator
    seeded with ``seed`` (repeatable). The fast engine draws the same masks from the generator as
    ``model.rollout`` (tests/test_fast.py), so this is the plain model's rollout, a few times faster."""
    device = next(model.parameters()).device
    state = nca.seed_state(batch, size, model.channels, device=device)
    return fast.infer(model, state, steps, generator=torch.Generator().manual_seed(seed))


def quality(model: nn.Module, target: torch.Tensor, size: int = 64, steps: int = EVAL_STEPS, seed: int = 0,
            batch: int = 2) -> dict:
    """Grow ``batch`` textures and measure their patch distance to ``target`` (the check's own,
    ``texture_quality.patch_distance``). Returns ``loss`` (mean over the batch), ``max_abs``
    (largest state value) and the final ``state``."""
    state = grow(model, size, steps, batch, seed)
    value = texture_quality.patch_distance(nca.to_rgb(state), target, seed).mean().item()
    return {"loss": value, "max_abs": state.abs().max().item(), "state": state}


def judge(model: nn.Module, target_name: str, image_size: int, size: int | None = None, steps: int = EVAL_STEPS,
          seed: int = 0, batch: int = 2) -> dict:
    """Grow ``batch`` textures on a ``size`` grid (default ``image_size``) for ``steps`` steps and
    run the texture check of ``helpers.tasks.texture_quality`` against the shipped texture
    ``target_name`` at ``image_size`` (judged against every other shipped texture; ``target_name`` may
    also be your own image's path or URL, judged against all the shipped ones). Returns the
    check's dict plus ``max_abs`` (largest state value), ``finite`` and the final ``state``."""
    return texture_quality.judge_state(grow(model, size or image_size, steps, batch, seed), target_name, image_size,
                                       seed)


#: Seed of the long rollouts that choose among a training's weights (``selection_score``); the
#: shipped models are judged later from other seeds.
SELECT_SEED = 1000


def selection_score(model: nn.Module, settings: Settings) -> float:
    """How far the rule's long rollout is from its target, lower is better: the number of the
    texture check's parts it fails, plus its patch distance as a fraction of the nearest other
    texture's (so among rules failing as many parts, the closer one wins). Two textures grown for
    ``EVAL_STEPS`` steps on the evaluation grid from ``SELECT_SEED``."""
    eval_size = max(settings.size, settings.image_size)
    return score_of(judge(model, settings.target, settings.image_size, eval_size, seed=SELECT_SEED))


def score_of(result: dict) -> float:
    """A texture check's verdict as one number, lower is better: the parts it fails, plus the patch
    distance as a fraction of the nearest other texture's; infinite for a state that is not finite."""
    if not result["finite"]:
        return float("inf")
    failed = sum(not result[part]["passed"] for part in texture_quality.PARTS)
    return failed + result["patch"]["ratio"]


#: The starts (mask seeds) a saved model is judged from, two textures each, and how many of them must
#: pass for the model to pass: one lucky start does not make a texture rule.
STARTS = (1, 2, 3, 4, 5)
STARTS_TO_PASS = 4


def measure(model: nn.Module, settings: Settings) -> dict:
    """The ``eval`` entry of a saved model's JSON: after a long rollout from each of ``STARTS``, the
    texture check; the model ``passed`` when at least ``STARTS_TO_PASS`` starts pass (``starts``
    says which). ``reasons`` and the figures (``quality``) are those of the first failing start (else
    the first start); for reference, the VGG-free loss beside that of a grey image and of every other
    shipped texture."""
    eval_size = max(settings.size, settings.image_size)
    results = [judge(model, settings.target, settings.image_size, eval_size, seed=seed) for seed in STARTS]
    passes = [result["passed"] for result in results]
    result = next((result for result in results if not result["passed"]), results[0])
    target = data.load_target(settings.target, settings.image_size)
    grey = texture_quality.patch_distance(torch.full((1, 3, eval_size, eval_size), 0.5), target).item()
    others = result["patch"]["other_distances"]       # the check already measured every other texture
    return {"steps": EVAL_STEPS, "size": eval_size, "image_size": settings.image_size,
            "passed": sum(passes) >= STARTS_TO_PASS, "starts": {"seeds": list(STARTS), "passed": passes},
            "reasons": result["reasons"],
            "quality": {key: result[key] for key in texture_quality.PARTS},
            "swd_loss": result["patch"]["distance"], "max_abs_state": result["max_abs"],
            "swd_grey_image": grey, "swd_closest_other_texture": min(others.values()), "other_textures": others}


def describe(settings: Settings, model: nn.Module, history: History) -> dict:
    """What a saved texture model's JSON says about how it was made and how good it is."""
    return {
        "task": "texture", "target": settings.target, "loss_kind": settings.loss,
        "loss_note": ("trained with the VGG-free sliced Wasserstein patch loss (no VGG16 weights offline)"
                      if settings.loss == "swd" else "trained with the VGG16 Gram style loss"),
        "final_training_loss_mean_of_last_50": mean_of_last(history.losses),
        "loss_curve": loss_curve(history.losses),
        "eval": measure(model, settings),
    }


def summary_line(metadata: dict) -> str:
    """One line for the command to print after training."""
    measured = metadata["eval"]
    return (f"training loss {metadata['final_training_loss_mean_of_last_50']:.4g}; after {measured['steps']} steps "
            f"the texture check says {starts_verdict(measured)}{texture_quality.summary(shown_check(measured))}")


def starts_verdict(measured: dict) -> str:
    """"PASS from 5 of 5 starts (needs 4); start 1: " for an ``eval`` entry (empty for JSONs written
    before models were judged from several starts). The figures that follow are the start named."""
    starts = measured.get("starts")
    if not starts:
        return ""
    passed = starts["passed"]
    shown = starts["seeds"][passed.index(False)] if False in passed else starts["seeds"][0]
    return (f"{'PASS' if measured['passed'] else 'FAIL'} from {sum(passed)} of {len(passed)} starts "
            f"(needs {STARTS_TO_PASS}); start {shown}: ")


def shown_check(measured: dict) -> dict:
    """The check's result of the start whose figures an ``eval`` entry keeps (its first failing start,
    else its first), for ``texture_quality.summary`` and ``verdicts``."""
    starts = measured.get("starts")
    passed = (False not in starts["passed"]) if starts else measured["passed"]
    return {"passed": passed, "reasons": measured["reasons"], **measured["quality"]}


def evaluate_arguments(parser) -> None:
    """``evaluate texture MODEL [--target TEXTURE]``: the check against another texture than the model's own."""
    parser.add_argument("--target", help="judge the grown texture against this one instead of the model's own: a "
                                         "texture name, an image file or a URL (not stored: --write is refused)")


def evaluate_saved(model: nn.Module, metadata: dict, args) -> tuple[dict, str]:
    """The texture check of a saved model again (its recorded settings, or --target), a verdict per part."""
    settings = run.stored_settings("texture", Settings, metadata["settings"])
    target = getattr(args, "target", None)
    if target and target != settings.target:
        if getattr(args, "write", False):
            raise ValueError(f"--write stores the check against the model's own target ({settings.target}); "
                             f"drop --target {target} to store it, or --write to only print the check")
        settings = replace(settings, target=target)         # checks the target: a name, a file or a URL
    measured = measure(model, settings)
    text = (f"against {settings.target}: {summary_line({**metadata, 'eval': measured})}\n"
            f"{texture_quality.verdicts(shown_check(measured))}")
    return {"eval": measured}, text


def train(settings: Settings, out=None, device=None, progress: bool = True, **options) -> tuple[nn.Module, dict]:
    """Train, measure and (with ``out``, a ``.pt`` path) save a texture model; returns it and its
    metadata. The grid is ``size`` x ``size``; the target image is the texture resized to
    ``target_size``. The two may differ: the loss compares patch statistics, not pixels, so a small
    grid can learn the texture at the scale of a larger image (cheaper training). ``options``: see
    ``helpers.tasks.run.train_and_save``."""
    return run.train_and_save(sys.modules[__name__], settings, out, device, progress, **options)
