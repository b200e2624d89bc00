"""Chapter 07's conditioned NCA (helpers.manifold_nca) and its task (helpers.tasks.manifold)."""
import dataclasses
import json
import random

import pytest
import torch

from helpers import models
from helpers.growing_nca import GrowingNCA, alive_mask, perceive
from helpers.manifold_nca import METHODS, ConditionedRule, Encoder, ManifoldNCA
from helpers.tasks import manifold
from helpers.train import normalize_gradients


def trained_like(rule: ConditionedRule, scale: float = 0.1) -> ConditionedRule:
    """Random weights everywhere (a fresh rule's zero layers would make every test trivially pass)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in rule.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator))
    return rule


def grown_states(channels=16, batch=3, size=12):
    generator = torch.Generator().manual_seed(2)
    state = torch.rand(batch, channels, size, size, generator=generator)
    state[:, 3] = (state[:, 3] > 0.3).float()        # some dead cells
    return state


def growing_rule_of(sense_w, sense_b, act_w, act_b) -> GrowingNCA:
    """Chapter 06's rule with these weights."""
    single = GrowingNCA(channels=act_w.shape[0], hidden=act_w.shape[1])
    with torch.no_grad():
        single.sense.weight.copy_(sense_w[:, :, None, None])
        single.sense.bias.copy_(sense_b)
        single.act.weight.copy_(act_w[:, :, None, None])
        single.act.bias.copy_(act_b)
    return single


@pytest.mark.parametrize("method", METHODS)
def test_each_images_rule_equals_chapter_06_rule_applied_alone(method):
    """The batched step gives every image what its own rule, applied to it alone, gives. For the
    hypernetwork the rule of image i is made from code i; for broadcast the code is concatenated."""
    rule = trained_like(ConditionedRule(method, hidden=8, code_size=5))
    state, codes = grown_states(), torch.randn(3, 5, generator=torch.Generator().manual_seed(3))
    fire = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(4)) < 0.5
    batched = rule.step(state, codes, fire=fire)
    weights = rule.rule_weights(codes)
    for i in range(3):
        sense_w, sense_b, act_w, act_b = (w[i] for w in weights)
        if method == "broadcast":      # the code as 5 more inputs of every cell, written out
            features = torch.cat([perceive(state[i:i + 1], rule.filters),
                                  codes[i][None, :, None, None].expand(1, 5, 12, 12)], dim=1)
            hidden = torch.relu(torch.nn.functional.conv2d(features, rule.sense.weight, rule.sense.bias))
            change = torch.nn.functional.conv2d(hidden, rule.act.weight, rule.act.bias)
            before = alive_mask(state[i:i + 1])
            alone = state[i:i + 1] + change * fire[i:i + 1].float()
            alone = alone * (before & alive_mask(alone)).float()
        else:
            alone = growing_rule_of(sense_w, sense_b, act_w, act_b).step(state[i:i + 1], fire=fire[i:i + 1])
        assert torch.allclose(batched[i:i + 1], alone, atol=1e-5), method


def test_hypernetwork_gives_different_codes_different_rules_and_equal_codes_equal_rules():
    rule = trained_like(ConditionedRule("hyper", hidden=8, code_size=4))
    codes = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0]])
    sense_w = rule.rule_weights(codes)[0]
    assert torch.equal(sense_w[0], sense_w[2])
    assert (sense_w[0] - sense_w[1]).abs().max() > 1e-3


def test_a_fresh_rule_changes_nothing_and_the_stamp_writes_the_code_into_the_seed():
    for method in METHODS:
        rule = ConditionedRule(method, code_size=12)
        codes = torch.randn(2, 12)
        start = rule.seed(codes, 9)
        assert torch.equal(rule.rollout(start, 5, codes), start)
    stamp = ConditionedRule("stamp").seed(codes, 9)
    assert torch.equal(stamp[:, 4:16, 4, 4], codes) and stamp[:, 3, 4, 4].eq(1).all()
    assert stamp[:, :, :4].abs().sum() == 0                            # one seed cell, nothing else
    plain = ConditionedRule("hyper").seed(codes, 9)
    assert plain[:, 3:, 4, 4].eq(1).all()


