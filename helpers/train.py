"""The pool-based training loop of chapter 03, reused by the later chapters.

Each iteration: take a batch from a pool of states, put a fresh sample in place of one of them
every few iterations, run the CA for a random number of steps, compute the loss, normalize each
parameter's gradient, step Adam (with a step-wise learning-rate schedule) and write the states
back into the pool. The pool teaches the rule to *keep* its pattern, not only to make it once.

The loop knows nothing of textures or trees: a chapter passes ``make_samples(n)`` (fresh pool
entries, a dict of tensors with at least ``"state"``) and ``loss_fn(final_states, batch)``.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass
class TrainConfig:
    """Every knob of the training loop (the defaults are the texture chapter's full settings)."""
    iterations: int = 8000
    batch_size: int = 4
    pool_size: int = 256
    min_steps: int = 32
    max_steps: int = 128          # exclusive: steps are drawn from [min_steps, max_steps)
    reseed_every: int = 8         # every k-th iteration one batch entry is replaced by a fresh sample
    learning_rate: float = 1e-3
    lr_milestones: tuple = (1000, 4000)
    lr_gamma: float = 0.3
    seed: int = 0

    def __post_init__(self):
        if self.iterations < 0 or self.batch_size < 1 or self.pool_size < self.batch_size:
            raise ValueError(f"need iterations >= 0 and pool_size >= batch_size >= 1, got {self}")
        if not 1 <= self.min_steps < self.max_steps:
            raise ValueError(f"need 1 <= min_steps < max_steps, got [{self.min_steps}, {self.max_steps})")

    def as_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


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
        for key, value in batch.items():
            self.samples[key][indices] = value.detach().to(self.samples[key].device)


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


def train_pool(model: nn.Module, make_samples: Callable[[int], dict], loss_fn: Callable, config: TrainConfig,
               rollout: Callable | None = None, dashboard=None, progress: bool = True,
               preview: Callable | None = None, history: History | None = None) -> History:
    """Train ``model`` with a sample pool; returns the loss history.

    ``rollout(model, states, steps)`` runs the CA (default: ``model.rollout``); a fast engine
    can be passed here. ``dashboard`` (a ``helpers.display.Dashboard``) is updated with
    ``preview(final_states)`` images and the 1x1 weights when given.
    """
    import time

    from tqdm.auto import tqdm

    rollout = rollout or (lambda m, states, steps: m.rollout(states, steps))
    history = history or History()
    chooser = random.Random(config.seed)
    torch.manual_seed(config.seed)
    device = next(model.parameters()).device
    pool = SamplePool({key: value.to(device) for key, value in make_samples(config.pool_size).items()})
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_milestones), config.lr_gamma)
    start = time.perf_counter()
    bar = tqdm(range(config.iterations), disable=not progress, desc="training")
    for iteration in bar:
        indices, batch = pool.sample(config.batch_size, chooser)
        if iteration % config.reseed_every == 0:
            fresh = make_samples(1)
            for key in batch:
                batch[key][:1] = fresh[key].to(device)
        steps = chooser.randrange(config.min_steps, config.max_steps)
        final = rollout(model, batch["state"], steps)
        loss = loss_fn(final, batch)
        if not torch.isfinite(loss):
            raise RuntimeError(f"the loss became {loss.item()} at iteration {iteration}: training diverged. "
                               "Lower learning_rate, or check the loss and the targets.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        normalize_gradients(model)
        optimizer.step()
        schedule.step()
        batch["state"] = final.detach()
        pool.write_back(indices, batch)
        history.losses.append(loss.item())
        if progress:
            bar.set_postfix(loss=f"{history.losses[-1]:.4g}")
        if dashboard is not None:
            last = iteration == config.iterations - 1
            images = preview(final.detach()) if preview else None
            weights = _update_weights(model)
            dashboard.update(iteration, history.losses[-1], images=images, weights=weights, force=last)
    history.seconds += time.perf_counter() - start
    return history


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
