"""The pool-based training loop of chapter 03, reused by the later chapters.

Each iteration: take a batch from a pool of states, put a fresh sample in place of one of them
every few iterations, run the CA for a random number of steps, compute the loss, normalize each
parameter's gradient, step Adam (with a step-wise learning-rate schedule) and write the states
back into the pool. The pool teaches the rule to *keep* its pattern, not only to make it once.

The loop knows nothing of textures or trees: a chapter passes ``make_samples(n)`` (fresh pool
entries, a dict of tensors with at least ``"state"``) and ``loss_fn(final_states, batch)``. Each
task (``helpers.tasks``) has ONE settings dataclass that extends ``TrainConfig`` with its own fields
and defaults, so a task's settings object is also the loop's configuration.
"""
from __future__ import annotations

import copy
import math
import numbers
import random
import time
import typing
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .checks import check_learning_rate


def setting(default, help: str):
    """A settings field with its help text: the command line (``helpers.cli``) makes every field a
    flag, with this default and this help, so both are written once, here."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def check_weight(name: str, value: float) -> None:
    """A loss term's weight must be a finite number >= 0 (a negative weight rewards what the term punishes)."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0 (0 turns the term off), got {value!r}")


#: What each annotation of a settings field accepts, in words (``check_setting_types``).
SETTING_KINDS = {int: "a whole number", float: "a finite number", str: "a string", bool: "True or False",
                 tuple: "a list of whole numbers"}


def setting_value_error(name: str, kind: type, value, default):
    """The error for a settings field given a value of the wrong kind: names the field, the value and its
    type, what the field takes, and its default as an example."""
    return ValueError(f"{name} must be {SETTING_KINDS[kind]}, got {value!r} ({type(value).__name__}); its default "
                      f"is {default!r}")


def check_setting_types(settings) -> None:
    """Every field of a settings dataclass holds a value of its annotated kind (one check for every task's
    settings, from Python as from a JSON): ``int`` a whole number (a NumPy integer is stored as an int; never a
    bool), ``float`` a finite number, ``str`` a string, ``bool`` True or False, ``tuple`` whole numbers.
    Without it a string where a number belongs fails deep inside the training, or a NaN trains silently."""
    hints = typing.get_type_hints(type(settings))
    for item in fields(settings):
        kind, value = hints.get(item.name), getattr(settings, item.name)
        default = item.default if item.default is not MISSING else item.default_factory()
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise setting_value_error(item.name, kind, value, default)
            setattr(settings, item.name, int(value))
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise setting_value_error(item.name, kind, value, default)
        elif kind in (str, bool) and not isinstance(value, kind):
            raise setting_value_error(item.name, kind, value, default)
        elif kind is tuple and (not isinstance(value, (tuple, list)) or not all(
                isinstance(entry, numbers.Integral) and not isinstance(entry, bool) for entry in value)):
            raise setting_value_error(item.name, kind, value, default)


class Diverged(RuntimeError):
    """Training went wrong numerically: a non-finite loss, or a trained rule whose states blow up."""