def test_bad_options_and_shapes_get_clear_errors():
    with pytest.raises(ValueError, match="method must be one of"):
        ConditionedRule("concat")
    with pytest.raises(ValueError, match="12 hidden channels of the seed cell: code_size must be at most"):
        ConditionedRule("stamp", code_size=13)
    rule = ConditionedRule("hyper", code_size=4)
    with pytest.raises(ValueError, match=r"codes must be a tensor of shape \[batch=2, code_size=4\]"):
        rule.step(torch.zeros(2, 16, 8, 8), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="premultiplied RGBA"):
        Encoder()(torch.zeros(1, 3, 24, 24))
    with pytest.raises(ValueError, match="method must be one of"):
        manifold.Settings(method="film")
    with pytest.raises(ValueError, match="--init"):
        manifold.Settings(stage="encoder")
    with pytest.raises(ValueError, match="sum at most batch_size"):
        manifold.Settings(batch_size=4, reseed_count=4, damage_count=1)
    with pytest.raises(ValueError, match="held_out must leave"):
        manifold.Settings(held_out=len(manifold.emoji_names()))


def small_model(method="hyper", code_size=4):
    settings = manifold.Settings(method=method, code_size=code_size, hidden=8, hyper_hidden=4, encoder_width=4)
    return ManifoldNCA(method, 3, hidden=8, code_size=code_size, hyper_hidden=4, encoder_width=4), settings


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [torch.zeros(4), torch.zeros(2, 5), torch.zeros(2, 4, 1), [0.0] * 4])
def test_codes_of_the_wrong_shape_are_refused_before_any_computation(method, bad):
    """A 1-D code, a code of another size, a 3-D tensor or a list: a ValueError naming [N, code_size]
    from every entry point (the model's grow and rollout, the task's grow, errors, regeneration, search)."""
    model, settings = small_model(method)
    names = ["apple", "lizard"]
    calls = [lambda: model.grow(bad, 9, 2), lambda: model.rollout(torch.zeros(2, 16, 9, 9), 2, bad),
             lambda: model.rule.seed(bad, 9), lambda: manifold.grow(model, bad, settings),
             lambda: manifold.errors(model, bad, names, settings),
             lambda: manifold.regeneration(model, bad, names, settings),
             lambda: manifold.search_codes(model, names, settings, bad, iterations=1)]
    for call in calls:
        with pytest.raises(ValueError, match=r"codes must be a tensor of shape \[(N|batch=2), (code_size=)?4\]"):
            call()


def test_codes_and_names_of_different_counts_are_refused():
    model, settings = small_model()
    three = torch.zeros(3, 4)
    for call in (lambda: manifold.errors(model, three, ["apple"], settings),
                 lambda: manifold.regeneration(model, three, ["apple"], settings),
                 lambda: manifold.search_codes(model, ["apple"], settings, three, iterations=1),
                 lambda: manifold.retrieval_errors(model, three, ["apple", "lizard"], ["fish"], settings)):
        with pytest.raises(ValueError, match=r"3 codes for (1|2) names: .*\[(1|2), 4\]"):
            call()
    with pytest.raises(ValueError, match="list of emoji names"):
        manifold.encode(model, "apple", settings)


def test_retrieval_takes_the_nearest_training_emoji_in_pixels():
    """An emoji of the training list is its own nearest; a held-out one gets the training emoji whose
    target differs least, found here by a plain loop; retrieval grows exactly that emoji's code."""
    settings = manifold.Settings(code_size=4, hidden=8, hyper_hidden=4, encoder_width=4)
    train, held = manifold.split(settings)
    train, held = train[:10], held[:3]
    assert manifold.nearest_training(train, train[2:5], settings).tolist() == [2, 3, 4]
    goals = manifold.targets(train, settings)
    for name, index in zip(held, manifold.nearest_training(train, held, settings).tolist()):
        distances = [(manifold.targets([name], settings)[0] - goal).pow(2).sum().item() for goal in goals]
        assert index == min(range(len(train)), key=distances.__getitem__)
    model = trained_model_like(settings, len(train))
    codes = torch.randn(len(train), 4, generator=torch.Generator().manual_seed(0))
    nearest = manifold.nearest_training(train, held, settings)
    assert torch.equal(manifold.retrieval_errors(model, codes, train, held, settings),
                       manifold.errors(model, codes[nearest], held, settings))


