"""Where the notebooks run: device, quick/full mode, seeds, and the Colab set-up.

Everything a chapter needs to know about its machine is decided here, in one place:

* ``get_device()``   CUDA if present, else Apple's MPS, else the CPU.
* ``is_quick()``     the quick/full switch, read from the ``DSOS_QUICK`` environment variable
                     (``1`` = quick, ``0`` = full). Without it: full on a CUDA machine, quick
                     otherwise. The tests set ``DSOS_QUICK=1``.
* ``pick(quick, full)`` choose a setting by mode, for the configuration cell of a chapter.
* ``seed_everything(seed)`` seeds Python, NumPy and torch from one call.
* ``setup()``        what the set-up cell of every notebook calls: on Colab it installs only
                     the packages Colab lacks; everywhere it prints versions, device and mode.

The repository URL lives in ONE place, ``REPO_URL`` below. Every notebook's set-up cell is the
text ``SETUP_CELL``; after changing the URL run ``python -m helpers.env --write-setup-cells``
to rewrite the set-up cell of every notebook (a test checks they match).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

#: The one place that names the course repository (used by the Colab set-up cell).
REPO_URL = "https://github.com/dsos-course/differentiable-self-organizing-systems"

#: Where the set-up cell clones the repository on Colab.
COLAB_CLONE_DIR = "/content/dsos"

#: The root of the repository (the folder that holds helpers/, data/, notebooks/).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Packages the notebooks import, as (import name, pip name). Colab already has torch, numpy,
#: matplotlib, pillow, tqdm and ipywidgets; ``setup`` installs only those that are missing and
#: never touches torch, numpy or matplotlib (reinstalling them would force a runtime restart).
NOTEBOOK_PACKAGES = [
    ("einops", "einops"),
    ("imageio", "imageio"),
    ("imageio_ffmpeg", "imageio-ffmpeg"),
    ("tqdm", "tqdm"),
    ("ipywidgets", "ipywidgets"),
    ("PIL", "pillow"),
    ("anywidget", "anywidget"),  # chapter 02's mouse canvas
]
NEVER_INSTALL = {"torch", "numpy", "matplotlib", "torchvision"}

SETUP_CELL = f'''\
# Set-up (the same cell in every chapter). On Colab it fetches the course code and data and
# installs only what Colab lacks; elsewhere it only makes sure `helpers` can be imported.
import importlib.util, os, subprocess, sys
REPO_URL = "{REPO_URL}"  # defined in helpers/env.py
if importlib.util.find_spec("helpers") is None:
    if "google.colab" in sys.modules:
        if not os.path.isdir("{COLAB_CLONE_DIR}"):
            print("Fetching the course from", REPO_URL)
            subprocess.run(["git", "clone", "--quiet", "--depth", "1", REPO_URL, "{COLAB_CLONE_DIR}"], check=True)
        sys.path.insert(0, "{COLAB_CLONE_DIR}")
    elif os.path.isdir(os.path.join("..", "helpers")):
        sys.path.insert(0, os.path.abspath(".."))
from helpers import env
runtime = env.setup()'''


# ----------------------------------------------------------------------------------- device

def get_device(prefer: str | None = None) -> torch.device:
    """The device every chapter computes on: CUDA, else Apple MPS, else CPU.

    ``prefer`` (or the environment variable ``DSOS_DEVICE``) forces one, e.g. ``"cpu"``.
    """
    choice = prefer or os.environ.get("DSOS_DEVICE")
    if choice:
        device = torch.device(choice)      # raises for names torch does not know
        if device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device {choice!r} cannot run the course (it computes nothing, or is not supported "
                             "here); use 'cpu', 'cuda' or 'mps', or leave DSOS_DEVICE unset")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} was asked for, but torch sees no CUDA GPU here; "
                             "use 'cpu' or leave DSOS_DEVICE unset")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"device {choice!r} was asked for, but MPS is not available here; "
                             "use 'cpu' or leave DSOS_DEVICE unset")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


# ----------------------------------------------------------------------------- quick / full

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def is_quick() -> bool:
    """True in quick mode (small grids, few iterations), False in full mode.

    Read from ``DSOS_QUICK`` (``1``/``0``); when it is unset, quick unless a CUDA GPU is present.
    """
    raw = os.environ.get("DSOS_QUICK")
    if raw is None or raw.strip() == "":
        return not torch.cuda.is_available()
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"DSOS_QUICK={raw!r} is not understood; use DSOS_QUICK=1 (quick) or DSOS_QUICK=0 (full)")


def mode_name() -> str:
    return "quick" if is_quick() else "full"


def pick(quick, full):
    """Return ``quick`` in quick mode and ``full`` in full mode (for configuration cells)."""
    return quick if is_quick() else full


# ------------------------------------------------------------------------------------ seeds

def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA) at once.

    Returns a ``torch.Generator`` seeded with the same value, for code that prefers an explicit one.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r} ({type(seed).__name__})")
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------ chapter preamble

def start_chapter(seed: int = 0, threads: int | str | None = "auto", verbose: bool = True) -> torch.device:
    """The preamble every chapter runs after its set-up cell, in one call; returns the device.

    * the device, chosen by ``get_device`` (CUDA, else MPS, else CPU; ``DSOS_DEVICE`` overrides);
    * every random generator seeded with ``seed`` (``seed_everything``);
    * ``torch.set_flush_denormal(True)``: tiny values decaying towards zero ("denormals") can make
      CPU arithmetic many times slower, and rounding them to zero changes nothing we measure;
    * CPU threads: ``"auto"`` uses ONE thread on a CPU in quick mode (small grids: coordinating
      several threads costs more than it saves, badly so on a busy machine), torch's choice
      otherwise; an integer sets the count; ``None`` leaves it alone.
    """
    device = get_device()
    seed_everything(seed)
    torch.set_flush_denormal(True)
    if threads == "auto":
        threads = 1 if device.type == "cpu" and is_quick() else None
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, 'auto' or None, got {threads!r}")
        torch.set_num_threads(threads)
    if verbose:
        print(f"device: {describe_device(device)} | mode: {mode_name()} | seed: {seed}")
    return device


# ------------------------------------------------------------------------------ environment

def in_colab() -> bool:
    """True inside Google Colab (its module is imported by the Colab kernel)."""
    return "google.colab" in sys.modules


def data_dir() -> Path:
    """The folder of shipped assets (``data/``); ``DSOS_DATA`` overrides it."""
    override = os.environ.get("DSOS_DATA")
    path = Path(override) if override else REPO_ROOT / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"the data folder {path} does not exist; run the notebook from a clone of "
                                f"the course repository ({REPO_URL}) or set DSOS_DATA to its data/ folder")
    return path


def missing_packages(packages=NOTEBOOK_PACKAGES) -> list[str]:
    """pip names of the packages in ``packages`` that cannot be imported here."""
    return [pip_name for import_name, pip_name in packages if importlib.util.find_spec(import_name) is None]


def install_missing(packages=NOTEBOOK_PACKAGES, runner=subprocess.run) -> list[str]:
    """pip-install the packages that are missing (never torch, numpy or matplotlib); return them."""
    missing = [name for name in missing_packages(packages) if name not in NEVER_INSTALL]
    if missing:
        runner([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)
        importlib.invalidate_caches()
    return missing


def versions() -> dict[str, str]:
    """Versions of Python and of the main libraries in use."""
    found = {"python": platform.python_version()}
    for name in ["torch", "torchvision", "numpy", "einops", "matplotlib", "PIL", "imageio", "ipywidgets"]:
        if importlib.util.find_spec(name) is None:
            found[name] = "not installed"
            continue
        module = importlib.import_module(name)
        found[name] = getattr(module, "__version__", "?")
    return found


def describe_device(device: torch.device | None = None) -> str:
    device = device or get_device()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"


def setup(verbose: bool = True) -> dict:
    """Prepare the runtime for a chapter and say what was done.

    On Colab, installs the few packages it lacks. Everywhere, prints the device and the mode.
    Returns a dict with ``device``, ``quick``, ``colab`` and ``installed``.
    """
    installed = install_missing() if in_colab() else []
    device = get_device()
    info = {"device": device, "quick": is_quick(), "colab": in_colab(), "installed": installed}
    if verbose:
        where = "Colab" if info["colab"] else "local"
        print(f"helpers ready ({where}); device: {describe_device(device)}; mode: {mode_name()} "
              f"(DSOS_QUICK={'1' if info['quick'] else '0'})")
        if info["colab"]:
            print("installed: " + (", ".join(installed) if installed else "nothing (Colab had everything)"))
    return info


# ------------------------------------------------------------------- notebook maintenance

def colab_url(notebook: str) -> str:
    """The Colab address that opens ``notebooks/<notebook>`` from the course repository."""
    owner_repo = REPO_URL.removeprefix("https://github.com/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{notebook}"


def colab_badge(notebook: str) -> str:
    """Markdown for the "Open in Colab" badge of a notebook (first cell of every chapter)."""
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook)})")


def is_setup_cell(source: str) -> bool:
    return source.lstrip().startswith("# Set-up (the same cell in every chapter)")


def write_setup_cells(notebook_dir: Path = REPO_ROOT / "notebooks") -> list[Path]:
    """Rewrite the set-up cell (the second cell) of every notebook with ``SETUP_CELL``."""
    changed = []
    for path in sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb")):
        notebook = json.loads(path.read_text())
        cells = [c for c in notebook["cells"] if c["cell_type"] == "code" and is_setup_cell("".join(c["source"]))]
        if not cells:
            raise ValueError(f"{path.name} has no set-up cell (a code cell starting with the set-up comment)")
        for cell in cells:
            cell["source"] = SETUP_CELL.splitlines(keepends=True)
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        changed.append(path)
    return changed


if __name__ == "__main__":
    if "--write-setup-cells" in sys.argv:
        for written in write_setup_cells():
            print("rewrote the set-up cell of", written.name)
    else:
        setup()
        for name, version in versions().items():
            print(f"{name:>12}: {version}")
