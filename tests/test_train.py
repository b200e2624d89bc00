"""Tests of helpers.train: the configuration, the pool, gradient normalization, the loop."""
import json
import random

import pytest
import torch
from torch import nn

from helpers import nca, train
from helpers.tasks.run import EngineSettings


def test_config_rejects_bad_values_and_serializes():
    with pytest.raises(ValueError, match="min_steps"):
        train.TrainConfig(min_steps=10, max_steps=10)
    with pytest.raises(ValueError, match="pool_size >= batch_size"):
        train.TrainConfig(pool_size=2, batch_size=4)
    with pytest.raises(ValueError, match="engine"):
        EngineSettings(engine="gpu")
    with pytest.raises(ValueError, match="masks"):
        EngineSettings(masks="random")
    with pytest.raises(ValueError, match="plain engine draws exact masks"):
        EngineSettings(engine="plain", masks="bits")
    with pytest.raises(ValueError, match="learning_rate"):
        train.TrainConfig(learning_rate=float("nan"))
    as_dict = train.TrainConfig(lr_milestones=[10, 20]).as_dict()
    assert as_dict["lr_milestones"] == [10, 20] and "engine" not in as_dict      # the loop's settings: no engine
    assert EngineSettings().as_dict()["engine"] == "plain" and EngineSettings().as_dict()["masks"] == "exact"
    json.dumps(as_dict)


def test_the_settings_choose_the_rollout_their_engine_names():
    assert EngineSettings(engine="plain").rollout() is train.plain_rollout
    model, state = nca.NCA(), torch.randn(1, 12, 6, 6) * 0.1
    rollout = EngineSettings(engine="fast").rollout()
    expected = model.rollout(state, 3, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    torch.testing.assert_close(rollout(model, state, 3), expected)


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


def test_loss_curve_keeps_block_means_and_maxima():
    curve = train.loss_curve([1.0, 2.0, 3.0, 10.0, 5.0], blocks=2)
    assert curve == {"every": 3, "mean": [2.0, 7.5], "max": [3.0, 10.0]}
    assert train.loss_curve([4.0] * 1000, blocks=100)["every"] == 10
    assert train.loss_curve([]) == {"every": 1, "mean": [], "max": []}




def rates_of(config, iterations):
    """The learning rate each of ``iterations`` optimizer steps runs at under ``config``'s schedules."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.learning_rate)
    schedules = train.learning_rate_schedules(optimizer, config)
    rates = []
    for _ in range(iterations):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        for schedule in schedules:
            schedule.step()
    return rates


def test_warmup_rises_linearly_then_the_milestones_still_apply():
    plain = rates_of(train.TrainConfig(learning_rate=1e-2, lr_milestones=(6,), lr_gamma=0.5), 10)
    assert plain == pytest.approx([1e-2] * 6 + [5e-3] * 4)      # no warm-up: the step schedule alone
    warm = rates_of(train.TrainConfig(learning_rate=1e-2, lr_milestones=(6,), lr_gamma=0.5, warmup_iterations=4), 10)
    assert warm == pytest.approx([2.5e-3, 4.375e-3, 6.25e-3, 8.125e-3, 1e-2, 1e-2, 5e-3, 5e-3, 5e-3, 5e-3])


def test_warmup_iterations_must_be_a_non_negative_integer():
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="warmup_iterations"):
            train.TrainConfig(warmup_iterations=bad)


def test_a_resumed_training_ends_where_an_uninterrupted_one_does():
    """Snapshots every 3 iterations; a fresh model resumed from the one at 3 reaches, at 6, the
    weights, pool and losses of the run that never stopped (fresh samples off: their generator is
    the task's own)."""
    def samples(count):
        return {"state": torch.rand(count, 12, 8, 8, generator=torch.Generator().manual_seed(count))}

    def loss(final, batch):
        return final[:, :3].pow(2).mean()

    config = train.TrainConfig(iterations=6, batch_size=2, pool_size=4, min_steps=2, max_steps=5, reseed_every=0,
                         lr_milestones=(4,), warmup_iterations=2)
    torch.manual_seed(0)
    straight = nca.NCA()
    snapshots = []
    history = train.train_pool(straight, samples, loss, config, progress=False, on_snapshot=snapshots.append,
                         snapshot_every=3)
    assert [s["iteration"] for s in snapshots] == [3, 6]
    torch.manual_seed(5)
    resumed = nca.NCA()                       # other initial weights: all of them must come from the snapshot
    again = train.train_pool(resumed, samples, loss, config, progress=False, resume=snapshots[0])
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert again.losses == history.losses and torch.equal(again.pool["state"], history.pool["state"])


def test_resume_refuses_what_is_not_a_training_state():
    with pytest.raises(ValueError, match="not a training state"):
        train.train_pool(nca.NCA(), lambda n: {"state": torch.zeros(n, 12, 8, 8)}, lambda f, b: f.sum(),
                   train.TrainConfig(iterations=1, batch_size=1, pool_size=1), progress=False, resume={"model": {}})
