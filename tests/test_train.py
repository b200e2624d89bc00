"""Tests of helpers.train: the configuration, the pool, gradient normalization, the loop, the texture task."""
import json
import random

import pytest
import torch
from torch import nn

from helpers import nca, train




def test_config_rejects_bad_values_and_serializes():
    with pytest.raises(ValueError, match="min_steps"):
        train.TrainConfig(min_steps=10, max_steps=10)
    with pytest.raises(ValueError, match="pool_size >= batch_size"):
        train.TrainConfig(pool_size=2, batch_size=4)
    as_dict = train.TrainConfig().as_dict()
    assert as_dict["lr_milestones"] == [1000, 4000] and as_dict["iterations"] == 8000
    json.dumps(as_dict)


def test_pool_samples_distinct_entries_and_writes_back():
    pool = train.SamplePool({"state": torch.arange(10.0).view(10, 1), "label": torch.arange(10).view(10, 1)})
    indices, batch = pool.sample(4, random.Random(0))
    assert len(set(indices)) == 4 and torch.equal(batch["state"][:, 0], torch.tensor(indices, dtype=torch.float32))
    batch["state"] += 100
    pool.write_back(indices, batch)
    assert torch.equal(pool.samples["state"][indices, 0], torch.tensor(indices, dtype=torch.float32) + 100)
    with pytest.raises(ValueError, match="'state' entry"):
        train.SamplePool({"x": torch.zeros(3)})
    with pytest.raises(ValueError, match="equal first dimensions"):
        train.SamplePool({"state": torch.zeros(3), "y": torch.zeros(4)})


def test_normalize_gradients_gives_unit_norm_per_parameter():
    layer = nn.Linear(3, 2)
    (layer(torch.randn(5, 3)) ** 2).sum().mul(1000).backward()
    train.normalize_gradients(layer)
    assert abs(layer.weight.grad.norm().item() - 1) < 1e-5 and abs(layer.bias.grad.norm().item() - 1) < 1e-5


def test_train_pool_reduces_a_simple_loss_and_reseeds():
    torch.manual_seed(0)
    model = nca.NCA()
    calls = []

    def make_samples(count):
        calls.append(count)
        return {"state": nca.seed_state(count, 8)}

    def loss_fn(final, batch):   # grow a uniform colour: channel 0 at 0.3
        return ((final[:, 0] - 0.3) ** 2).mean()

    # few iterations at a small learning rate: longer runs of this toy task can go unstable
    config = train.TrainConfig(iterations=26, batch_size=2, pool_size=8, min_steps=1, max_steps=3, reseed_every=8,
                               learning_rate=1e-3, lr_milestones=(1000,))
    history = train.train_pool(model, make_samples, loss_fn, config, progress=False)
    assert len(history.losses) == 26 and history.seconds > 0
    assert train.mean_of_last(history.losses, 5) < 0.8 * history.losses[0]
    assert calls[0] == 8 and calls[1:] == [1] * 4   # the pool, then one fresh sample every 8th iteration


def test_train_pool_stops_on_a_diverging_loss():
    config = train.TrainConfig(iterations=3, batch_size=1, pool_size=2, min_steps=1, max_steps=2)
    with pytest.raises(RuntimeError, match="diverged"):
        train.train_pool(nca.NCA(), lambda n: {"state": nca.seed_state(n, 4)},
                         lambda final, batch: final.sum() * float("nan"), config, progress=False)


def test_train_pool_uses_a_given_rollout_and_feeds_the_dashboard():
    seen_steps, updates = [], []

    def rollout(model, states, steps):
        seen_steps.append(steps)
        return model.rollout(states, steps)

    class Recorder:
        def update(self, step, loss, images=None, weights=None, force=False):
            updates.append((step, weights.shape if weights is not None else None, images is not None))

    config = train.TrainConfig(iterations=5, batch_size=2, pool_size=4, min_steps=3, max_steps=6)
    train.train_pool(nca.NCA(), lambda n: {"state": nca.seed_state(n, 5)}, lambda f, b: f.pow(2).mean() + f.sum() * 0,
                     config, rollout=rollout, dashboard=Recorder(), preview=nca.to_rgb, progress=False)
    assert len(seen_steps) == 5 and all(3 <= s < 6 for s in seen_steps)
    assert [u[0] for u in updates] == list(range(5)) and updates[0][1] == (12, 48) and updates[0][2]