@dataclass
class TrainConfig:
    """Every knob of the pool loop, the ones every task shares. The task settings
    (``helpers.tasks.*.Settings``) extend it and give the sizes their own defaults; a task whose rule
    has a faster engine adds the engine's choice itself (``helpers.tasks.run.EngineSettings``)."""
    iterations: int = setting(1000, "optimizer steps")
    batch_size: int = setting(4, "pool entries per iteration")
    pool_size: int = setting(256, "states kept in the sample pool")
    min_steps: int = setting(32, "fewest CA steps per iteration")
    max_steps: int = setting(96, "CA steps per iteration are drawn from [min-steps, max-steps)")
    reseed_every: int = setting(8, "every k-th iteration one batch entry is replaced by a fresh sample (0: never; "
                                   "the task's prepare_batch decides)")
    learning_rate: float = setting(1e-3, "Adam's learning rate")
    lr_milestones: tuple = setting((), "iterations at which the learning rate is multiplied by lr-gamma")
    lr_gamma: float = setting(0.3, "factor of the learning rate at each milestone")
    warmup_iterations: int = setting(0, "the learning rate rises linearly from learning-rate/N to learning-rate "
                                        "over the first N iterations (0: no warm-up)")
    seed: int = setting(0, "seed of the pool, the step counts and the model's initial weights")

    def __post_init__(self):
        check_setting_types(self)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, numbers.Integral) \
                or self.iterations < 1:           # 0 iterations would save an untrained rule as if it were trained
            raise ValueError(f"iterations must be a whole number >= 1 (the optimizer steps to take), got "
                             f"{self.iterations!r}; to measure a saved model, use `python -m helpers evaluate`")
        self.iterations = int(self.iterations)    # a NumPy integer too, stored in JSON as a plain int
        if self.batch_size < 1 or self.pool_size < self.batch_size:
            raise ValueError(f"need pool_size >= batch_size >= 1, got batch_size {self.batch_size}, "
                             f"pool_size {self.pool_size}")
        if not 1 <= self.min_steps < self.max_steps:
            raise ValueError(f"need 1 <= min_steps < max_steps, got [{self.min_steps}, {self.max_steps})")
        if self.reseed_every < 0:
            raise ValueError(f"reseed_every must be 0 (never) or at least 1, got {self.reseed_every}")
        if not isinstance(self.warmup_iterations, int) or isinstance(self.warmup_iterations, bool) \
                or self.warmup_iterations < 0:
            raise ValueError(f"warmup_iterations must be an integer >= 0, got {self.warmup_iterations!r}")
        check_learning_rate(self.learning_rate)
        if not 0 < self.lr_gamma <= 1:        # NaN fails too; a negative factor would make the rate climb the loss
            raise ValueError(f"lr_gamma multiplies the learning rate at each milestone: it must lie in (0, 1], "
                             f"got {self.lr_gamma}")
        if any(m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            raise ValueError(f"lr_milestones must be increasing iteration numbers >= 1, got {self.lr_milestones}")

    def as_dict(self) -> dict:
        """Every field, tuples as lists (JSON)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def loop_dict(self) -> dict:
        """Only the pool loop's own fields (``TrainConfig``'s), as ``as_dict``."""
        names = {f.name for f in fields(TrainConfig)}
        return {key: value for key, value in self.as_dict().items() if key in names}


class SamplePool:
    """A fixed-size store of training samples (a dict of tensors with the same first dimension)."""

    def __init__(self, samples: dict[str, torch.Tensor]):
        sizes = {key: value.shape[0] for key, value in samples.items()}
        if "state" not in samples or len(set(sizes.values())) != 1:
            raise ValueError(f"a pool needs a 'state' entry and equal first dimensions, got sizes {sizes}")
        self.samples = samples
        self.size = sizes["state"]

    def sample(self, count: int, generator: random.Random) -> tuple[list[int], dict[str, torch.Tensor]]:
        indices = generator.sample(range(self.size), count)
        return indices, {key: value[indices].clone() for key, value in self.samples.items()}

    def write_back(self, indices: list[int], batch: dict[str, torch.Tensor]) -> None:
        """Store the batch's entries back at ``indices`` (keys the pool does not keep, e.g. the
        batch's ``condition``, are not stored)."""
        for key, value in self.samples.items():
            value[indices] = batch[key].detach().to(value.device)


def normalize_gradients(model: nn.Module, eps: float = 1e-8) -> None:
    """Divide each parameter's gradient by its norm: every tensor takes a step of the same size,
    which keeps training stable over long rollouts whose raw gradients vary by orders of magnitude."""
    for parameter in model.parameters():
        if parameter.grad is not None:
            parameter.grad /= parameter.grad.norm() + eps


@dataclass
class History:
    losses: list = field(default_factory=list)
    seconds: float = 0.0
    pool: dict | None = None      # the pool's samples when training ended (e.g. to show them as a mosaic)


