"""Where chapter 08's loss spikes come from, and what removes them: one instrumented training.

    python tools/rd_spike_study.py OUT.json --seed 1 [--iterations 1500] [--variant plain]

trains the ``cpu`` preset of ``helpers.tasks.rd`` without its clamp and its selection (the recipe
before the clamp was adopted; polka dots unless ``--target``) and writes, for
every iteration, the loss's texture and overflow terms, each batch entry's overflow before its steps
(as it came from the pool) and after them, and, for the chemical with the largest excess, its share of
the excess, the share of its cells outside [-1, 1] and its average over the grid. With
``--iterations 1500`` (the preset's length, its learning-rate milestone kept) it also grows 8 patterns
for 2000 steps from random fields and runs chapter 03's texture check on them. It prints the number of
spikes (a loss above 1 after the first iteration) and how many came after iteration 200.

The variants (measured in data/README.md, "The loss spikes"):

* ``plain``: the preset without the clamp (the shipped recipe until the clamp was adopted);
* ``slow``: the learning rate 3e-4 instead of 1e-3;
* ``reseed``: a fresh random field in the batch every 2nd iteration instead of every 8th;
* ``conserve``: the reaction minus its average over the grid, so no chemical's average can drift
  (a rule no cell could run by itself: a diagnosis, not a recipe);
* ``clamp``: every step's state clamped to [-1, 1] (chemicals with a bounded concentration), in
  training and in the judged rollout: the rule's ``clamp_state=True``, what the shipped recipe now uses.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from helpers import losses, train
from helpers.reaction_diffusion import laplacian, random_field
from helpers.tasks import rd, texture, texture_quality

VARIANTS = ("plain", "slow", "reseed", "conserve", "clamp")
SPIKE = 1.0          # a loss above this after the first iteration (the untrained rule's own loss is below)


def conserving_rollout(rule, states, steps, *condition):
    """The rule's steps with the reaction's average over each grid taken away (diffusion conserves it already)."""
    rates = rule.diffusion.reshape(1, -1, 1, 1)
    for _ in range(steps):
        reaction = rule.reaction(states)
        states = states + rates * laplacian(states) + reaction - reaction.mean(dim=(2, 3), keepdim=True)
    return states


ROLLOUTS = {"conserve": conserving_rollout}


def settings_for(variant: str, iterations: int, seed: int, target: str) -> rd.Settings:
    preset = rd.PRESETS["cpu"]
    milestones = preset.lr_milestones if iterations >= preset.iterations else ()
    settings = replace(preset, iterations=iterations, seed=seed, target=target, lr_milestones=milestones,
                       clamp_state=variant == "clamp", select_every=0)
    if variant == "slow":
        settings = replace(settings, learning_rate=3e-4)
    if variant == "reseed":
        settings = replace(settings, reseed_every=2)
    return settings


def worst_chemical(final: torch.Tensor) -> dict:
    """For each state, the chemical with the largest excess over [-1, 1]: its share of the state's
    excess, the share of its cells outside, and its average over the grid."""
    excess = (final - final.clamp(-1, 1)).abs().sum(dim=(2, 3))               # [batch, channels]
    worst = excess.argmax(dim=1)
    entries = torch.arange(final.shape[0])
    return {"worst_channel": worst.tolist(),
            "worst_share": (excess[entries, worst] / excess.sum(dim=1).clamp_min(1e-12)).tolist(),
            "worst_outside": (final.abs() > 1).float().mean(dim=(2, 3))[entries, worst].tolist(),
            "worst_level": final.mean(dim=(2, 3))[entries, worst].tolist()}


def study(variant: str, iterations: int, seed: int, target: str) -> dict:
    settings = settings_for(variant, iterations, seed, target)
    model = rd.new_model(settings)
    loss_fn = rd.loss(settings)
    records = []

    def logged_loss(final, batch):
        texture_term = loss_fn.texture(texture.visible(final))
        overflow_term = losses.overflow_loss(final)
        with torch.no_grad():
            records.append({"before": losses.overflow_loss(batch["state"]).tolist(),
                            "texture": texture_term.tolist(), "after": overflow_term.tolist(),
                            "max_abs": final.abs().amax(dim=(1, 2, 3)).tolist(), **worst_chemical(final)})
        return texture_term.mean() + settings.overflow_weight * overflow_term.mean()

    start = time.time()
    train.train_pool(model, rd.make_samples(settings), logged_loss, settings, progress=False,
                     rollout=ROLLOUTS.get(variant))
    totals = [sum(r["texture"]) / len(r["texture"]) + sum(r["after"]) / len(r["after"]) for r in records]
    spikes = [i for i in range(1, len(totals)) if totals[i] > SPIKE]
    result = {"variant": variant, "seed": seed, "target": target, "iterations": iterations,
              "seconds": round(time.time() - start), "spikes": spikes, "records": records}
    if iterations >= rd.PRESETS["cpu"].iterations:
        with torch.no_grad():
            fields = random_field(rd.EVAL_BATCH, 64, settings.channels, torch.Generator().manual_seed(0))
            grown = ROLLOUTS.get(variant, train.plain_rollout)(model, fields, rd.EVAL_STEPS)
        check = texture_quality.judge_state(grown, target, settings.image_size, 0, settings.angles)
        result["check"] = {"passed": check["passed"], "patch_distance": check["patch"]["distance"],
                           "summary": texture_quality.summary(check)}
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the JSON file to write")
    parser.add_argument("--variant", choices=VARIANTS, default="plain")
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", default="polka_dots")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = study(args.variant, args.iterations, args.seed, args.target)
    with open(args.out, "w") as file:
        json.dump(result, file)
    texture_terms = [sum(r["texture"]) / len(r["texture"]) for r in result["records"][-100:]]
    late = sum(i >= 200 for i in result["spikes"])
    print(f"{args.variant}, seed {args.seed}: {len(result['spikes'])} spikes in {args.iterations} iterations "
          f"({late} after iteration 200); texture term, median of the last 100: "
          f"{sorted(texture_terms)[len(texture_terms) // 2]:.4f}; {result['seconds']} s")
    if "check" in result:
        print(f"after {rd.EVAL_STEPS} steps: {result['check']['summary']}")


if __name__ == "__main__":
    main()
