"""Training a task's model from its settings and saving it with everything needed to trust it.

Every task module (``texture``, ``mst``) offers the same surface: ``Settings``,
``new_model(settings)``, ``make_samples(settings, device)``, ``loss(settings, device)`` and
``describe(settings, model, history)`` (its measurements). ``train_and_save`` trains with the pool
loop of ``helpers.train``, then saves the weights with a JSON that records the settings verbatim,
the command, the device and threads really used, the time it took and the measurements.
"""
from __future__ import annotations

import dataclasses
import datetime
import shlex
from pathlib import Path
from types import ModuleType

import torch

from .. import nca, train


def flag(name: str) -> str:
    """The command-line flag of a settings field: ``lr_milestones`` -> ``--lr-milestones``."""
    return "--" + name.replace("_", "-")


def settings_arguments(settings) -> list[str]:
    """The flags that reproduce ``settings`` (only the fields that differ from their defaults)."""
    defaults = type(settings)()
    arguments = []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value == getattr(defaults, field.name):
            continue
        if isinstance(value, bool):
            arguments.append(flag(field.name) if value else "--no-" + field.name.replace("_", "-"))
        elif isinstance(value, tuple):
            arguments += [flag(field.name), *map(str, value)]
        else:
            arguments += [flag(field.name), str(value)]
    return arguments


def command_line(task: str, settings, out: str | Path | None = None, threads: int | None = None) -> str:
    """The command that trains ``settings`` (what a model's JSON records when it was trained from Python)."""
    arguments = ["python", "-m", "helpers", "train", task, *settings_arguments(settings)]
    if threads:
        arguments += ["--threads", str(threads)]
    if out:
        arguments += ["--out", str(out)]
    return shlex.join(arguments)


def check_out_path(out: str | Path, overwrite: bool = False) -> Path:
    """Where a model will be saved, checked BEFORE training: a ``.pt`` name, and no existing model
    replaced unless ``overwrite`` (the shipped models in data/models must not be lost by accident)."""
    path = Path(out)
    if path.suffix != ".pt":
        raise ValueError(f"--out must name the weights file, ending in .pt (the JSON goes beside it), got {out}")
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name ending in .pt")
    if not overwrite and (path.exists() or path.with_suffix(".json").exists()):
        raise FileExistsError(f"{path} already exists; choose another --out, or pass --overwrite to replace it")
    return path


def device_description(device: torch.device) -> str:
    """The device a model really trained on, in words (e.g. ``cpu, 1 thread``)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu, {threads} thread{'s' if threads != 1 else ''}"
    return device.type


def checkpoints(model, path: Path, every: int):
    """An ``on_iteration`` hook for ``train_pool``: every ``every`` iterations, save the weights so
    far to ``path``, marked partial, so that a long run that has to be stopped leaves a model behind."""

    def save(iteration: int, loss: float) -> None:
        if (iteration + 1) % every == 0:
            nca.save_model(model, path, {"partial": True, "iteration": iteration + 1, "loss": loss})
            print(f"iteration {iteration + 1}: loss {loss:.5g}, weights so far saved to {path}", flush=True)

    return save


def train_and_save(task: ModuleType, settings, out: str | Path | None = None, device=None, progress: bool = True,
                   command: str | None = None, overwrite: bool = False, checkpoint: str | Path | None = None,
                   checkpoint_every: int = 100) -> tuple:
    """Train ``task``'s model with ``settings``; save it to ``out`` (when given) with its metadata.

    Returns ``(model, metadata)``. ``command`` is what the user typed (the command line passes
    it); from Python the equivalent command is recorded instead. ``checkpoint``: also save the
    weights so far there every ``checkpoint_every`` iterations."""
    name = task.__name__.rsplit(".", 1)[-1]
    path = check_out_path(out, overwrite) if out else None
    if checkpoint is not None:
        checkpoint = check_out_path(checkpoint, overwrite=True)
    device = torch.device(device) if device is not None else torch.device("cpu")
    started = datetime.datetime.now()
    torch.manual_seed(settings.seed)      # the initial weights
    model = task.new_model(settings).to(device)
    hook = checkpoints(model, checkpoint, checkpoint_every) if checkpoint is not None else None
    history = train.train_pool(model, task.make_samples(settings, device), task.loss(settings, device), settings,
                               progress=progress, on_iteration=hook)
    model = model.eval().cpu()
    metadata = {
        "task": name,
        "command": command or command_line(name, settings, out),
        "settings": settings.as_dict(),
        "device": device_description(device),
        "torch": torch.__version__,
        "date": started.date().isoformat(),
        "training_seconds": round(history.seconds, 1),
        **task.describe(settings, model, history),
    }
    if path is not None:
        nca.save_model(model, path, metadata)
    return model, metadata