def train_pool(model: nn.Module, make_samples: Callable[[int], dict], loss_fn: Callable, config: TrainConfig,
               rollout: Callable | None = None, dashboard=None, progress: bool = True,
               preview: Callable | None = None,
               on_iteration: Callable[[int, float], None] | None = None,
               prepare_batch: Callable[[dict, int], dict] | None = None,
               condition: Callable[[dict], torch.Tensor] | None = None,
               on_snapshot: Callable[[dict], None] | None = None, snapshot_every: int = 100,
               resume: dict | None = None) -> History:
    """Train ``model`` with a sample pool; returns the loss history.

    ``rollout(model, states, steps)`` runs the CA (default: the engine ``config.rollout()`` names,
    for settings that choose one; else ``model.rollout``). Only the parameters that require a
    gradient are trained (chapter 07's encoder stage freezes the rule). ``dashboard`` (a
    ``helpers.display.Dashboard``) is updated with ``preview(final_states)`` images and the 1x1
    weights when given. ``on_iteration(iteration, loss)`` is called after every optimizer step
    (e.g. to save the weights of a long run now and then). ``prepare_batch(batch, iteration)``
    may change the sampled batch before the rollout (chapter 06 replaces the worst sample by the
    seed and damages the best ones); what it returns is rolled out and written back to the pool.
    ``condition(batch)``: for a rule that grows what a per-entry code names (chapter 07), each
    entry's code, computed anew every iteration so that gradients reach it; it is put in the batch
    as ``batch["condition"]`` before ``prepare_batch`` and the rollout is called as
    ``rollout(model, states, steps, condition)``.
    ``on_snapshot(state)`` receives, every ``snapshot_every`` iterations, everything needed to
    continue the training later (``training_state``); ``resume`` is such a state: the loop goes on
    from its iteration with its weights, optimizer, schedule, pool, losses and random generators.
    """
    if rollout is None:
        rollout = config.rollout() if hasattr(config, "rollout") else plain_rollout
    history = History()
    chooser = random.Random(config.seed)
    torch.manual_seed(config.seed)
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    schedules = learning_rate_schedules(optimizer, config)
    if resume is None:
        first = 0
        pool = SamplePool({key: value.to(device) for key, value in make_samples(config.pool_size).items()})
    else:
        first, pool = restore(resume, model, optimizer, schedules, chooser, history, device)
    start = time.perf_counter()
    bar = tqdm(range(first, config.iterations), disable=not progress, desc="training", initial=first,
               total=config.iterations)
    for iteration in bar:
        indices, batch = pool.sample(config.batch_size, chooser)
        if config.reseed_every and iteration % config.reseed_every == 0:
            fresh = make_samples(1)
            for key in pool.samples:
                batch[key][:1] = fresh[key].to(device)
        if condition is not None:
            batch["condition"] = condition(batch)
        if prepare_batch is not None:
            batch = prepare_batch(batch, iteration)
        steps = chooser.randrange(config.min_steps, config.max_steps)
        final, loss = train_step(model, batch, steps, rollout, loss_fn, optimizer, iteration)
        for schedule in schedules:
            schedule.step()
        batch["state"] = final
        pool.write_back(indices, batch)
        history.losses.append(loss)
        if progress:
            bar.set_postfix(loss=f"{loss:.4g}")
        if dashboard is not None:
            last = iteration == config.iterations - 1
            images = preview(final) if preview else None
            dashboard.update(iteration, loss, images=images, weights=_update_weights(model), force=last)
        if on_iteration is not None:
            on_iteration(iteration, loss)
        if on_snapshot is not None and snapshot_every and (iteration + 1) % snapshot_every == 0:
            seconds = history.seconds + time.perf_counter() - start
            on_snapshot(training_state(iteration + 1, model, optimizer, pool, chooser, history.losses, seconds))
    history.seconds += time.perf_counter() - start
    history.pool = pool.samples
    return history