def trained_model_like(settings, image_count):
    model = ManifoldNCA(settings.method, image_count, hidden=settings.hidden, code_size=settings.code_size,
                        hyper_hidden=settings.hyper_hidden, encoder_width=settings.encoder_width)
    trained_like(model.rule, 0.05)
    return model


def test_the_large_emoji_set_is_several_hundred_disjoint_from_nothing_and_loads():
    names = manifold.emoji_names("many")
    assert len(names) >= 300 and len(set(names)) == len(names)
    settings = manifold.Settings(emoji_set="many", held_out=64)
    train, held = manifold.split(settings)
    assert len(held) == 64 and not set(train) & set(held) and len(train) + 64 == len(names)
    pictures = manifold.images(held[:4], settings)
    assert pictures.shape == (4, 4, 16, 16) and (pictures[:, :3] <= pictures[:, 3:] + 0.02).all()  # premultiplied
    with pytest.raises(ValueError, match="emoji_set must be one of"):
        manifold.Settings(emoji_set="all")


def test_the_joint_stage_trains_rule_and_encoder_together_and_gives_reseeded_entries_new_images():
    settings = manifold.Settings(stage="joint", emoji_set="many", held_out=64, mirror=True, code_size=4, hidden=8,
                                 hyper_hidden=4, encoder_width=4, iterations=3, batch_size=4, pool_size=8,
                                 reseed_count=2, min_steps=2, max_steps=4, engine="plain")
    model = manifold.new_model(settings)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {name.split(".")[0] for name in trained} == {"rule", "encoder"}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    names = manifold.split(settings)[0]
    hooks = manifold.training_hooks(settings, model, names=names)
    samples = hooks["make_samples"](8)
    assert samples["image"].max() < 2 * len(names)            # mirrored copies count as images
    batch = {key: value[:4] for key, value in samples.items()}
    batch["condition"] = hooks["condition"](batch)
    prepared = hooks["prepare_batch"](batch, 0)
    assert (prepared["image"] != batch["image"]).any()          # the 2 worst took new images ...
    assert torch.allclose(prepared["condition"], model.encoder(torch.cat([
        manifold.images(names, settings), manifold.images(names, settings).flip(-1)])[prepared["image"]]))
    manifold.train_model(model, settings, names, progress=False)
    for name, p in model.named_parameters():                   # ... and both parts learned, the table did not
        assert torch.equal(p, before[name]) == name.startswith("codes."), name


