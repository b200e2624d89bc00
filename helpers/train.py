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
               preview: Callable | None = None, history: History | None = None,
               on_iteration: Callable[[int, float], None] | None = None) -> History:
    """Train ``model`` with a sample pool; returns the loss history.

    ``rollout(model, states, steps)`` runs the CA (default: ``model.rollout``); a fast engine
    can be passed here. ``dashboard`` (a ``helpers.display.Dashboard``) is updated with
    ``preview(final_states)`` images and the 1x1 weights when given. ``on_iteration(iteration,
    loss)`` is called after every optimizer step (e.g. to save the weights of a long run now and then).
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
        if on_iteration is not None:
            on_iteration(iteration, history.losses[-1])
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


def loss_curve(losses: list, blocks: int = 100) -> dict:
    """A short summary of a training curve for a model's metadata: the mean and the largest loss
    of each of about ``blocks`` consecutive blocks of iterations (the largest shows the spikes)."""
    every = max(1, math.ceil(len(losses) / blocks))
    chunks = [losses[start:start + every] for start in range(0, len(losses), every)]
    return {"every": every, "mean": [sum(c) / len(c) for c in chunks], "max": [max(c) for c in chunks]}


# --------------------------------------------------------------------- the texture task (chapter 03)

TEXTURE_DEFAULTS = {"size": 64, "iterations": 2000, "batch_size": 4, "pool_size": 256, "min_steps": 32,
                    "max_steps": 96, "loss": "swd", "overflow_weight": 1.0, "seed": 0,
                    "lr_milestones": (1000, 4000)}


def state_to_image(state: torch.Tensor) -> torch.Tensor:
    """Channels 0..2 plus 0.5, *not* clipped, so the loss still sees (and fixes) values out of range."""
    return state[:, :3] + 0.5


def texture_loss(target: torch.Tensor, kind: str = "swd", overflow_weight: float = 1.0,
                 vgg_weights: str | None = None) -> Callable:
    """``loss_fn(final_states, batch)`` for ``train_pool``: texture loss (``"vgg"`` or ``"swd"``)
    of the visible channels, averaged over the batch, plus the overflow loss."""
    from . import losses

    if kind == "vgg":
        texture = losses.VGGStyleLoss(target, weights_path=vgg_weights)
    elif kind == "swd":
        texture = losses.SlicedWassersteinLoss(target)
    else:
        raise ValueError(f"unknown texture loss {kind!r}; use 'vgg' or 'swd'")

    def loss_fn(final: torch.Tensor, batch: dict) -> torch.Tensor:
        return texture(state_to_image(final)).mean() + overflow_weight * losses.overflow_loss(final).mean()

    loss_fn.texture = texture
    return loss_fn


@torch.no_grad()
def texture_quality(model: nn.Module, target: torch.Tensor, size: int = 64, steps: int = 2000, seed: int = 0,
                    batch: int = 2) -> dict:
    """Grow ``batch`` textures from the seed for ``steps`` steps and measure the VGG-free loss to
    ``target`` with fixed random directions (so the number is repeatable). Returns a dict with
    ``loss`` (mean over the batch), ``max_abs`` (largest state value) and the final ``state``."""
    from . import losses, nca

    from . import fast

    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    state = nca.seed_state(batch, size, model.channels, device=device)
    # The fast engine draws the same masks from the generator as model.rollout (tests/test_fast.py),
    # so this is the plain model's rollout, a few times faster.
    state = fast.infer(model, state, steps, generator=generator)
    measure = losses.SlicedWassersteinLoss(target.to(device), projections=256)
    images = nca.to_rgb(state)
    loss = measure(images, generator=torch.Generator().manual_seed(seed)).mean().item()
    return {"loss": loss, "max_abs": state.abs().max().item(), "state": state}


def texture_baseline(target_name: str, size: int = 64, image_size: int | None = None, seed: int = 0) -> dict:
    """Reference values of the VGG-free loss to a texture: a uniform grey image, and the other
    shipped textures (the loss a model would get for growing the *wrong* texture). The target is
    the texture at ``size``; the compared images are ``image_size`` (default ``size``)."""
    from . import data, losses

    target = data.load_texture(target_name, size)
    measure = losses.SlicedWassersteinLoss(target, projections=256)

    def value(images):
        return measure(images, generator=torch.Generator().manual_seed(seed)).mean().item()

    image_size = image_size or size
    others = {name: value(data.load_texture(name, image_size)[None]) for name in data.list_textures()
              if name != target_name}
    return {"grey": value(torch.full((1, 3, image_size, image_size), 0.5)), "other_textures_min": min(others.values()),
            "other_textures": others, "self": value(target[None])}


def train_texture(target: str, out: str | None = None, size: int = 64, target_size: int | None = None, iterations: int = 2000, batch_size: int = 4,
                  pool_size: int = 256, min_steps: int = 32, max_steps: int = 96, loss: str = "swd",
                  overflow_weight: float = 1.0, seed: int = 0, learning_rate: float = 1e-3,
                  lr_milestones: tuple = (1000, 4000), vgg_weights: str | None = None, progress: bool = True,
                  command: str | None = None, device=None, engine: str = "fast") -> tuple[nn.Module, dict]:
    """Train the 588-parameter texture NCA on shipped texture ``target`` resized to ``size``.

    The grid is ``size`` x ``size``; the target image is the texture resized to ``target_size``
    (default ``size``). The two may differ: the loss compares patch statistics, not pixels, so a
    small grid can learn the texture at the scale of a larger image (cheaper training).
    ``engine="fast"`` rolls out with ``helpers.fast`` (the same states and gradients as the plain
    model, a few times faster on a CPU); ``"plain"`` uses ``model.rollout``.
    Saves to ``out`` (``NAME.pt`` + ``NAME.json``) when given; returns the model and its metadata.
    """
    import datetime

    from . import data, env, fast, nca

    if engine not in ("fast", "plain"):
        raise ValueError(f"unknown engine {engine!r}; use 'fast' or 'plain'")

    env.seed_everything(seed)
    device = device or torch.device("cpu")
    target_size = target_size or size
    image = data.load_texture(target, target_size).to(device)
    model = nca.NCA().to(device)
    config = TrainConfig(iterations=iterations, batch_size=batch_size, pool_size=pool_size, min_steps=min_steps,
                         max_steps=max_steps, learning_rate=learning_rate, lr_milestones=tuple(lr_milestones),
                         seed=seed)
    loss_fn = texture_loss(image, loss, overflow_weight, vgg_weights)
    rollout = fast.make_rollout() if engine == "fast" else None
    history = train_pool(model, lambda n: {"state": nca.seed_state(n, size, device=device)}, loss_fn, config,
                         rollout=rollout, progress=progress)
    model.eval()
    eval_size = max(size, target_size)
    quality = texture_quality(model.cpu(), image.cpu(), size=eval_size)
    baseline = texture_baseline(target, target_size, eval_size)
    metadata = {
        "task": "texture", "target": target, "command": command, "loss_kind": loss,
        "loss_note": ("trained with the VGG-free sliced Wasserstein patch loss (no VGG16 weights offline)"
                      if loss == "swd" else "trained with the VGG16 Gram style loss"),
        "settings": {"size": size, "target_size": target_size, "overflow_weight": overflow_weight, "engine": engine,
                     **config.as_dict()},
        "final_training_loss_mean_of_last_50": mean_of_last(history.losses),
        "loss_curve": loss_curve(history.losses),
        "eval": {"steps": 2000, "size": eval_size, "swd_loss": quality["loss"], "max_abs_state": quality["max_abs"],
                 "swd_grey_image": baseline["grey"], "swd_closest_other_texture": baseline["other_textures_min"],
                 "other_textures": baseline["other_textures"]},
        "training_seconds": round(history.seconds, 1), "torch": torch.__version__, "device": str(device),
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
    }
    if out:
        nca.save_model(model, out, metadata)
    return model, metadata


def main(argv: list[str] | None = None) -> None:
    import argparse
    import shlex
    import sys

    parser = argparse.ArgumentParser(prog="python -m helpers.train", description="Train a course model.")
    tasks = parser.add_subparsers(dest="task", required=True)
    texture = tasks.add_parser("texture", help="grow a texture with the 588-parameter NCA (chapter 03)")
    texture.add_argument("--target", required=True, help="a texture name from data/textures")
    texture.add_argument("--out", help="model file (default: data/models/texture_TARGET.pt)")
    texture.add_argument("--size", type=int, default=TEXTURE_DEFAULTS["size"])
    texture.add_argument("--target-size", type=int, help="resize the texture to this (default: --size)")
    texture.add_argument("--learning-rate", type=float, default=1e-3)
    texture.add_argument("--overflow-weight", type=float, default=TEXTURE_DEFAULTS["overflow_weight"])
    texture.add_argument("--iterations", type=int, default=TEXTURE_DEFAULTS["iterations"])
    texture.add_argument("--batch-size", type=int, default=TEXTURE_DEFAULTS["batch_size"])
    texture.add_argument("--pool-size", type=int, default=TEXTURE_DEFAULTS["pool_size"])
    texture.add_argument("--min-steps", type=int, default=TEXTURE_DEFAULTS["min_steps"])
    texture.add_argument("--max-steps", type=int, default=TEXTURE_DEFAULTS["max_steps"])
    texture.add_argument("--loss", choices=["swd", "vgg"], default=TEXTURE_DEFAULTS["loss"])
    texture.add_argument("--vgg-weights", help="local VGG16 state_dict file (else $DSOS_VGG16_WEIGHTS or download)")
    texture.add_argument("--lr-milestones", type=int, nargs="*", default=list(TEXTURE_DEFAULTS["lr_milestones"]))
    texture.add_argument("--seed", type=int, default=TEXTURE_DEFAULTS["seed"])
    texture.add_argument("--threads", type=int, help="torch.set_num_threads (e.g. 1 on a shared machine)")
    texture.add_argument("--device", help="cpu, cuda or mps (default: helpers.env.get_device())")
    texture.add_argument("--engine", choices=["fast", "plain"], default="fast",
                         help="rollout engine: helpers.fast (default) or the plain model.rollout")
    args = parser.parse_args(argv)

    from . import env, nca

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    command = "python -m helpers.train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    out = args.out or str(nca.models_dir() / f"texture_{args.target}.pt")
    model, metadata = train_texture(
        args.target, out=out, size=args.size, target_size=args.target_size, learning_rate=args.learning_rate,
        overflow_weight=args.overflow_weight, iterations=args.iterations, batch_size=args.batch_size,
        pool_size=args.pool_size, min_steps=args.min_steps, max_steps=args.max_steps, loss=args.loss,
        seed=args.seed, lr_milestones=tuple(args.lr_milestones), vgg_weights=args.vgg_weights,
        command=command, device=env.get_device(args.device), engine=args.engine)
    print(f"saved {out}: training loss {metadata['final_training_loss_mean_of_last_50']:.4g}, "
          f"VGG-free loss after 2000 steps {metadata['eval']['swd_loss']:.4g} "
          f"(grey image {metadata['eval']['swd_grey_image']:.4g}, closest other texture "
          f"{metadata['eval']['swd_closest_other_texture']:.4g}) in {metadata['training_seconds']:.0f} s")


if __name__ == "__main__":
    main()