def test_train_pool_calls_on_iteration_with_each_recorded_loss():
    calls = []
    config = train.TrainConfig(iterations=4, batch_size=2, pool_size=4, min_steps=2, max_steps=4)
    history = train.train_pool(nca.NCA(), lambda n: {"state": nca.seed_state(n, 5)},
                               lambda f, b: (f[:, :3] - 0.3).pow(2).mean(), config, progress=False,
                               on_iteration=lambda iteration, loss: calls.append((iteration, loss)))
    assert calls == list(enumerate(history.losses)) and len(calls) == 4


def test_mean_of_last():
    assert train.mean_of_last([1.0, 2.0, 3.0, 5.0], 2) == 4.0
    assert train.mean_of_last([]) != train.mean_of_last([])  # NaN


def test_texture_loss_kinds():
    target = torch.rand(3, 16, 16)
    loss_fn = train.texture_loss(target, "swd")
    state = torch.zeros(2, 12, 16, 16)
    state[:, 5] = 2.0          # out of range by 1 everywhere in one hidden channel
    value = loss_fn(state, {})
    texture_only = loss_fn.texture(state[:, :3] + 0.5).mean()
    assert torch.isclose(value, texture_only + 16 * 16, rtol=1e-3, atol=1e-2)
    with pytest.raises(ValueError, match="unknown texture loss"):
        train.texture_loss(target, "l2")


def test_train_texture_command_writes_a_loadable_model(tmp_path):
    out = tmp_path / "texture_stripes.pt"
    train.main(["texture", "--target", "stripes", "--size", "12", "--target-size", "16", "--iterations", "3",
                "--batch-size", "2", "--pool-size", "4", "--min-steps", "2", "--max-steps", "4", "--out", str(out),
                "--device", "cpu"])
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["target"] == "stripes" and info["parameters"] == 588 and info["loss_kind"] == "swd"
    assert info["command"].startswith("python -m helpers.train texture --target stripes")
    assert info["settings"]["iterations"] == 3 and info["settings"]["target_size"] == 16
    assert info["eval"]["swd_loss"] > 0 and info["eval"]["swd_closest_other_texture"] > 0
    assert info["settings"]["engine"] == "fast"
    assert info["loss_curve"]["every"] == 1 and len(info["loss_curve"]["mean"]) == 3
    assert nca.count_parameters(nca.load_model(out)) == 588


def test_train_texture_fast_and_plain_engines_learn_the_same_weights():
    settings = dict(size=10, target_size=16, iterations=4, batch_size=2, pool_size=4, min_steps=3, max_steps=6,
                    progress=False)
    fast_model, fast_info = train.train_texture("stripes", engine="fast", **settings)
    plain_model, plain_info = train.train_texture("stripes", engine="plain", **settings)
    assert fast_info["settings"]["engine"] == "fast" and plain_info["settings"]["engine"] == "plain"
    assert not torch.equal(fast_model.update.weight, nca.NCA().update.weight)      # it did train
    for fast_value, plain_value in zip(fast_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(fast_value, plain_value, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown engine"):
        train.train_texture("stripes", engine="gpu", **settings)


def test_loss_curve_keeps_block_means_and_maxima():
    curve = train.loss_curve([1.0, 2.0, 3.0, 10.0, 5.0], blocks=2)
    assert curve == {"every": 3, "mean": [2.0, 7.5], "max": [3.0, 10.0]}
    assert train.loss_curve([4.0] * 1000, blocks=100)["every"] == 10
    assert train.loss_curve([]) == {"every": 1, "mean": [], "max": []}


def test_texture_quality_is_repeatable_and_sees_the_state():
    model = nca.NCA()
    target = torch.rand(3, 16, 16)
    first = train.texture_quality(model, target, size=12, steps=5, seed=3)
    again = train.texture_quality(model, target, size=12, steps=5, seed=3)
    assert first["loss"] == again["loss"] and first["state"].shape == (2, 12, 12, 12)
    assert first["max_abs"] == first["state"].abs().max().item()
    # the same states as the plain model stepping with the same generator
    generator = torch.Generator().manual_seed(3)
    state = nca.seed_state(2, 12)
    for _ in range(5):
        state = model(state, generator=generator)
    torch.testing.assert_close(first["state"], state)
