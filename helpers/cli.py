"""One command line for every task of ``helpers.tasks.TASKS``: ``train TASK``, ``evaluate TASK``, ``copy``, ``bench``.

The sub-commands are built from the registry; each task's surface is written down in
``helpers.tasks``. Every field of a task's settings dataclass is a flag, with the default and help
written once, in the dataclass; ``--preset NAME`` starts from one of the task's named recipes (the
flags given beside it change it); a saved model's JSON records the command as typed and the settings
it produced. For example::

    python -m helpers train texture --target stripes --size 48 --iterations 2000 --out outputs/stripes.pt
    python -m helpers train texture --target my_photo.jpg        # your own image: a path or an http(s) URL
    python -m helpers train growing --preset cpu --emoji lizard
    python -m helpers evaluate mst data/models/mst.pt
    python -m helpers evaluate growing data/models/growing_lizard_regenerating.pt --count 20
    python -m helpers copy outputs/rd_bubbles.pt data/models/rd_bubbles.pt --overwrite   # ship a finished run
    python -m helpers bench --full

Models are written to ``outputs/`` unless ``--out`` says otherwise, and an existing model is
never replaced without ``--overwrite``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import typing
from pathlib import Path

import torch

from . import bench, env, models, train
from .tasks import TASKS, run, task_of


def field_type(settings_class, field: dataclasses.Field):
    """The Python type of a settings field (annotations are strings under ``from __future__ import annotations``)."""
    return typing.get_type_hints(settings_class)[field.name]


def add_settings_arguments(parser: argparse.ArgumentParser, task) -> None:
    """One flag per field of ``task.Settings`` (``--field-name``, its type and help, the default in the
    help), and ``--preset`` when the task has named recipes. A flag not given is left out of the
    parsed arguments, so that it takes the preset's value, or the default."""
    group = parser.add_argument_group("settings (recorded in the model's JSON)")
    if task.PRESETS:
        recipes = "; ".join(f"{name}: {' '.join(run.settings_arguments(preset))}"
                            for name, preset in task.PRESETS.items())
        group.add_argument("--preset", choices=list(task.PRESETS),
                           help=f"start from a named recipe, then apply the flags given beside it ({recipes})")
    defaults = task.Settings()
    for field in dataclasses.fields(task.Settings):
        kind, default = field_type(task.Settings, field), getattr(defaults, field.name)
        help_text = field.metadata.get("help", "")
        flag = run.flag(field.name)
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=f"{help_text} (default: {default})")
        elif kind is tuple:
            group.add_argument(flag, type=int, nargs="*", default=argparse.SUPPRESS,
                               help=f"{help_text} (default: {' '.join(map(str, default)) or 'none'})")
        else:
            group.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=f"{help_text} (default: {default})")


def settings_from(args: argparse.Namespace, task):
    """The settings the parsed flags describe: the preset's (or the defaults) with the flags given
    (``__post_init__`` checks the values)."""
    base = task.PRESETS[args.preset] if getattr(args, "preset", None) else task.Settings()
    given = {field.name: getattr(args, field.name) for field in dataclasses.fields(task.Settings)
             if hasattr(args, field.name)}
    return dataclasses.replace(base, **{key: tuple(value) if isinstance(value, list) else value
                                        for key, value in given.items()})


def first_line(module) -> str:
    return module.__doc__.strip().splitlines()[0]


