"""Every registered task offers the one task interface of helpers.tasks, and the command line names no task."""
import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

from helpers import cli, train
from helpers.tasks import TASKS, Task

#: Settings small enough to build a task's training hooks and draw samples in a test.
TINY = {"texture": dict(size=8, target_size=8), "mst": dict(canvas=32, margin=4.0, max_points=4),
        "growing": dict(target_size=8, margin=2, hidden=8), "manifold": dict(hidden=8),
        "rd": dict(size=8, target_size=8, channels=4, hidden=8)}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_offers_the_interface(name):
    task = TASKS[name]
    assert isinstance(task, Task), [member for member in Task.__annotations__ if not hasattr(task, member)]
    assert dataclasses.is_dataclass(task.Settings) and issubclass(task.Settings, train.TrainConfig)
    assert all(isinstance(preset, task.Settings) for preset in task.PRESETS.values())
    assert task.default_out(task.Settings()).startswith("outputs/")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_gives_the_pool_loop_samples_a_loss_and_nothing_it_does_not_take(name):
    task = TASKS[name]
    settings = task.Settings(**TINY[name])
    torch.manual_seed(0)
    model = task.new_model(settings)
    hooks = task.training_hooks(settings, model, torch.device("cpu"))
    assert {"make_samples", "loss_fn"} <= set(hooks)
    loop_arguments = set(inspect.signature(train.train_pool).parameters)
    assert set(hooks) - {"make_samples", "loss_fn"} <= loop_arguments
    samples = hooks["make_samples"](2)
    assert samples["state"].shape[0] == 2


def test_the_command_line_names_no_task_outside_its_help_text():
    source = Path(cli.__file__).read_text()
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef)) and ast.get_docstring(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            assert node.value not in TASKS, f"cli.py names the task {node.value!r}"
        if isinstance(node, (ast.Name, ast.Attribute)):
            named = node.id if isinstance(node, ast.Name) else node.attr
            assert named not in TASKS, f"cli.py names the task {named!r}"


def test_every_shipped_model_gives_its_settings_by_its_recorded_task():
    from helpers import models
    from helpers.tasks import settings_of
    for path in sorted(models.shipped_dir().rglob("*.pt")):
        metadata = models.load_metadata(path)
        if "settings" in metadata:
            settings = settings_of(metadata)
            assert settings.iterations == metadata["settings"]["iterations"], path
