"""Tests of helpers.cli: one command line built from each task's settings dataclass."""
import dataclasses
import shlex

import pytest
import torch

from helpers import cli, models
from helpers.tasks import TASKS, run

SHIPPED = sorted(models.shipped_dir().glob("*.pt")) + sorted((models.shipped_dir() / "loss_comparison").glob("*.pt"))


def parse(arguments):
    parser = cli.build_parser()
    args = parser.parse_args(arguments)
    return args, cli.settings_from(args, TASKS[args.task])


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_settings_field_is_a_flag_with_the_dataclass_default(task, capsys):
    _, settings = parse(["train", task])
    assert settings == TASKS[task].Settings()
    with pytest.raises(SystemExit):
        cli.main(["train", task, "--help"])
    shown = capsys.readouterr().out.split()
    for field in dataclasses.fields(settings):
        assert run.flag(field.name) in shown, f"--{field.name} missing"
        assert field.metadata.get("help"), f"{task}.Settings.{field.name} has no help text"


@pytest.mark.parametrize("task", sorted(task for task in TASKS if TASKS[task].PRESETS))
def test_a_preset_gives_its_settings_and_the_flags_beside_it_change_them(task):
    for name, preset in TASKS[task].PRESETS.items():
        assert isinstance(preset, TASKS[task].Settings)
        assert parse(["train", task, "--preset", name])[1] == preset
        changed = parse(["train", task, "--preset", name, "--seed", "7"])[1]
        assert changed == dataclasses.replace(preset, seed=7)
        # the equivalent command of a preset's settings, without the preset, gives them too
        assert parse(shlex.split(run.command_line(task, preset))[3:])[1] == preset


def test_train_help_lists_every_task_and_its_presets(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for name, task in TASKS.items():
        assert name in shown and all(preset in shown for preset in task.PRESETS)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_the_equivalent_command_reproduces_the_settings(task):
    changed = {"texture": dict(target="polka_dots", size=20, lr_milestones=(5, 7), masks="bits", iterations=9),
               "mst": dict(canvas=40, margin=4.0, max_points=6, extra_ink_weight=1.0, iterations=16),
               "growing": dict(experiment="persistent", emoji="butterfly", target_size=16, margin=4, hidden=32,
                               lr_milestones=(5,), iterations=9),
               "rd": dict(target="bubbles", channels=8, hidden=16, diffusion_max=0.3, angles=4, iterations=9,
                          lr_milestones=(4,)),
               "manifold": dict(method="stamp", stage="encoder", init="data/models/manifold_stamp.pt", held_out=12,
                                code_size=8, lr_milestones=(3, 5), iterations=9)}[task]
    settings = TASKS[task].Settings(**changed)
    command = run.command_line(task, settings, out="outputs/x.pt", threads=2)
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "helpers", "train"]
    args, parsed = parse(words[3:])
    assert parsed == settings and args.out == "outputs/x.pt" and args.threads == 2


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_each_shipped_model_records_a_command_that_gives_its_settings(path):
    """The recorded command, as typed today (run.current_command: renamed flags, retired ones
    dropped), gives the recorded settings, as read today (run.stored_settings; fields added after
    the model was trained take their defaults, or the value they had before, run.RECORDED_BEFORE)."""
    info = models.load_metadata(path)
    words = shlex.split(info["command"])
    assert words[:3] == ["python", "-m", "helpers"], info["command"]
    args, settings = parse(run.current_command(words[4], words[3:], info["settings"]))
    assert settings == run.stored_settings(args.task, TASKS[args.task].Settings, info["settings"])
    assert args.out == str(path.relative_to(models.shipped_dir().parent.parent)), "the command names the shipped file"


def test_bad_values_and_paths_fail_before_training_with_a_usage_error(tmp_path, capsys):
    for arguments, message in [(["--iterations", "-5"], "iterations"), (["--target", "nothing"], "unknown texture"),
                               (["--out", str(tmp_path / "model.json")], "must name the weights file"),
                               (["--engine", "gpu"], "engine must be one of")]:
        with pytest.raises(SystemExit) as stop:
            cli.main(["train", "texture", *arguments])
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_an_existing_model_is_never_replaced_without_overwrite(tmp_path, capsys):
    existing = tmp_path / "mine.pt"
    existing.write_bytes(b"precious")
    with pytest.raises(SystemExit):
        cli.main(["train", "mst", "--out", str(existing)])
    assert "--overwrite" in capsys.readouterr().err and existing.read_bytes() == b"precious"


def test_the_default_output_is_a_user_folder_not_the_shipped_models():
    for task, module in TASKS.items():
        out = module.default_out(module.Settings())
        assert out.startswith("outputs/") and out.endswith(".pt")


TINY_TEXTURE = ["--target", "stripes", "--size", "12", "--target-size", "16", "--batch-size", "2", "--pool-size", "4",
                "--min-steps", "2", "--max-steps", "4", "--device", "cpu", "--no-progress"]


