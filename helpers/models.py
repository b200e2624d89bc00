"""Saving and loading every rule of the course, and the models shipped in ``data/models/``.

A saved model is a pair: NAME.pt (the ``state_dict``, tensors only, loaded with ``weights_only=True``)
and NAME.json (the architecture, its config and the metadata: the command, the settings, the
measurements). The JSON records a SHA-256 of the exact .pt bytes together with the config
(``pair_hash``), so a pair mixed from two saves, or a config edited by hand, is caught on load.
``ARCHITECTURES`` maps the name a JSON records to its class::

    path = models.save(model, "outputs/mine.pt", {"note": "..."})
    model = models.load(path)
    model, metadata = models.shipped("growing_lizard_regenerating")     # data/models/NAME.pt and its JSON
"""
from __future__ import annotations

import datetime
import glob
import hashlib
import io
import json
import os
import pickle
import shlex
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import env
from .growing_nca import GrowingNCA
from .manifold_nca import ManifoldNCA
from .nca import NCA, count_parameters
from .reaction_diffusion import ReactionDiffusionNCA

#: The model classes a saved JSON may name (its ``architecture``).
ARCHITECTURES = {"NCA": NCA, "GrowingNCA": GrowingNCA, "ReactionDiffusionNCA": ReactionDiffusionNCA,
                 "ManifoldNCA": ManifoldNCA}


#: The format of a saved pair's JSON. 2: ``weights_sha256`` covers the weights AND the config and is
#: required. A JSON without ``format_version`` is format 1 (saved before 2026-12): its hash, where it has
#: one, covers the weights only; it loads with a warning naming the file and ``upgrade_format``.
FORMAT_VERSION = 2
RESERVED_KEYS = ("architecture", "config", "parameters", "format_version", "weights_sha256")   # written by save
CHECKPOINT_KEYS = ("model", "model_state_dict", "state_dict", "optimizer", "optimizer_state_dict", "epoch")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pair_hash(weights: bytes, config: dict) -> str:
    """What a format-2 JSON records as ``weights_sha256``: the SHA-256 of the .pt's bytes followed by the
    canonical config (``json.dumps(config, sort_keys=True)``), so that neither can be changed alone (an
    edited ``update_rate`` or ``fire_rate`` would otherwise load another rule with the same weights)."""
    return sha256(weights + b"\n" + json.dumps(config, sort_keys=True).encode())


def write_atomically(files: dict[Path, bytes]) -> None:
    """Write every file to a temporary file in its folder, then ``os.replace`` each into place, in order.

    A failure before the replaces leaves the old files untouched and no temporary files behind. Two
    files cannot be replaced in one step: once the first is replaced, the other temporaries ARE the new
    files, so nothing stops here deletes them (Ctrl-C, a full disk, or a process killed in between
    leaves them beside their names as ``.NAME.*.tmp``). ``load`` finishes such a save of a model pair:
    it finds the new weights by the hash the new JSON records (``finish_interrupted_save``)."""
    temporary = {}
    try:
        for path, data in files.items():
            handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temporary[path] = Path(name)
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())    # the bytes are on disk before the name points at them
    except BaseException:
        for name in temporary.values():
            name.unlink(missing_ok=True)   # nothing was replaced: the old files stand as they were
        raise
    replaced = 0
    try:
        for path, name in temporary.items():
            os.replace(name, path)
            replaced += 1
    except OSError as error:
        if replaced == 0:                  # nothing changed yet: as a failure before the replaces
            for name in temporary.values():
                name.unlink(missing_ok=True)
            raise
        waiting = ", ".join(f"{path} is still in {name}" for path, name in list(temporary.items())[replaced:])
        raise OSError(f"the write stopped between its files ({error}): {waiting}; move each into place "
                      f"(mv), or write them again") from error


