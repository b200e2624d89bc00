"""Training a task's model from its settings and saving it with everything needed to trust it.

``train_and_save`` trains any task of the registry (``helpers.tasks``, where the task interface is
written) with the pool loop of ``helpers.train``, then saves the weights with a JSON that records
the settings verbatim, the command, the device and threads really used, the time it took and the
measurements. ``EngineSettings`` is the engine choice of the tasks whose rule is chapter 03's NCA,
``CellNetworkSettings`` that of the per-cell-network rules of chapters 06-08 (growing, manifold, rd).
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import shlex
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

from .. import fast, models, nca, train
from ..fast import cell_network
from ..train import setting

#: The rollouts a task whose rule is chapter 03's NCA can train with: the plain ``model.rollout``
#: (what the chapters teach) or ``helpers.fast`` (the same states and gradients, faster).
ENGINES = ("fast", "plain")


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")


def check_select_every(select_every: int) -> None:
    """``select_every`` of a task that keeps its best weights by a long rollout (``Selection``)."""
    if select_every < 0:
        raise ValueError(f"select_every must be >= 0 (0: keep the last weights), got {select_every}")


@dataclass
class EngineSettings(train.TrainConfig):
    """The pool loop's settings plus the engine that runs chapter 03's rule (texture, mst); the rules of
    chapters 06-08 choose theirs with ``CellNetworkSettings``. ``masks`` says how the fast engine draws
    its random update masks: ``exact`` (the plain model's own draws) or ``bits`` (random bits)."""
    engine: str = setting("plain", "plain: model.rollout, as the chapters teach it; fast: helpers.fast (the same "
                                   "states and gradients, several times faster)")
    masks: str = setting("exact", "the fast engine's update masks: exact (the plain model's draws) or "
                                  "bits (random bits, same distribution, other draws)")

    def __post_init__(self):
        super().__post_init__()
        check_engine(self.engine)
        if self.masks not in fast.MASK_MODES:
            raise ValueError(f"masks must be one of {fast.MASK_MODES}, got {self.masks!r}")
        if self.engine == "plain" and self.masks != "exact":
            raise ValueError("the plain engine draws exact masks only; use masks='exact' or engine='fast'")

    def rollout(self) -> Callable:
        """The rollout ``train_pool`` uses for these settings: ``helpers.fast`` with their masks, or the
        plain ``model.rollout``."""
        return fast.make_rollout(masks=self.masks) if self.engine == "fast" else train.plain_rollout


@dataclass
class CellNetworkSettings(train.TrainConfig):
    """The pool loop's settings plus the engine that runs the per-cell-network rules of chapters 06-08
    (growing, manifold, rd): ``helpers.fast.cell_network`` by default, which runs the plain model
    wherever its check against the plain model on this device fails."""
    engine: str = setting("fast", "fast: helpers.fast.cell_network (the plain model's states and gradients, several "
                                  "times faster on a CPU); plain: model.rollout, as the chapters teach it")

    def __post_init__(self):
        super().__post_init__()
        check_engine(self.engine)

    def rollout(self) -> Callable:
        """The rollout ``train_pool`` uses for these settings."""
        return cell_network.fast_rollout if self.engine == "fast" else train.plain_rollout


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


#: Settings of models saved before the course's vocabulary was unified, and how they read today:
#: ``renamed`` fields (old name -> new name; the flag too: ``--padding 6`` is ``--margin 6``) and
#: ``retired`` values, read as today's default: the one value every model saved with them had (the
#: growing and reaction-diffusion rules' engine has no masks option, so their ``--masks exact`` chose
#: nothing; their ``--engine plain`` gave the states and gradients today's default engine gives), and
#: renamed ``values`` (field -> {old value: new value}: the fast engine's mask mode ``fast`` is ``bits``,
#: named apart from the engine; chapter 05's comparison models record ``--masks fast``). An MST model's
#: ``eval_steps`` 96 was the default before 0 (the length its validation chooses) replaced it: the two
#: models that record it (mst.pt and training_length/mst_4000.pt) had their held-out figures re-measured
#: at their chosen length (``evaluate mst --full``), which is what 0 means today. ``added``: fields that
#: came later with a default that does otherwise, and the value every model saved before them had (the
#: texture rule's perception ``filters``: every texture model before it had Laplacian and Sobel filters).
RECORDED_BEFORE = {
    "growing": {"renamed": {"padding": "margin"}, "retired": {"engine": "plain", "masks": "exact"}},
    "manifold": {"renamed": {"padding": "margin"}, "retired": {}},
    "rd": {"renamed": {}, "retired": {"engine": "plain", "masks": "exact"}},
    "mst": {"renamed": {}, "retired": {"eval_steps": 96}, "values": {"masks": {"fast": "bits"}}},
    "texture": {"renamed": {}, "retired": {}, "values": {"masks": {"fast": "bits"}},
                "added": {"filters": "laplacian_sobel"}},
}


def stored_settings(task: str, settings_class: type, stored: dict):
    """The settings a saved model's JSON records (its ``settings`` entry), read with today's names;
    a field added since the model was trained takes its default, or the value ``RECORDED_BEFORE``'s
    ``added`` names (what the code did before the field existed, where the default now does otherwise).
    A field the settings do not know (and ``RECORDED_BEFORE`` does not explain) is an error that names it."""
    before = RECORDED_BEFORE.get(task, {"renamed": {}, "retired": {}})
    names = {field.name for field in dataclasses.fields(settings_class)}
    values = dict(before.get("added", {}))          # overridden below by a model that records the field
    for key, value in stored.items():
        key = before["renamed"].get(key, key)
        if key in before["retired"] and before["retired"][key] == value:
            continue                          # read as today's default (see RECORDED_BEFORE)
        if key in names:
            value = before.get("values", {}).get(key, {}).get(value, value) if isinstance(value, str) else value
            values[key] = tuple(value) if isinstance(value, list) else value
        else:
            raise ValueError(f"the stored {task} settings have {key}={value!r}, which {settings_class.__qualname__} "
                             f"does not know: is this a {task} model?")
    return settings_class(**values)


def current_command(task: str, words: list[str], stored: dict | None = None) -> list[str]:
    """A recorded command (split into words) as it is typed today: renamed flags renamed, the flags of
    retired fields (with their only value) dropped, renamed values renamed, and, when the model's
    ``stored`` settings predate a field ``RECORDED_BEFORE`` lists as ``added``, that field's flag with
    the value it had before. See ``RECORDED_BEFORE``."""
    before = RECORDED_BEFORE.get(task, {"renamed": {}, "retired": {}})
    retired = {flag(name): str(value) for name, value in before["retired"].items()}
    renamed = {flag(old): flag(new) for old, new in before["renamed"].items()}
    new_values = {flag(name): values for name, values in before.get("values", {}).items()}
    result, index = [], 0
    while index < len(words):
        word = words[index]
        if word in retired and index + 1 < len(words) and words[index + 1] == retired[word]:
            index += 2
            continue
        if word in new_values and index + 1 < len(words):
            result += [word, new_values[word].get(words[index + 1], words[index + 1])]
            index += 2
            continue
        result.append(renamed.get(word, word))
        index += 1
    for name, value in before.get("added", {}).items():
        if stored is not None and name not in stored and flag(name) not in result:
            result += [flag(name), str(value)]
    return result


def remeasure(task: ModuleType, model, metadata: dict, **options) -> tuple[dict, str]:
    """``evaluate_saved`` of a task whose measurements are its ``measure``: measure the saved model
    again with its recorded settings. Returns ``({"eval": ...}, the task's summary line)``."""
    name = task.__name__.rsplit(".", 1)[-1]
    settings = stored_settings(name, task.Settings, metadata["settings"])
    measured = task.measure(model, settings, **options)
    return {"eval": measured}, task.summary_line({**metadata, "eval": measured})


def command_line(task: str, settings, out: str | Path | None = None, threads: int | None = None) -> str:
    """The command that trains ``settings`` (what a model's JSON records when it was trained from Python)."""
    arguments = ["python", "-m", "helpers", "train", task, *settings_arguments(settings)]
    if threads:
        arguments += ["--threads", str(threads)]
    if out:
        arguments += ["--out", str(out)]
    return shlex.join(arguments)


def check_out_path(out: str | Path, overwrite: bool = False, resuming=None, flag: str = "--out") -> Path:
    """Where a model will be saved, checked BEFORE training: a ``.pt`` name, and no existing model
    replaced unless ``overwrite`` (the shipped models in data/models must not be lost by accident).
    ``resuming``: the settings of a run that ``--resume`` continues; the partial model that run left at
    ``out`` when it was stopped (Ctrl-C) is replaced, never a finished one."""
    path = Path(out)
    if path.suffix != ".pt":
        raise ValueError(f"{flag} must name the weights file, ending in .pt (the JSON goes beside it), got {out}")
    if path.is_dir():
        raise ValueError(f"{flag} {out} is a folder; give a file name ending in .pt")
    if not overwrite and (path.exists() or path.with_suffix(".json").exists()):
        if resuming is not None and left_by_stopped_run(path, resuming):
            return path
        finished = " (--resume replaces only the partial model its stopped run saved there)" if resuming else ""
        raise FileExistsError(f"{path} already exists{finished}; choose another --out, or pass --overwrite to "
                              "replace it")
    return path


def left_by_stopped_run(path: Path, settings) -> bool:
    """Whether ``path`` holds the partial model that a run with ``settings`` saved when it was stopped:
    its JSON says ``"partial": true`` and records these settings."""
    try:
        info = models.load_metadata(path)
    except (FileNotFoundError, ValueError):
        return False
    return info.get("partial") is True and info.get("settings") == settings.as_dict()


def device_description(device: torch.device) -> str:
    """The device a model really trained on, in words (e.g. ``cpu, 1 thread``)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu, {threads} thread{'s' if threads != 1 else ''}"
    return device.type


#: A trained rule's states must stay within this bound over a rollout four times its longest
#: training rollout; beyond it the rule has diverged (the shipped rules stay within 1.5).
DIVERGENCE_BOUND = 100.0


@torch.no_grad()
def stability(model, task: ModuleType, settings) -> dict:
    """Roll the trained rule out from two fresh samples for 4 x ``max_steps`` steps: is it bounded?"""
    hooks = task.training_hooks(settings, model, torch.device("cpu"))
    samples = hooks["make_samples"](2)
    conditions = (hooks["condition"](samples),) if "condition" in hooks else ()
    steps = 4 * settings.max_steps
    generator = torch.Generator().manual_seed(settings.seed)
    if isinstance(model, nca.NCA):
        final = fast.infer(model, samples["state"], steps, generator=generator)
    else:                         # another rule (chapters 06-08): its own rollout
        final = model.rollout(samples["state"], steps, *conditions, generator=generator)
    finite = bool(torch.isfinite(final).all())
    largest = final.abs().max().item() if finite else float("inf")
    return {"steps": steps, "max_abs_state": largest, "bound": DIVERGENCE_BOUND,
            "bounded": finite and largest <= DIVERGENCE_BOUND}


class Progress:
    """The ``on_iteration`` hook of a training: counts the iterations done and, with a ``checkpoint``
    path, saves the weights so far there every ``every`` iterations (marked partial), so that a
    long run that has to be stopped leaves a model behind."""

    def __init__(self, model, checkpoint: Path | None = None, every: int = 100):
        self.model, self.checkpoint, self.every = model, checkpoint, every
        self.done, self.last_loss = 0, None

    def __call__(self, iteration: int, loss: float) -> None:
        self.done, self.last_loss = iteration + 1, loss
        if self.checkpoint is not None and self.done % self.every == 0:
            models.save(self.model, self.checkpoint, {"partial": True, "iteration": self.done, "loss": loss})
            print(f"iteration {self.done}: loss {loss:.5g}, weights so far saved to {self.checkpoint}", flush=True)


class Selection:
    """The ``on_iteration`` hook that keeps the best weights seen: every ``every`` iterations (and
    after the last) it scores the rule with ``score(model)`` (lower is better) and copies the weights
    when they beat every earlier score. A rule trained on short rollouts can get worse at long ones
    while its training loss still falls (a texture that drifts after 1000 steps); so the task scores
    what a learner will see, a long rollout, and the saved model is the best one by that score."""

    def __init__(self, model, score: Callable, every: int, iterations: int):
        self.model, self.score, self.every, self.iterations = model, score, every, iterations
        self.scores: list[tuple[int, float]] = []
        self.best_weights, self.best_iteration, self.best_score = None, None, float("inf")

    def __call__(self, iteration: int, loss: float) -> None:
        done = iteration + 1
        if done % self.every == 0 or done == self.iterations:
            self.consider(done)

    def consider(self, done: int) -> None:
        value = float(self.score(self.model))
        self.scores.append((done, value))
        if value < self.best_score:            # NaN and inf never win
            self.best_weights = {key: tensor.detach().clone() for key, tensor in self.model.state_dict().items()}
            self.best_iteration, self.best_score = done, value

    def state(self) -> dict:
        """What a training state keeps of the selection, so that a resumed run remembers its best."""
        return {"scores": torch.tensor(self.scores, dtype=torch.float64).reshape(-1, 2),
                "best_iteration": self.best_iteration or 0, "best_score": self.best_score,
                "best_weights": self.best_weights or {}}

    def restore(self, state: dict) -> None:
        self.scores = [(int(done), value) for done, value in state["scores"].tolist()]
        self.best_iteration = state["best_iteration"] or None
        self.best_score = float(state["best_score"])
        self.best_weights = state["best_weights"] or None

    def apply(self) -> dict:
        """Load the best weights into the model; returns what the JSON records of the selection."""
        if self.best_weights is None:
            raise train.Diverged("no long rollout of the training stayed finite: nothing to select; lower the "
                                 "learning rate")
        self.model.load_state_dict(self.best_weights)
        return {"every": self.every, "iteration": self.best_iteration, "score": self.best_score,
                "scores": [[done, round(value, 6)] for done, value in self.scores]}


def selection_hook(task: ModuleType, settings, model) -> Selection | None:
    """The task's ``Selection``, when it scores long rollouts and ``settings.select_every`` asks for it."""
    every = getattr(settings, "select_every", 0)
    if not every or not hasattr(task, "selection_score"):
        return None
    return Selection(model, lambda rule: task.selection_score(rule, settings), every, settings.iterations)


def both(first: Callable, second: Callable | None) -> Callable:
    """One ``on_iteration`` hook that calls ``first`` then ``second`` (when there is one)."""
    if second is None:
        return first

    def hook(iteration: int, loss: float) -> None:
        first(iteration, loss)
        second(iteration, loss)
    return hook


def state_path(checkpoint: str | Path) -> Path:
    """Where ``--checkpoint NAME.pt`` keeps the whole training state: ``NAME.state.pt`` beside it."""
    return Path(checkpoint).with_suffix(".state.pt")


def state_writer(path: Path, settings, selection: Selection | None = None):
    """``on_snapshot`` for ``train.train_pool``: write the training state (and the settings it
    belongs to, and the ``selection``'s best weights so far) to ``path``, replacing the previous one
    atomically."""
    def write(state: dict) -> None:
        buffer = io.BytesIO()
        extra = {"selection": selection.state()} if selection is not None else {}
        torch.save({**state, "settings": settings.as_dict(), **extra}, buffer)
        models.write_atomically({path: buffer.getvalue()})
    return write


def load_training_state(checkpoint: str | Path, settings) -> dict:
    """The training state that ``--checkpoint`` wrote, checked against ``settings`` (a run is only
    continued with the settings it started with)."""
    path = state_path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: no training state {path} (it is written every 100 iterations "
                                f"by a run started with --checkpoint {checkpoint})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:        # truncated, empty or not torch's format: the reader's own error is obscure
        raise ValueError(f"{path} cannot be read as a training state ({type(error).__name__}: {error}); it is "
                         f"truncated or corrupt (a run stopped while writing it, a copy cut short). Nothing can be "
                         f"resumed from it: delete it and start the run again without --resume") from error
    if not isinstance(state, dict) or "iteration" not in state:
        raise ValueError(f"{path} is not a training state written by --checkpoint (it holds a "
                         f"{type(state).__name__}); delete it and start the run again without --resume")
    stored = state.get("settings", {})
    defaults = type(settings)().as_dict()       # a field added since the run started: its default then
    differ = {key: (stored.get(key, defaults[key]), value) for key, value in settings.as_dict().items()
              if stored.get(key, defaults[key]) != value}
    if differ:
        raise ValueError(f"{path} belongs to a run with other settings (stored, given): {differ}; resume with the "
                         "command that started it")
    return state


def train_and_save(task: ModuleType, settings, out: str | Path | None = None, device=None, progress: bool = True,
                   command: str | None = None, overwrite: bool = False, checkpoint: str | Path | None = None,
                   checkpoint_every: int = 100, allow_diverged: bool = False, resume: bool = False) -> tuple:
    """Train ``task``'s model with ``settings``; save it to ``out`` (when given) with its metadata.

    Returns ``(model, metadata)``. ``command`` is what the user typed (the command line passes
    it); from Python the equivalent command is recorded instead. ``checkpoint``: also save the
    weights so far there every ``checkpoint_every`` iterations. Interrupted (Ctrl-C), the model so
    far is saved to ``out`` marked partial. A rule whose long rollout does not stay bounded raises
    ``helpers.train.Diverged`` and is not saved, unless ``allow_diverged``. With a ``checkpoint``
    the whole training state (weights, optimizer, pool, random generators) is also written to
    ``state_path(checkpoint)``; ``resume=True`` continues a stopped run from there."""
    name = task.__name__.rsplit(".", 1)[-1]
    path = check_out_path(out, overwrite, resuming=settings if resume else None) if out else None
    if checkpoint is not None:
        checkpoint = check_out_path(checkpoint, overwrite=True, flag="--checkpoint")
    if resume and checkpoint is None:
        raise ValueError("resume continues the run whose --checkpoint is given: pass the same --checkpoint")
    resumed = load_training_state(checkpoint, settings) if resume else None
    device = torch.device(device) if device is not None else torch.device("cpu")
    started = datetime.datetime.now()
    recorded = {"task": name, "command": command or command_line(name, settings, out), "settings": settings.as_dict(),
                "device": device_description(device), "torch": torch.__version__, "date": started.date().isoformat()}
    if resumed is not None:
        recorded["resumed_at_iteration"] = resumed["iteration"]
    torch.manual_seed(settings.seed)      # the initial weights
    model = task.new_model(settings).to(device)
    hook = Progress(model, checkpoint, checkpoint_every)
    selection = selection_hook(task, settings, model)
    if selection is not None and resumed is not None and "selection" in resumed:
        selection.restore(resumed["selection"])
    try:
        hooks = task.training_hooks(settings, model, device)
        history = train.train_pool(model, hooks.pop("make_samples"), hooks.pop("loss_fn"), settings,
                                   progress=progress, on_iteration=both(hook, selection), **hooks,
                                   on_snapshot=(state_writer(state_path(checkpoint), settings, selection)
                                                if checkpoint else None),
                                   snapshot_every=checkpoint_every, resume=resumed)
    except KeyboardInterrupt:
        if path is not None:
            models.save(model.eval().cpu(), path, {**recorded, "partial": True, "iterations_done": hook.done,
                                                      "last_loss": hook.last_loss})
            print(f"\ninterrupted after {hook.done} of {settings.iterations} iterations: the model so far is saved "
                  f"to {path}, marked partial", flush=True)
        raise
    selected = {"selected": selection.apply()} if selection is not None else {}
    model = model.eval().cpu()
    checked = stability(model, task, settings)
    if not checked["bounded"] and not allow_diverged:
        raise train.Diverged(f"the trained rule diverged: over {checked['steps']} steps its states reach "
                            f"{checked['max_abs_state']:.3g} (bound {DIVERGENCE_BOUND:g}); nothing was saved. "
                            "Lower the learning rate, or pass allow_diverged=True (--allow-diverged) to save it anyway")
    metadata = {**recorded, "training_seconds": round(history.seconds, 1), "stability": checked, **selected,
                **task.describe(settings, model, history)}
    if path is not None:
        models.save(model, path, metadata)
    return model, metadata
