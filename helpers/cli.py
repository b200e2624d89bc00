"""One command line for every task: ``python -m helpers train TASK``, ``evaluate mst|growing|rd|manifold``, ``bench``.

Every field of a task's settings dataclass is a flag, with the default and help written once, in
the dataclass; a saved model's JSON records the command as typed and the settings it produced::

    python -m helpers train texture --target stripes --size 48 --iterations 2000 --out outputs/stripes.pt
    python -m helpers train texture --target my_photo.jpg        # your own image: a path or an http(s) URL
    python -m helpers train mst --iterations 5000 --canvas 64 --max-points 10 --out outputs/mst.pt
    python -m helpers evaluate mst data/models/mst.pt
    python -m helpers evaluate growing data/models/growing_lizard_regenerating.pt --count 20
    python -m helpers evaluate rd data/models/rd_polka_dots.pt
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
from urllib.parse import urlparse

import torch

from . import bench, data, env, nca, train
from .tasks import growing, manifold, mst, rd, run, texture

TASKS = {"texture": texture, "mst": mst, "growing": growing, "rd": rd, "manifold": manifold}


def default_out(task: str, settings) -> str:
    """Where a model goes when ``--out`` is not given: a user folder, never the shipped data/models."""
    if task == "growing":
        return f"outputs/growing_{Path(settings.emoji).stem}_{settings.experiment}.pt"
    if task == "rd":
        return f"outputs/rd_{Path(settings.target).stem}.pt"
    if task == "manifold":
        return f"outputs/manifold_{settings.method}{'_encoder' if settings.stage == 'encoder' else ''}.pt"
    if task != "texture":
        return f"outputs/{task}.pt"
    # your own image (a path or URL) is named by its file name: outputs/texture_my_photo.pt
    name = settings.target if settings.target in data.list_textures() else Path(urlparse(settings.target).path).stem
    return f"outputs/texture_{name or 'image'}.pt"


def field_type(settings_class, field: dataclasses.Field):
    """The Python type of a settings field (annotations are strings under ``from __future__ import annotations``)."""
    return typing.get_type_hints(settings_class)[field.name]


def add_settings_arguments(parser: argparse.ArgumentParser, settings_class) -> None:
    """One flag per field of ``settings_class``: ``--field-name``, its type, default and help."""
    group = parser.add_argument_group("settings (recorded in the model's JSON)")
    defaults = settings_class()
    for field in dataclasses.fields(settings_class):
        kind, default = field_type(settings_class, field), getattr(defaults, field.name)
        help_text = field.metadata.get("help", "")
        flag = run.flag(field.name)
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif kind is tuple:
            group.add_argument(flag, type=int, nargs="*", default=list(default),
                               help=f"{help_text} (default: {' '.join(map(str, default)) or 'none'})")
        else:
            group.add_argument(flag, type=kind, default=default, help=f"{help_text} (default: {default})")


def settings_from(args: argparse.Namespace, settings_class):
    """The settings object the parsed flags describe (its ``__post_init__`` checks the values)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(settings_class)}
    return settings_class(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train", help="train a task's model and save it with its measurements")
    tasks = trainer.add_subparsers(dest="task", required=True)
    for name, module in TASKS.items():
        task_parser = tasks.add_parser(name, help=module.__doc__.splitlines()[0])
        add_settings_arguments(task_parser, module.Settings)
        where = task_parser.add_argument_group("where and how to run (not settings)")
        where.add_argument("--out", help=f"the model file, NAME.pt (default: {default_out(name, module.Settings())})")
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
    evaluated = evaluator.add_subparsers(dest="task", required=True)
    evaluate_mst = evaluated.add_parser("mst", help="held-out MST measurements of a saved model")
    evaluate_mst.add_argument("model", nargs="?", default="data/models/mst.pt")
    evaluate_mst.add_argument("--steps", type=int, help="rollout steps (default: as stored)")
    evaluate_mst.add_argument("--chapter-count", type=int, help="tasks of the 100x100 measurement (default: as stored)")
    evaluate_mst.add_argument("--full", action="store_true",
                              help="also choose the rollout length on validation tasks (unless --steps is given) "
                                   "and measure the surprises and the long rollout: all of chapter 05's stored "
                                   "figures (a few minutes on a CPU)")
    evaluate_mst.add_argument("--write", action="store_true",
                              help="store the held-out metrics in the model's JSON (replacing the old ones)")
    evaluate_growing = evaluated.add_parser("growing",
                                            help="stability, regeneration and rotation of a saved growing model")
    evaluate_growing.add_argument("model", help="a growing model, e.g. data/models/growing_lizard_regenerating.pt")
    evaluate_growing.add_argument("--count", type=int, default=50, help="damages per kind (default: 50)")
    evaluate_growing.add_argument("--write", action="store_true",
                                  help="store the measurements in the model's JSON (replacing the old ones)")
    evaluate_rd = evaluated.add_parser("rd", help="the texture check, orientations and wavelength of a saved "
                                                 "reaction-diffusion model")
    evaluate_rd.add_argument("model", help="a reaction-diffusion model, e.g. data/models/rd_polka_dots.pt")
    evaluate_rd.add_argument("--write", action="store_true",
                             help="store the measurements in the model's JSON (replacing the old ones)")
    evaluate_manifold = evaluated.add_parser("manifold", help="reconstruction, references, stability and regeneration "
                                                             "of a saved manifold model")
    evaluate_manifold.add_argument("model", help="a manifold model, e.g. data/models/manifold_hyper.pt")
    evaluate_manifold.add_argument("--write", action="store_true",
                                   help="store the measurements in the model's JSON (replacing the old ones)")
    commands.add_parser("bench", add_help=False, help="the fast engine's benchmark (python -m helpers bench --help)")
    return parser


def train_command(args: argparse.Namespace, parser: argparse.ArgumentParser, typed: str) -> None:
    module = TASKS[args.task]
    try:
        settings = settings_from(args, module.Settings)
        out = args.out or default_out(args.task, settings)
        run.check_out_path(out, args.overwrite)       # before training, not after
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        device = env.get_device(args.device)
        if args.task == "texture" and data.is_url(settings.target):
            data.fetch_image(settings.target)         # download (once) now: no internet fails before training
            data.load_target(settings.target, 8)
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
        _, metadata = module.train(settings, out=out, device=device, progress=not args.no_progress, command=typed,
                                   overwrite=args.overwrite, checkpoint=args.checkpoint,
                                   allow_diverged=args.allow_diverged, resume=args.resume)
    except KeyboardInterrupt:
        sys.exit(130)             # the model so far was saved, marked partial (train_and_save said where)
    except train.Diverged as error:
        sys.exit(f"error: {error}")
    print(f"saved {out}: {module.summary_line(metadata)} ({metadata['training_seconds']:.0f} s of training)")


def evaluate_saved_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``evaluate growing|rd|manifold``: measure a saved model again with its task's ``measure``; ``--write``
    stores the result as the JSON's ``eval``."""
    module = TASKS[args.task]
    try:
        metadata = nca.load_metadata(args.model)
        model = nca.load_model(args.model)
        settings = settings_from(argparse.Namespace(**metadata["settings"]), module.Settings)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as error:
        parser.error(f"{args.model} is not a saved {args.task} model with its settings in its JSON ({error})")
    if args.task == "growing":
        measured = growing.measure(model, settings, count=args.count)
        print(growing.summary_line({"eval": measured}))
    else:
        measured = module.measure(model, settings)
        print(module.summary_line({**metadata, "eval": measured}))
    if args.write:
        metadata["eval"] = measured
        nca.write_atomically({Path(args.model).with_suffix(".json"): (json.dumps(metadata, indent=2) + "\n").encode()})


def evaluate_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.task in ("growing", "rd", "manifold"):
        evaluate_saved_command(args, parser)
        return
    try:
        metadata = nca.load_metadata(args.model)
        model = nca.load_model(args.model)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    stored = metadata.get("heldout")
    if stored is None:
        parser.error(f"{args.model} has no held-out MST measurements in its JSON: is it an MST model?")
    task_settings = {key: stored[key] for key in ("canvas", "min_points", "max_points", "margin")}
    chapter_count = args.chapter_count or metadata.get("heldout_chapter_task", {}).get("count", 50)
    if args.full:
        measured = mst.full_metadata(model, task_settings, args.steps, chapter_count=chapter_count)
    else:
        steps = args.steps or stored["steps"]
        measured = mst.heldout_metadata(model, task_settings, steps, chapter_count=chapter_count)
    flags = ["--full"] if args.full else []
    if args.steps or not args.full:
        flags.append(f"--steps {measured['heldout']['steps']}")
    measured["metrics_command"] = (f"python -m helpers evaluate mst {args.model} {' '.join(flags)} "
                                   f"--chapter-count {chapter_count} --write")
    print(json.dumps(measured, indent=1))
    if args.write:
        metadata.update(measured)
        nca.write_atomically({Path(args.model).with_suffix(".json"): (json.dumps(metadata, indent=2) + "\n").encode()})


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        bench.main(argv[1:], prog="python -m helpers bench")
        return
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        train_command(args, parser, "python -m helpers " + shlex.join(argv))
    else:
        evaluate_command(args, parser)