def pending_files(path: Path) -> list[Path]:
    """The temporaries that ``write_atomically`` left beside ``path`` when it was stopped between its replaces."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def finish_interrupted_save(path: Path, belongs: Callable[[bytes], bool]) -> bytes | None:
    """A save of ``path``'s pair stopped between its two replaces left the new JSON beside the old
    weights, and the new weights in a temporary beside them: find the temporary whose bytes
    ``belongs`` to the JSON, put it in place (when the folder is writable) and return its bytes. None
    when there is none."""
    for candidate in pending_files(path):
        data = candidate.read_bytes()
        if belongs(data):
            try:
                os.replace(candidate, path)
                done = f"{candidate.name} is now {path.name}"
            except OSError as error:
                done = f"loaded from {candidate.name} (could not move it into place: {error})"
            warnings.warn(f"{path.name}: finished a save that was stopped between its two files: {done}",
                          stacklevel=3)
            return data
    return None


def save(model: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Save ``model.state_dict()`` to ``path`` (.pt) and its config plus ``metadata`` to ``path`` .json.

    Everything is checked before anything is written; then both files are replaced atomically,
    so an interrupted save leaves the previous pair (or a pair that ``load`` refuses)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"save takes the model (an nn.Module) first, then the path; got a {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".pt":         # NAME.json is the other half of the pair: "model.json" would be both
        raise ValueError(f"save writes the weights to NAME.pt and the JSON beside it: name the .pt file, got "
                         f"{str(path)!r}; e.g. outputs/my_model.pt")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    reserved = sorted(set(metadata) & set(RESERVED_KEYS))
    if reserved:
        raise ValueError(f"metadata may not set {reserved}: save writes them from the model")
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    bad = [key for key, value in state_dict.items() if value.is_floating_point() and not value.isfinite().all()]
    if bad:
        raise ValueError(f"refusing to save {path.name}: non-finite weights (NaN or inf) in {bad}")
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    weights = buffer.getvalue()
    try:
        config = model.config()
        info = {"architecture": getattr(model, "architecture", "NCA"), "config": config,
                "parameters": count_parameters(model), "saved": datetime.date.today().isoformat(), **metadata,
                "format_version": FORMAT_VERSION, "weights_sha256": pair_hash(weights, config)}
        text = json.dumps(info, indent=2) + "\n"
    except (TypeError, ValueError) as error:
        raise TypeError(f"the metadata for {path.name} must be JSON-serializable ({error}); nothing was written") \
            from error
    path.parent.mkdir(parents=True, exist_ok=True)
    # the JSON first: a save stopped between the two replaces leaves a new JSON whose hash the old .pt fails
    # and the new .pt beside it in a temporary, which load finds by that hash and puts in place
    write_atomically({path.with_suffix(".json"): text.encode(), path: weights})
    return path


def copy(source: str | Path, destination: str | Path, overwrite: bool = False) -> Path:
    """Copy a saved model pair (``NAME.pt`` and ``NAME.json``) to ``destination`` (a ``.pt`` name), e.g. a
    finished background run to its place in data/models. The pair is loaded first (a broken or partial one
    is refused), an existing model at ``destination`` is kept unless ``overwrite``, and the JSON's
    recorded ``command`` names the new file after ``--out`` (and a ``--checkpoint`` beside it, under
    outputs/), so that it still says how to make it (where a run kept its files does not change what it made)."""
    source, destination = Path(source), Path(destination)
    if destination.suffix != ".pt":
        raise ValueError(f"the destination must name the weights file, ending in .pt, got {str(destination)!r}")
    if source.resolve() == destination.resolve():
        raise ValueError(f"{source} and {destination} are the same file")
    load(source)                                        # refuses a broken pair, naming the problem
    info = load_metadata(source)
    if info.get("partial"):
        raise ValueError(f"{source} is the partial model of a stopped run; finish it with --resume first")
    if not overwrite and (destination.exists() or destination.with_suffix(".json").exists()):
        raise FileExistsError(f"{destination} already exists; choose another name, or pass overwrite=True "
                              "(--overwrite) to replace it")
    command = info.get("command")
    if isinstance(command, str):
        arguments = shlex.split(command)
        renamed = {"--out": str(destination), "--checkpoint": f"outputs/{destination.stem}_ckpt.pt"}
        for flag, name in renamed.items():
            if flag in arguments[:-1]:
                arguments[arguments.index(flag) + 1] = name
        info["command"] = shlex.join(arguments)
    destination.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(info, indent=2) + "\n"
    write_atomically({destination.with_suffix(".json"): text.encode(), destination: source.read_bytes()})
    return destination


def load_metadata(path: str | Path) -> dict:
    path = Path(path).with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"no metadata file {path}; a model is saved as NAME.pt with NAME.json beside it")
    try:
        info = json.loads(path.read_text())
    except ValueError as error:    # json.JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path.name} is not valid JSON ({error}); save models with helpers.models.save") \
            from error
    if not isinstance(info, dict):
        raise ValueError(f"{path.name} holds a JSON {type(info).__name__}, not an object; a model's JSON is the "
                         f"object ({{'architecture', 'config', ...}}) that helpers.models.save writes")
    return info


def check_weights_file(name: str, state_dict) -> None:
    """One clear error for a .pt that is not a state_dict of tensors: say what it holds and what to do."""
    how = "save model.state_dict() with helpers.models.save"
    if isinstance(state_dict, torch.Tensor):
        raise ValueError(f"{name} holds a single tensor, not a model's state_dict; {how}")
    if not isinstance(state_dict, dict):
        raise ValueError(f"{name} holds a {type(state_dict).__name__}, not a model's state_dict; {how}")
    found = sorted(str(key) for key in state_dict if key in CHECKPOINT_KEYS)
    if found:
        raise ValueError(f"{name} looks like a training checkpoint (it has keys {found}), not a model's weights: "
                         f"load its model's state_dict into an NCA, then {how}")
    others = sorted(str(key) for key, value in state_dict.items() if not isinstance(value, torch.Tensor))
    if others:
        raise ValueError(f"{name} is a dict whose values under {others} are not tensors, not a state_dict; {how}")


def architecture(name, json_name: str = "the JSON") -> type:
    """The class of a saved model's ``architecture`` entry."""
    if name not in ARCHITECTURES:
        raise ValueError(f"{json_name} names the architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def verified_weights(path: Path, info: dict, weights: bytes) -> bytes:
    """The weights of ``path`` once its JSON's hash vouches for them (and for the config, format 2), or those
    of a save stopped between its two files (``finish_interrupted_save``); else a ValueError that says why.
    A format-1 JSON (no ``format_version``) loads with a warning: its config is not covered by a hash."""
    json_name = path.with_suffix(".json").name
    version, expected = info.get("format_version", 1), info.get("weights_sha256")
    upgrade = f"if you trust both files, protect them with helpers.models.upgrade_format('{path}')"
    if version == FORMAT_VERSION and not isinstance(expected, str):
        raise ValueError(f"{json_name} records no weights_sha256, which its format {FORMAT_VERSION} requires: nothing "
                         f"shows that {path.name} and this config were saved together, so the pair is refused. Save "
                         "the model again with helpers.models.save")
    if version == FORMAT_VERSION:
        def belongs(data: bytes) -> bool:
            return pair_hash(data, info["config"]) == expected
    elif version == 1 and expected is None:
        warnings.warn(f"{json_name} predates weight hashes (format 1, no weights_sha256): nothing shows that "
                      f"{path.name} is the pair saved with it; {upgrade}", stacklevel=3)
        return weights
    elif version == 1:
        warnings.warn(f"{json_name} is in format 1: its hash covers the weights but not the config; {upgrade}",
                      stacklevel=3)

        def belongs(data: bytes) -> bool:
            return sha256(data) == expected
    else:
        raise ValueError(f"{json_name} has format_version {version!r}; these helpers read formats 1 and "
                         f"{FORMAT_VERSION}: update the course's helpers")
    if belongs(weights):
        return weights
    recovered = finish_interrupted_save(path, belongs)
    if recovered is None:
        edited = " or its config was edited after saving" if version == FORMAT_VERSION else ""
        raise ValueError(f"{path.name} does not match {json_name}: the pair is from two different saves (a save "
                         f"interrupted between its two files, or one file replaced alone){edited}; save the model "
                         "again")
    return recovered


def upgrade_format(path: str | Path) -> Path:
    """Rewrite a format-1 pair's JSON in today's format, for a pair you trust: ``format_version`` and a
    ``weights_sha256`` over the weights and the config; nothing else in it changes. The pair must load
    (a format-1 hash, where there is one, must still match the weights). A format-2 pair is left as it is."""
    path = Path(path)
    info = load_metadata(path)
    if info.get("format_version", 1) == FORMAT_VERSION:
        return path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # the format-1 warning this call answers
        load(path)
    info.pop("weights_sha256", None)
    info.update(format_version=FORMAT_VERSION, weights_sha256=pair_hash(path.read_bytes(), info.get("config", {})))
    write_atomically({path.with_suffix(".json"): (json.dumps(info, indent=2) + "\n").encode()})
    return path


def load(path: str | Path, device=None) -> nn.Module:
    """Load a model saved by ``save`` (weights only, never pickled code).

    Refused with an error that says why: a missing file; a .pt and .json from two different saves, or
    a config edited after saving (``verified_weights``); a file that is not a state_dict (a list, a
    tensor, a training checkpoint); weights of another architecture; NaN or inf weights; perception
    filters that contradict the config.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a model file's path (NAME.pt), got {path!r} ({type(path).__name__}); for a "
                        "shipped model use helpers.models.shipped(NAME)")
    path = Path(path)
    if not path.is_file():
        folder = path.parent
        available = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
        raise FileNotFoundError(f"no model file {path}; available in {folder}: {', '.join(available) or 'none'}")
    info = load_metadata(path)
    json_name = path.with_suffix(".json").name
    config = info.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{json_name}: 'config' must be an object of NCA options, got {type(config).__name__}")
    weights = verified_weights(path, info, path.read_bytes())     # hashed and loaded from the same bytes
    model = architecture(info.get("architecture", "NCA"), json_name)(**config)    # each checks its options
    try:
        state_dict = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:
        raise ValueError(f"{path.name} cannot be read as saved weights ({error}); it is truncated, corrupt, or "
                         f"holds more than tensors; save models with helpers.models.save") from error
    check_weights_file(path.name, state_dict)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state_dict.items()}
    if expected != found:
        raise ValueError(f"{path.name} does not hold this architecture's weights: expected {expected}, found {found}")
    for key, value in state_dict.items():
        if not value.is_floating_point():
            raise ValueError(f"{path.name}: {key} holds {value.dtype} values, expected floating point weights")
        if not value.isfinite().all():
            raise ValueError(f"{path.name}: {key} holds non-finite values (NaN or inf); the training that saved it "
                             f"diverged: retrain, or load an earlier checkpoint")
    for name, fixed in model.named_buffers():      # fixed by the config (filters, diffusion rates): must agree
        if torch.equal(state_dict[name].to(fixed.dtype), fixed):
            continue
        if name == "filters":
            kind = f"{model.filter_kind!r} " if hasattr(model, "filter_kind") else ""
            raise ValueError(f"{path.name}: its perception filters are not the {kind}filters that "
                             f"{json_name}'s config names; the two files disagree")
        raise ValueError(f"{path.name}: its {name!r} is not what {json_name}'s config makes; the two files disagree")
    model.load_state_dict(state_dict)
    return model.to(env.checked_device(device)) if device is not None else model


def shipped_dir() -> Path:
    """``data/models``: the models the course ships, each made by the command its JSON records."""
    return env.data_dir() / "models"


def shipped(name: str, device=None) -> tuple[nn.Module, dict]:
    """A shipped model and its metadata: ``name`` is its file name in ``data/models`` without ``.pt``
    (a sub-folder may lead, e.g. ``loss_comparison/mst_symmetric_seed0``). The model is in eval mode."""
    path = shipped_dir() / f"{name}.pt"
    return load(path, device).eval(), load_metadata(path)