def first_sentence(function) -> str:
    return " ".join(function.__doc__.split()).split(". ")[0].rstrip(".")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train", help="train a task's model and save it with its measurements")
    tasks = trainer.add_subparsers(dest="task", required=True, metavar="TASK",
                                   help="; ".join(f"{name} (presets: {', '.join(task.PRESETS) or 'none'})"
                                                  for name, task in TASKS.items()))
    for name, task in TASKS.items():
        task_parser = tasks.add_parser(name, help=first_line(task))
        add_settings_arguments(task_parser, task)
        where = task_parser.add_argument_group("where and how to run (not settings)")
        where.add_argument("--out", help=f"the model file, NAME.pt (default: {task.default_out(task.Settings())})")
        where.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
        where.add_argument("--checkpoint", help="also save the weights so far here every 100 iterations (.pt), and "
                                                "the whole training state beside them (NAME.state.pt)")
        where.add_argument("--resume", action="store_true",
                           help="continue a stopped run from its --checkpoint's training state (same command)")
        where.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
        where.add_argument("--device", help="cpu, cuda or mps (default: helpers.env.get_device())")
        where.add_argument("--allow-diverged", action="store_true",
                           help="save the rule even if its long rollout does not stay bounded")
        where.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluator = commands.add_parser("evaluate", help="measure a saved model again")
    evaluated = evaluator.add_subparsers(dest="task", required=True, metavar="TASK", help=", ".join(TASKS))
    for name, task in TASKS.items():
        task_parser = evaluated.add_parser(name, help=first_sentence(task.evaluate_saved))
        task_parser.add_argument("model", help=f"a saved {name} model, NAME.pt with NAME.json beside it")
        task_parser.add_argument("--write", action="store_true",
                                 help="store the measurements in the model's JSON (replacing the old ones)")
        task.evaluate_arguments(task_parser)
    copier = commands.add_parser("copy", help="copy a saved model to a new name (e.g. into data/models), its JSON's "
                                              "command naming the new file")
    copier.add_argument("model", help="a saved model, NAME.pt with NAME.json beside it")
    copier.add_argument("destination", help="the new NAME.pt")
    copier.add_argument("--overwrite", action="store_true", help="replace an existing model at the destination")
    commands.add_parser("bench", add_help=False, help="the fast engine's benchmark (python -m helpers bench --help)")
    return parser


def train_command(args: argparse.Namespace, parser: argparse.ArgumentParser, typed: str) -> None:
    task = TASKS[args.task]
    try:
        settings = settings_from(args, task)
        out = args.out or task.default_out(settings)
        run.check_out_path(out, args.overwrite, resuming=settings if args.resume else None)   # before training
        if args.checkpoint:
            run.check_out_path(args.checkpoint, overwrite=True, flag="--checkpoint")
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        device = env.get_device(args.device)
        if hasattr(task, "before_training"):
            task.before_training(settings)
        task.new_model(settings)      # the rule's options (channels, hidden, fire rate, --init) fail now, not mid-run
        if args.resume:                               # something to resume, from a run with these settings
            if not args.checkpoint:
                raise ValueError("--resume continues the run whose --checkpoint is given: pass the same --checkpoint")
            run.load_training_state(args.checkpoint, settings)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)
    env.flush_denormals()          # NumPy reads its float limits first: no "smallest subnormal" warnings
    try:
        _, metadata = task.train(settings, out=out, device=device, progress=not args.no_progress, command=typed,
                                 overwrite=args.overwrite, checkpoint=args.checkpoint,
                                 allow_diverged=args.allow_diverged, resume=args.resume)
    except KeyboardInterrupt:
        sys.exit(130)             # the model so far was saved, marked partial (train_and_save said where)
    except train.Diverged as error:
        sys.exit(f"error: {error}")
    except (ValueError, FileNotFoundError) as error:     # bad input found only once training had its data
        sys.exit(f"error: {error}")
    print(f"saved {out}: {task.summary_line(metadata)} ({metadata['training_seconds']:.0f} s of training)")


def check_task(metadata: dict, task: str, model: str) -> None:
    """A saved model is measured by the task that trained it (another task's measurement fails deep inside)."""
    trained_by = task_of(metadata)
    if trained_by is None:
        raise ValueError("its JSON records no task (neither a 'python -m helpers train TASK' command nor a task "
                         "name), so its settings are unknown; evaluate the models that 'python -m helpers train' "
                         "saved")
    if trained_by != task:
        raise ValueError(f"this is a {trained_by} model (its JSON records the task {trained_by!r}), not a {task} "
                         f"model; measure it with: python -m helpers evaluate {trained_by} {model}")


def evaluate_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Measure a saved model again with its task's ``evaluate_saved``; ``--write`` stores the result in its JSON."""
    task = TASKS[args.task]
    try:
        metadata = models.load_metadata(args.model)
        check_task(metadata, args.task, args.model)
        model = models.load(args.model)
        measured, text = task.evaluate_saved(model, metadata, args)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"{args.model}: {error}")
    print(text)
    if args.write:
        metadata.update(measured)
        text = json.dumps(metadata, indent=2) + "\n"
        models.write_atomically({Path(args.model).with_suffix(".json"): text.encode()})


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        bench.main(argv[1:], prog="python -m helpers bench")
        return
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        train_command(args, parser, "python -m helpers " + shlex.join(argv))
    elif args.command == "copy":
        try:
            print("copied to", models.copy(args.model, args.destination, args.overwrite))
        except (FileNotFoundError, FileExistsError, ValueError) as error:
            parser.error(str(error))
    else:
        evaluate_command(args, parser)