def test_a_diverged_rule_is_refused_and_nothing_is_saved(tmp_path, capsys):
    out = tmp_path / "diverged.pt"
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "texture", *TINY_TEXTURE, "--learning-rate", "1e3", "--iterations", "1", "--out", str(out)])
    assert stop.value.code != 0 and "diverged" in str(stop.value.code)
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_a_diverged_rule_is_saved_when_asked_with_its_stability_recorded(tmp_path):
    out = tmp_path / "diverged.pt"
    settings = TASKS["texture"].Settings(target="stripes", size=12, target_size=16, batch_size=2, pool_size=4,
                                             min_steps=2, max_steps=4, learning_rate=1e3, iterations=1)
    TASKS["texture"].train(settings, out=out, progress=False, allow_diverged=True)
    assert models.load_metadata(out)["stability"]["bounded"] is False


def test_ctrl_c_saves_the_model_so_far_marked_partial(tmp_path, monkeypatch):
    def interrupted_training(model, make_samples, loss_fn, config, on_iteration=None, **options):
        for iteration in range(3):
            on_iteration(iteration, 0.5)
        raise KeyboardInterrupt

    monkeypatch.setattr(run.train, "train_pool", interrupted_training)
    out = tmp_path / "stopped.pt"
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "texture", *TINY_TEXTURE, "--iterations", "50", "--out", str(out)])
    assert stop.value.code == 130
    info = models.load_metadata(out)
    assert info["partial"] is True and info["iterations_done"] == 3 and info["settings"]["iterations"] == 50
    models.load(out)


def test_a_run_with_a_checkpoint_can_be_resumed_with_the_same_command_only(tmp_path, capsys):
    out, checkpoint = tmp_path / "model.pt", tmp_path / "ckpt.pt"
    words = ["train", "texture", *TINY_TEXTURE, "--iterations", "100", "--checkpoint", str(checkpoint)]
    cli.main([*words, "--out", str(out)])
    state = run.state_path(checkpoint)
    assert state.is_file() and torch.load(state, weights_only=True)["iteration"] == 100
    cli.main([*words, "--out", str(tmp_path / "again.pt"), "--resume"])      # nothing left to do, but it continues
    assert models.load_metadata(tmp_path / "again.pt")["resumed_at_iteration"] == 100
    assert torch.equal(models.load(out).update.weight, models.load(tmp_path / "again.pt").update.weight)
    with pytest.raises(SystemExit):                                          # other settings: refused
        cli.main(["train", "texture", *TINY_TEXTURE, "--iterations", "200", "--checkpoint", str(checkpoint),
                  "--out", str(tmp_path / "other.pt"), "--resume"])
    assert "other settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*words[:-2], "--out", str(tmp_path / "none.pt"), "--resume"])
    assert "pass the same --checkpoint" in capsys.readouterr().err


def test_copy_ships_a_finished_run_under_a_new_name_and_never_replaces_a_model_by_accident(tmp_path, capsys):
    source, destination = tmp_path / "runs" / "rd_try.pt", tmp_path / "models" / "rd_try.pt"
    rule = TASKS["rd"].new_model(TASKS["rd"].Settings(channels=4, hidden=8))
    command = f"python -m helpers train rd --channels 4 --out {source} --checkpoint {source.parent}/ck.pt --threads 1"
    models.save(rule, source, {"task": "rd", "command": command})
    cli.main(["copy", str(source), str(destination)])
    assert "copied to" in capsys.readouterr().out
    copied, info = models.load(destination), models.load_metadata(destination)
    assert torch.equal(copied.reaction_in.weight, rule.reaction_in.weight)
    assert info["command"] == (f"python -m helpers train rd --channels 4 --out {destination} "
                               "--checkpoint outputs/rd_try_ckpt.pt --threads 1")
    assert models.load_metadata(source)["command"] == command                       # the source is left as it was
    destination.write_bytes(b"precious")
    with pytest.raises(SystemExit) as stop:
        cli.main(["copy", str(source), str(destination)])
    assert stop.value.code == 2 and "--overwrite" in capsys.readouterr().err and destination.read_bytes() == b"precious"
    cli.main(["copy", str(source), str(destination), "--overwrite"])
    models.load(destination)
    for arguments, message in [([str(tmp_path / "none.pt"), str(tmp_path / "x.pt")], "none"),
                               ([str(source), str(tmp_path / "x.json")], "ending in .pt"),
                               ([str(source), str(source)], "the same file")]:
        with pytest.raises(SystemExit):
            cli.main(["copy", *arguments])
        assert message in capsys.readouterr().err


def test_copy_refuses_the_partial_model_of_a_stopped_run(tmp_path):
    source = tmp_path / "stopped.pt"
    rule = TASKS["rd"].new_model(TASKS["rd"].Settings(channels=4, hidden=8))
    models.save(rule, source, {"task": "rd", "partial": True})
    with pytest.raises(ValueError, match="--resume"):
        models.copy(source, tmp_path / "shipped.pt")
    assert not (tmp_path / "shipped.pt").exists()
