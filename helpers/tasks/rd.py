"""The reaction-diffusion task of chapter 08: a rule with no sense of direction grows a texture.

The rule is ``helpers.reaction_diffusion.ReactionDiffusionNCA`` (fixed per-channel diffusion plus a
per-cell reaction network). Pool training as in chapter 03, with three differences:

* the seed is a random field (every channel uniform in [-0.5, 0.5]), not zeros: a rule that sees only
  its own cell and diffusion cannot break the symmetry of a uniform state;
* the texture loss is ``losses.RotationInvariantLoss``: the sliced Wasserstein patch loss of chapter 03
  (plus its single-pixel colour term) to the best of ``angles`` turned copies of the target, because the
  rule cannot choose the orientation of its pattern (the random seed does);
* every step is deterministic (no random update mask): diffusion already breaks synchrony's artefacts.

The defaults are the reference's sizes (32 channels, 128 hidden units: 8,320 parameters) and a rule
without a clamp; the shipped models use the preset ``cpu`` (a smaller rule whose every step clamps the
state to [-1, 1], and the best long rollout kept; see data/README.md), one command each, e.g.::

    python -m helpers train rd --preset cpu --target polka_dots --threads 1 --out outputs/rd_polka_dots.pt
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import data, losses
from ..reaction_diffusion import (
    ReactionDiffusionNCA,
    dominant_orientation,
    orientation_spread,
    random_field,
    to_rgb,
    wavelength,
)
from ..train import History, check_weight, loss_curve, mean_of_last, setting
from . import run, texture, texture_quality

#: Steps of the long rollout a saved model is measured after (many times its training rollouts).
EVAL_STEPS = 2000


@dataclass
class Settings(run.CellNetworkSettings):
    """Every default of the reaction-diffusion task, and of the pool loop it extends."""
    target: str = setting("polka_dots", "a texture name from data/textures, or an image file's path")
    size: int = setting(48, "side of the training grid, in cells")
    target_size: int = setting(64, "the texture is resized to this side (0: the grid's size)")
    channels: int = setting(32, "state channels (0..2 are the visible colour)")
    hidden: int = setting(128, "width of the reaction network's hidden layer")
    diffusion_min: float = setting(0.005, "diffusion rate of channel 0 (cells^2 per step)")
    diffusion_max: float = setting(0.25, "diffusion rate of the last channel; the rates between are geometric")
    angles: int = setting(8, "turned copies of the target the loss takes the best of (1: a plain texture loss)")
    colour_weight: float = setting(1.0, "weight of the loss's single-pixel colour term")
    overflow_weight: float = setting(1.0, "weight of the loss that keeps states in [-1, 1]")
    clamp_state: bool = setting(False, "clamp every step's state to [-1, 1] (chemicals with a bounded "
                                       "concentration: no overflow, no loss spikes)")
    select_every: int = setting(0, "every N iterations grow the rule for 2000 steps from random fields, judge it "
                                   "with the texture check and save the best weights seen, not the last (0: the last)")
    # the pool loop's sizes for this task
    iterations: int = setting(2000, "optimizer steps")
    min_steps: int = setting(32, "fewest RD steps per iteration")
    max_steps: int = setting(64, "RD steps per iteration are drawn from [min-steps, max-steps)")
    lr_milestones: tuple = setting((1000, 1600), "iterations at which the learning rate is multiplied by lr-gamma")

    def __post_init__(self):
        super().__post_init__()
        if self.target not in data.list_textures():
            data.load_target(self.target, 8)      # an unknown name or unreadable file fails now, naming it
        if self.size < 8:
            raise ValueError(f"size (the training grid's side, in cells) must be at least 8, got {self.size}; e.g. 48")
        data.check_target_size(self.target_size)
        for name in ("overflow_weight", "colour_weight"):
            check_weight(name, getattr(self, name))
        run.check_select_every(self.select_every)
        if not (isinstance(self.angles, int) and self.angles >= 1):
            raise ValueError(f"angles must be a whole number >= 1, got {self.angles!r}")
        ReactionDiffusionNCA(self.channels, self.hidden, self.diffusion_min, self.diffusion_max,   # checks them
                             self.clamp_state)

    @property
    def image_size(self) -> int:
        return self.target_size or self.size


#: The recipes that were run. ``cpu``, the shipped models': 16 channels and 64 hidden units (2,112
#: parameters), every step clamped to [-1, 1] (no overflow, so no loss spikes: chapter 08, section 5.1),
#: 1500 iterations, and every 100 of them the rule grown for 2000 steps and the best weights by that long
#: rollout kept (about 0.55 s per iteration on one core at 48 x 48, two runs sharing a 2-core CPU: 14
#: minutes per model).
PRESETS = {"cpu": replace(Settings(), channels=16, hidden=64, iterations=1500, lr_milestones=(1000,), clamp_state=True,
                          select_every=100)}


def default_out(settings: Settings) -> str:
    return f"outputs/rd_{Path(settings.target).stem}.pt"


def new_model(settings: Settings) -> ReactionDiffusionNCA:
    return ReactionDiffusionNCA(settings.channels, settings.hidden, settings.diffusion_min, settings.diffusion_max,
                                settings.clamp_state)


def training_hooks(settings: Settings, model: nn.Module, device=None) -> dict:
    """What ``helpers.train.train_pool`` needs for this task: random fields and the loss."""
    return {"make_samples": make_samples(settings, device), "loss_fn": loss(settings, device), "preview": to_rgb}


def make_samples(settings: Settings, device=None) -> Callable[[int], dict]:
    """``make_samples(n)``: ``n`` random fields (from torch's global generator, seeded by the loop)."""
    return lambda count: {"state": random_field(count, settings.size, settings.channels, device=device)}


def loss(settings: Settings, device=None) -> Callable:
    """The rotation-invariant texture loss of the visible channels plus the overflow loss (chapter 03's
    ``texture.with_overflow``)."""
    target = data.load_target(settings.target, settings.image_size).to(device)
    invariant = losses.RotationInvariantLoss(target, settings.angles, colour_weight=settings.colour_weight)
    return texture.with_overflow(invariant, settings.overflow_weight)


@torch.no_grad()
def grow(model: nn.Module, size: int | tuple = 64, steps: int = EVAL_STEPS, batch: int = 2, seed: int = 0,
         **speeds) -> torch.Tensor:
    """``batch`` states grown from random fields drawn with ``seed`` (repeatable) for ``steps`` steps
    on a grid of side ``size`` (or a shape: ``(depth, height, width)`` grows a volume). ``speeds``:
    ``diffusion_speed`` and ``reaction_speed`` of ``ReactionDiffusionNCA.step``."""
    device = next(model.parameters()).device
    state = random_field(batch, size, model.channels, torch.Generator().manual_seed(seed), device)
    return model.rollout(state, steps, **speeds)


def judge(model: nn.Module, target: str, image_size: int = 64, size: int = 64, steps: int = EVAL_STEPS,
          seed: int = 0, batch: int = 2, angles: int = 8) -> dict:
    """Grow ``batch`` textures and run chapter 03's texture check at any orientation (``angles`` turned
    targets; the orientation histogram against the turned targets' at its best shift), judged against every
    other shipped texture.
    Returns the check's dict plus ``finite``, ``max_abs`` and the final ``state``."""
    return texture_quality.judge_state(grow(model, size, steps, batch, seed), target, image_size, seed, angles)


def orientations(model: nn.Module, runs: int = 20, size: int = 64, steps: int = EVAL_STEPS) -> list[tuple]:
    """The dominant orientation (degrees) and its strength (``dominant_orientation``) of the pattern
    grown from each of ``runs`` different random seeds."""
    states = torch.cat([grow(model, size, steps, seed=seed, batch=1) for seed in range(runs)])
    return [dominant_orientation(image) for image in to_rgb(states)]


def selection_score(model: nn.Module, settings: Settings) -> float:
    """How far the rule's long rollout is from its target, lower is better (``run.Selection``): the
    number of the texture check's parts it fails at any orientation, plus its patch distance as a
    fraction of the nearest other texture's. Two patterns grown for ``EVAL_STEPS`` steps from random
    fields drawn with chapter 03's ``texture.SELECT_SEED``, never a seed a saved model is judged from.
    A rule can grow its pattern after 300 steps and lose it by 2000 (measured: polka dots, seed 1 of
    the ``cpu`` preset, patch distance 0.005 at 300 steps and 0.34 at 2000)."""
    return texture.score_of(judge(model, settings.target, settings.image_size, max(settings.size, settings.image_size),
                                  steps=EVAL_STEPS, seed=texture.SELECT_SEED, angles=settings.angles))


#: How many patterns a saved model's texture check judges together (some rules vary from start to start).
EVAL_BATCH = 8


def measure(model: nn.Module, settings: Settings) -> dict:
    """The ``eval`` entry of a saved model's JSON: the rotation-invariant texture check of
    ``EVAL_BATCH`` patterns after a long rollout, the orientations of 20 runs and their spread, and
    the pattern's wavelength (``python -m helpers evaluate rd FILE --write`` measures it again)."""
    result = judge(model, settings.target, settings.image_size, max(settings.size, settings.image_size),
                   steps=EVAL_STEPS, batch=EVAL_BATCH, angles=settings.angles)
    angles = [angle for angle, _ in orientations(model, steps=EVAL_STEPS)]
    return {"steps": EVAL_STEPS, "size": max(settings.size, settings.image_size), "batch": EVAL_BATCH,
            "passed": result["passed"],
            "reasons": result["reasons"], "quality": {key: result[key] for key in ("patch", "palette", "structure")},
            "max_abs_state": result["max_abs"],
            "orientations_degrees": [round(a, 1) for a in angles], "orientation_spread": orientation_spread(angles),
            "wavelength_cells": wavelength(to_rgb(result["state"])[0]),
            "target_wavelength_cells": wavelength(data.load_target(settings.target, settings.image_size))}


def describe(settings: Settings, model: nn.Module, history: History) -> dict:
    return {"task": "rd", "target": settings.target,
            "final_training_loss_mean_of_last_50": mean_of_last(history.losses),
            "loss_curve": loss_curve(history.losses), "eval": measure(model, settings)}


def summary_line(metadata: dict) -> str:
    measured = metadata["eval"]
    check = {"passed": measured["passed"], "reasons": measured["reasons"], **measured["quality"]}
    return (f"training loss {metadata['final_training_loss_mean_of_last_50']:.4g}; after {measured['steps']} steps "
            f"the texture check (any orientation) says {texture_quality.summary(check)}; orientation spread over "
            f"20 runs {measured['orientation_spread']:.2f} (1: always the same); wavelength "
            f"{measured['wavelength_cells']:.1f} cells (target {measured['target_wavelength_cells']:.1f})")


def evaluate_arguments(parser) -> None:
    """``evaluate rd`` has no options beyond the model and ``--write``."""


def evaluate_saved(model: nn.Module, metadata: dict, args) -> tuple[dict, str]:
    """The texture check (any orientation), orientations and wavelength of a saved model again."""
    return run.remeasure(sys.modules[__name__], model, metadata)


def train(settings: Settings, out=None, device=None, progress: bool = True, **options) -> tuple[nn.Module, dict]:
    """Train, measure and (with ``out``) save a reaction-diffusion model (``run.train_and_save``)."""
    return run.train_and_save(sys.modules[__name__], settings, out, device, progress, **options)
