"""The course's tasks, one module per task, and THE task registry, ``TASKS``.

The command line (``python -m helpers train TASK`` and ``evaluate TASK``) is built from this registry
and names no task; a new task is a module with the surface below, added to ``TASKS``. Every task
module offers (``tests/test_task_interface.py`` checks each registered one against ``Task``):

* ``Settings``: ONE dataclass holding every default of the task; it extends
  ``helpers.train.TrainConfig``, so it is also the pool loop's configuration. Every field is a flag
  of ``train TASK``, with its help text written once, in the field;
* ``PRESETS``: named ``Settings`` for the recipes that were run (the shipped models' among them),
  chosen with ``train TASK --preset NAME``;
* ``new_model(settings)``: the untrained model (or, for a stage that continues one, the saved model);
* ``training_hooks(settings, model, device)``: what ``helpers.train.train_pool`` needs for this task:
  ``make_samples`` (fresh pool entries) and ``loss_fn`` always; where the task needs them,
  ``prepare_batch``, ``condition`` (a per-entry code), ``rollout`` and ``preview``;
* ``measure(model, settings)``: the numbers a saved model's JSON reports (its ``eval``);
* ``describe(settings, model, history)``: everything the task adds to a saved model's JSON;
* ``summary_line(metadata)``: one line the command prints after training or evaluating;
* ``default_out(settings)``: where a model goes without ``--out`` (under ``outputs/``);
* ``train(settings, out=None, device=None, progress=True, **options)``: train through the pool loop,
  measure, save with the settings recorded verbatim (``helpers.tasks.run.train_and_save``);
* ``evaluate_arguments(parser)`` and ``evaluate_saved(model, metadata, args)``: the flags of
  ``evaluate TASK`` and the measurement it makes of a saved model, as ``(entries for its JSON, text)``.

Optional: ``before_training(settings)``, what must be fetched before training starts (a download),
so that a missing one fails before the first iteration; ``selection_score(model, settings)``, a
number (lower is better) that ``train_and_save`` computes every ``settings.select_every`` iterations
to keep the best weights seen rather than the last (``run.Selection``: chapter 03 grows the rule far
beyond its training rollouts and compares it with the target; chapter 06 checks that the grown pattern
holds to 8,000 steps).

``texture`` (chapter 03), ``mst`` (chapter 05, its measurements in ``mst_metrics`` and ``mst_graphs``),
``growing`` (chapter 06), ``manifold`` (chapter 07) and ``rd`` (chapter 08).
"""
from __future__ import annotations

import shlex
from typing import Callable, Protocol, runtime_checkable


@runtime_checkable
class Task(Protocol):
    """The surface every task module offers (see the module's doc)."""
    Settings: type
    PRESETS: dict
    new_model: Callable
    training_hooks: Callable
    measure: Callable
    describe: Callable
    summary_line: Callable
    default_out: Callable
    train: Callable
    evaluate_arguments: Callable
    evaluate_saved: Callable


from . import growing, manifold, mst, rd, run, texture  # noqa: E402  (the task modules import helpers.tasks.run)

TASKS = {"texture": texture, "mst": mst, "growing": growing, "manifold": manifold, "rd": rd}


def task_of(metadata: dict) -> str | None:
    """The task that trained a saved model: the one its recorded ``python -m helpers train TASK`` command
    names, else its JSON's ``task`` entry when that is a task name; None when the JSON says neither."""
    words = shlex.split(metadata.get("command", "") or "")
    if words[2:4] == ["helpers", "train"] and len(words) > 4 and words[4] in TASKS:
        return words[4]
    return metadata.get("task") if metadata.get("task") in TASKS else None


def settings_of(metadata: dict):
    """The settings a saved model's JSON records, as its task's ``Settings`` read with today's names
    (``run.stored_settings``); the task is the one its recorded command trained."""
    task = shlex.split(metadata["command"])[4]
    return run.stored_settings(task, TASKS[task].Settings, metadata["settings"])