def train_step(model: nn.Module, batch: dict, steps: int, rollout: Callable, loss_fn: Callable,
               optimizer: torch.optim.Optimizer, iteration: int = 0) -> tuple[torch.Tensor, float]:
    """One optimizer step: roll the batch out for ``steps`` steps, take the loss, normalize each
    parameter's gradient, step. Returns the final states (detached) and the loss. A loss that is
    not finite raises ``Diverged`` before any weight changes."""
    conditions = (batch["condition"],) if "condition" in batch else ()
    final = rollout(model, batch["state"], steps, *conditions)
    loss = loss_fn(final, batch)
    if not torch.isfinite(loss):
        raise Diverged(f"the loss became {loss.item()} at iteration {iteration}: training diverged. "
                       "Lower learning_rate, or check the loss and the targets.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    normalize_gradients(model)
    optimizer.step()
    return final.detach(), loss.item()


def training_state(iteration: int, model: nn.Module, optimizer: torch.optim.Optimizer, pool: SamplePool,
                   chooser: random.Random, losses: list, seconds: float) -> dict:
    """Everything a pool training needs to go on after ``iteration`` iterations, as plain tensors,
    numbers and lists (``torch.load(..., weights_only=True)`` reads it back). The learning-rate
    schedule is not stored: it is a function of the iteration and is replayed on ``restore``."""
    version, numbers, _ = chooser.getstate()
    # copies: the live tensors go on changing after this returns
    return {"iteration": iteration, "model": copy.deepcopy(model.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "pool": {key: value.clone() for key, value in pool.samples.items()},
            "losses": torch.tensor(losses, dtype=torch.float64), "seconds": seconds,
            "chooser": torch.tensor(numbers, dtype=torch.int64), "chooser_version": version,
            "torch_rng": torch.get_rng_state()}


def restore(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, schedules: list,
            chooser: random.Random, history: History, device) -> tuple[int, SamplePool]:
    """Put a ``training_state`` back: weights, optimizer, the schedule replayed to its iteration,
    the random generators, the losses so far and the pool. Returns ``(iteration, pool)``. A task's
    own generators are not part of it (the fresh tasks of ``make_samples`` in chapter 05, the damage
    of ``prepare_batch`` in chapters 06 and 07): after a resume they draw anew from their seeds (other
    draws, the same distribution), so a resumed run is a run of the same recipe, not the same run."""
    missing = sorted({"iteration", "model", "optimizer", "pool", "losses", "chooser", "torch_rng"} - set(state))
    if missing:
        raise ValueError(f"not a training state written by helpers.train (missing {missing}); resume from the "
                         "NAME.state.pt file that --checkpoint writes beside its weights")
    model.load_state_dict(state["model"])
    with warnings.catch_warnings():               # stepped without optimizer steps, on purpose
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(state["iteration"]):       # the learning rate it had reached (warm-up and decay)
            for schedule in schedules:
                schedule.step()
    optimizer.load_state_dict(state["optimizer"])
    chooser.setstate((state.get("chooser_version", 3), tuple(int(n) for n in state["chooser"]), None))
    torch.set_rng_state(state["torch_rng"])
    history.losses = state["losses"].tolist()
    history.seconds = float(state.get("seconds", 0.0))
    return state["iteration"], SamplePool({key: value.to(device) for key, value in state["pool"].items()})


def learning_rate_schedules(optimizer: torch.optim.Optimizer, config: TrainConfig) -> list:
    """The learning-rate schedules, stepped once per iteration: the step-wise decay at
    ``lr_milestones`` and, with ``warmup_iterations`` N > 0, a linear warm-up first (iteration i < N
    runs at 1/N + (1 - 1/N) i/N of the rate). Both multiply the current rate, so they compose; without
    warm-up the schedule is the plain MultiStepLR alone, as before the option existed."""
    schedules = []
    if config.warmup_iterations:
        schedules.append(torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / config.warmup_iterations,
                                                           total_iters=config.warmup_iterations))
    schedules.append(torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_milestones), config.lr_gamma))
    return schedules


def plain_rollout(model: nn.Module, states: torch.Tensor, steps: int, *condition) -> torch.Tensor:
    """The chapters' own rollout: ``model.rollout`` (every step kept for autograd); a conditioned
    rule (chapter 07) gets each entry's code after the step count."""
    return model.rollout(states, steps, *condition)


def _update_weights(model: nn.Module):
    update = getattr(model, "update", None)
    if isinstance(update, nn.Conv2d):
        return update.weight.detach()[:, :, 0, 0]
    return None


def mean_of_last(losses: list, count: int = 50) -> float:
    """Mean of the last ``count`` losses (a less noisy summary of where training ended)."""
    if not losses:
        return math.nan
    tail = losses[-count:]
    return sum(tail) / len(tail)


def loss_curve(losses: list, blocks: int = 100) -> dict:
    """A short summary of a training curve for a model's metadata: the mean and the largest loss
    of each of about ``blocks`` consecutive blocks of iterations (the largest shows the spikes)."""
    every = max(1, math.ceil(len(losses) / blocks))
    chunks = [losses[start:start + every] for start in range(0, len(losses), every)]
    return {"every": every, "mean": [sum(c) / len(c) for c in chunks], "max": [max(c) for c in chunks]}