def test_the_encoder_is_deterministic_and_reads_any_batch_alike():
    encoder = Encoder(code_size=6)
    pictures = torch.rand(5, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    assert torch.equal(encoder(pictures), encoder(pictures))
    assert torch.allclose(encoder(pictures)[2:3], encoder(pictures[2:3]), atol=1e-6)


def test_the_split_is_fixed_disjoint_and_covers_every_emoji():
    settings = manifold.Settings()
    train, held = manifold.split(settings)
    assert len(manifold.emoji_names()) >= 64 and len(held) == 16 and len(train) == len(manifold.emoji_names()) - 16
    assert not set(train) & set(held)
    assert manifold.split(settings) == (train, held)
    assert manifold.split(manifold.Settings(split_seed=1))[1] != held


def test_shuffled_codes_give_every_image_another_images_code():
    codes = torch.arange(20.0)[:, None].repeat(1, 3)
    moved = manifold.shuffled(codes)
    assert sorted(moved[:, 0].tolist()) == codes[:, 0].tolist()
    assert (moved[:, 0] != codes[:, 0]).all()


def test_identified_asks_whether_each_grown_image_is_nearest_its_own_target():
    """Targets matched to themselves are all identified; a target given another's place is not; an image
    closer to a neighbour than to its own target loses; channels past RGBA are ignored."""
    settings = manifold.Settings()
    goals = manifold.targets(manifold.split(settings)[0][:6], settings)
    hidden = torch.randn(6, 12, *goals.shape[2:])               # hidden channels must not count
    assert manifold.identified(torch.cat([goals, hidden], dim=1), goals).all()
    swapped = goals[[1, 0, 2, 3, 4, 5]]
    assert manifold.identified(swapped, goals).tolist() == [False, False, True, True, True, True]
    near_the_next = goals.clone()
    near_the_next[2] = 0.1 * goals[2] + 0.9 * goals[3]
    assert manifold.identified(near_the_next, goals).tolist() == [True, True, False, True, True, True]
    assert manifold.named_as(near_the_next, goals).tolist() == [0, 1, 3, 3, 4, 5]       # taken for the next one
    with pytest.raises(ValueError, match="same N"):
        manifold.identified(goals[:5], goals)


def test_psnr_and_the_mean_image_floor():
    assert manifold.psnr(torch.tensor([0.01])).item() == pytest.approx(20.0)
    settings = manifold.Settings()
    train, _ = manifold.split(settings)
    floor = manifold.mean_image_errors(train, train, settings)
    assert floor.shape == (len(train),) and (floor > 0).all()
    assert manifold.mean_image_errors(train[:1], train[:1], settings).item() == 0


def test_a_short_training_lowers_the_loss_and_saves_a_model_that_loads(tmp_path):
    """40 iterations on 4 images: the loss falls, and the saved pair loads and grows the same images."""
    settings = manifold.Settings(method="hyper", iterations=40, batch_size=4, pool_size=8, lr_milestones=(),
                                 reseed_count=2)
    names = manifold.split(settings)[0][:4]
    model = manifold.new_model(settings, len(names))
    history = manifold.train_model(model, settings, names, progress=False)
    assert sum(history.losses[-10:]) < sum(history.losses[:10])
    path = tmp_path / "m.pt"
    models.save(model.eval(), path, {"settings": settings.as_dict()})
    loaded = models.load(path)
    assert isinstance(loaded, ManifoldNCA) and loaded.method == "hyper"
    codes = manifold.table_codes(loaded)
    assert torch.equal(manifold.grow(loaded, codes, settings, 10), manifold.grow(model, codes, settings, 10))


def test_interpolation_endpoints_reproduce_the_two_images():
    model = ManifoldNCA("hyper", image_count=2, hidden=8)
    trained_like(model.rule)
    settings = manifold.Settings(hidden=8)
    a, b = torch.randn(1, 12), torch.randn(1, 12)
    path = manifold.interpolate(a, b, 5)
    assert path.shape == (5, 12) and torch.equal(path[0], a[0]) and torch.equal(path[-1], b[0])
    ends = manifold.grow(model, path[[0, -1]], settings, 12)
    alone = manifold.grow(model, torch.cat([a, b]), settings, 12)
    assert torch.equal(ends, alone)


def test_the_encoder_stage_refuses_an_init_with_other_settings(tmp_path):
    settings = manifold.Settings(method="stamp", iterations=1, pool_size=8)      # one step: a codes model to start from
    model, metadata = manifold.train(settings, out=tmp_path / "codes.pt", progress=False)
    assert json.loads((tmp_path / "codes.json").read_text())["settings"]["method"] == "stamp"
    with pytest.raises(ValueError, match="other settings"):
        manifold.train(manifold.Settings(method="hyper", stage="encoder", init=str(tmp_path / "codes.pt"),
                                         iterations=1), progress=False)
    with pytest.raises(FileExistsError):
        manifold.train(settings, out=tmp_path / "codes.pt", progress=False)


def test_evaluate_manifold_remeasures_a_saved_model_and_writes_its_json(tmp_path, capsys):
    from helpers import cli
    out = tmp_path / "m.pt"
    manifold.train(manifold.Settings(method="broadcast", iterations=2, batch_size=8, pool_size=8), out=out,
                   progress=False)
    info = json.loads(out.with_suffix(".json").read_text())
    info["eval"] = {"stale": True}
    out.with_suffix(".json").write_text(json.dumps(info))
    cli.main(["evaluate", "manifold", str(out), "--write"])
    assert "training emoji, own codes" in capsys.readouterr().out
    measured = json.loads(out.with_suffix(".json").read_text())["eval"]
    assert "stale" not in measured and measured["table_codes"]["train"]["count"] == 48
    assert measured["regeneration"]["after"] == manifold.Settings().trained_steps


# ----------------------------------------------------------------------------- the old loop, kept as a reference

def chapter_07_loop_before_it_joined_the_shared_one(model, settings, names):
    """The training loop chapter 07 had of its own (``helpers.tasks.manifold.fit``, until the task
    joined ``helpers.train.train_pool``), kept verbatim as the reference the shared loop must
    reproduce. Two lines differ from that code, neither in what it computes: the rule's rollout now
    takes the step count before the codes, as every rule's rollout does; and the progress bar, the
    timer and the ``on_iteration`` hook are left out. Returns the losses."""
    device = model.filters.device
    goals, pictures = manifold.targets(names, settings, device), manifold.images(names, settings, device)
    parts = [model.rule, model.codes] if settings.stage == "codes" else [model.encoder]
    parameters = [p for part in parts for p in part.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in parameters:
        p.requires_grad_(True)
    chooser = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    damage_generator = torch.Generator().manual_seed(settings.seed + 1)
    owner = torch.arange(settings.pool_size, device=device) % len(names)      # each entry's image
    with torch.no_grad():
        pool = model.rule.seed(manifold.codes_for(model, settings, owner, pictures), settings.grid)
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(settings.lr_milestones), settings.lr_gamma)
    losses = []
    for _ in range(settings.iterations):
        chosen = torch.tensor(chooser.sample(range(settings.pool_size), settings.batch_size), device=device)
        index = owner[chosen]
        codes = manifold.codes_for(model, settings, index, pictures)
        states = manifold.prepare(model, settings, pool[chosen], codes, goals[index], damage_generator)
        final = model.rule.rollout(states, chooser.randrange(settings.min_steps, settings.max_steps), codes)
        loss = manifold.per_image_loss(final, goals[index]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        normalize_gradients(model)
        optimizer.step()
        schedule.step()
        pool[chosen] = final.detach()
        losses.append(loss.item())
    for p in model.parameters():
        p.requires_grad_(True)
    return losses


@pytest.mark.parametrize("method", METHODS)
def test_the_shared_pool_loop_trains_exactly_as_chapter_07s_own_loop_did(method):
    """Same seed, same settings, 8 iterations: the shared loop (``train_model`` -> ``train_pool``)
    gives the same losses and the same weights, bit for bit, as the loop chapter 07 used to have,
    for both stages (the encoder stage starts from the codes stage's result)."""
    # (engine plain: the old loop ran the plain rule; the fast engine's own equality with it is
    # tests/test_fast_cell_network.py's, to rounding, not bit for bit)
    settings = manifold.Settings(method=method, iterations=8, batch_size=4, pool_size=8, min_steps=3, max_steps=6,
                                 lr_milestones=(4,), reseed_count=2, hidden=16, engine="plain")
    names = manifold.split(settings)[0][:3]
    results = []
    for loop in ("old", "shared"):
        torch.manual_seed(0)
        model = manifold.new_model(settings, len(names))
        encoder_settings = dataclasses.replace(settings, stage="encoder", init="the codes stage above")
        if loop == "old":
            losses = chapter_07_loop_before_it_joined_the_shared_one(model, settings, names)
            losses += chapter_07_loop_before_it_joined_the_shared_one(model, encoder_settings, names)
        else:
            losses = manifold.train_model(model, settings, names, progress=False).losses
            losses += manifold.train_model(model, encoder_settings, names, progress=False).losses
        results.append((losses, model.state_dict()))
    (old_losses, old_weights), (new_losses, new_weights) = results
    assert len(new_losses) == 16 and new_losses == old_losses
    assert old_weights.keys() == new_weights.keys()
    for key in old_weights:
        assert torch.equal(old_weights[key], new_weights[key]), key
    assert all(p.requires_grad for p in model.parameters())      # train_model gives the model back unfrozen


def test_a_diverging_manifold_training_is_refused_and_nothing_is_saved(tmp_path):
    """The shared loop's check: a learning rate of 1000 blows the states up; the command says so,
    exits non-zero and leaves no model behind (chapter 07's own loop saved such a model with MSE inf)."""
    from helpers import cli
    out = tmp_path / "diverged.pt"
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "manifold", "--learning-rate", "1000", "--iterations", "1", "--batch-size", "8",
                  "--pool-size", "8", "--no-progress", "--out", str(out)])
    assert stop.value.code != 0 and "diverged" in str(stop.value.code)
    assert not out.exists() and not out.with_suffix(".json").exists()
