"""Where the notebooks run: device, quick/full mode, seeds, and the Colab set-up.

Everything a chapter needs to know about its machine is decided here, in one place:

* ``get_device()``   CUDA if present, else Apple's MPS, else the CPU.
* ``is_quick()``     the quick/full switch, read from the ``DSOS_QUICK`` environment variable
                     (``1`` = quick, ``0`` = full). Without it: quick (``GPU_DEFAULT_MODE`` on a
                     CUDA machine). The tests set ``DSOS_QUICK=1``.
* ``is_rehearsal()`` the rehearsal of full mode, ``DSOS_REHEARSAL=1`` (with ``DSOS_QUICK=0``): full
                     sizes, lengths and counts, trainings of a few iterations, then the shipped
                     models stand in. ``tests/test_rehearsal.py`` runs every notebook so.
* ``pick(quick, full)`` choose a setting by mode, for the configuration cell of a chapter;
  ``iterations(quick, full)`` a training's iteration count (the one thing a rehearsal shortens);
  ``trained_or_shipped(trained, load_shipped)`` the model a chapter measures after its training;
  ``stand_in(trained, load_shipped)`` the same where quick mode judges its own short training.
* ``seed_everything(seed)`` seeds Python, NumPy and torch from one call.
* ``setup()``        what the set-up cell of every notebook calls: on Colab it installs only
                     the packages Colab lacks; everywhere it prints versions, device and mode.

The repository URL and the course version live in ONE place, ``REPO_URL`` and ``COURSE_VERSION``
below. Every notebook's set-up cell is the text ``SETUP_CELL``; after changing either run
``python -m helpers.env --write-setup-cells`` to rewrite the set-up cell of every notebook (a test
checks they match). On Colab the cell fetches the git tag ``COURSE_REF`` (``v`` + the version) of the
repository; ``DSOS_REPO_URL`` and ``DSOS_COURSE_REF`` override both without editing any code.
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

#: The one place that names the course repository (used by the Colab set-up cell and the badges).
#: A learner overrides it without editing code: ``%env DSOS_REPO_URL=...`` above the set-up cell.
REPO_URL = "https://github.com/dsos-course/differentiable-self-organizing-systems"

#: The course version the notebooks of this commit belong to (also pyproject.toml's version; a test
#: keeps the two equal). On Colab the set-up cell fetches the git tag ``COURSE_REF`` of REPO_URL, so
#: a notebook runs with the helpers and data of its own release. Releasing: bump both, run
#: ``python -m helpers.env --write-setup-cells``, commit, then ``git tag v<version>`` and push the tag.
#: Until that tag is on the remote the cell fetches the newest commit instead and says so.
COURSE_VERSION = "0.1.0"
COURSE_REF = f"v{COURSE_VERSION}"

#: Where the set-up cell keeps the repository on Colab.
COLAB_CLONE_DIR = "/content/dsos"

#: The environment variables that redirect the Colab set-up cell (documented in README).
REPO_URL_ENV = "DSOS_REPO_URL"
COURSE_REF_ENV = "DSOS_COURSE_REF"

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

#: The set-up cell, generated (``write_setup_cells``) into every notebook. It must run before
#: ``helpers`` can be imported, so it is plain Python with nothing but the standard library and git.
#: On Colab, ``fetch_course`` makes ``COLAB_CLONE_DIR`` hold exactly ``COURSE_REF`` of ``REPO_URL``:
#: a fresh clone, a stale copy refreshed (fetch + checkout), or, when the remote cannot be reached,
#: the copy already there with a warning; with no copy at all it stops with what failed and what to do.
SETUP_CELL = f'''\
# Set-up (the same cell in every chapter). On Colab it fetches the course (code and data) at the
# version this notebook belongs to and installs only what Colab lacks; elsewhere it only makes sure
# `helpers` can be imported. To fetch a fork or mirror instead, run first, in a cell above this one:
#   %env {REPO_URL_ENV}=https://github.com/OWNER/REPO      (and %env {COURSE_REF_ENV}=main for its newest commit)
import importlib.util, os, subprocess, sys
REPO_URL = os.environ.get("{REPO_URL_ENV}") or "{REPO_URL}"
COURSE_REF = os.environ.get("{COURSE_REF_ENV}") or "{COURSE_REF}"  # this notebook's course version (a git tag)
CLONE_DIR = "{COLAB_CLONE_DIR}"


def fetch_course(url=REPO_URL, ref=COURSE_REF, folder=CLONE_DIR):
    """Make `folder` hold version `ref` of the course at `url`: clone it, or refresh a stale copy."""
    def git(*args):
        return subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True,
                              env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}})
    os.makedirs(folder, exist_ok=True)
    if not os.path.isdir(os.path.join(folder, ".git")):
        git("init", "--quiet")
    before = git("rev-parse", "--verify", "--quiet", "HEAD").stdout.strip()
    got = git("fetch", "--quiet", "--depth", "1", url, ref)
    if got.returncode != 0 and git("fetch", "--quiet", "--depth", "1", url, "HEAD").returncode == 0:
        print(f"Note: {{url}} has no version {{ref!r}} (tag not pushed?); using its newest commit (not pinned).")
        ref = "newest"
    elif got.returncode != 0 and before:
        print(f"Warning: could not fetch {{url}} ({{got.stderr.strip()}}); using the copy already in {{folder}} "
              f"(commit {{before[:7]}}), which may not be version {{ref!r}}.")
        return before
    elif got.returncode != 0:
        raise RuntimeError(
            f"The set-up cell could not fetch the course from {{url}} (version {{ref!r}}).\\n"
            f"git said: {{got.stderr.strip()}}\\n"
            "What to do: check that the address opens in a browser (git asks for a user name when a "
            "repository does not exist or is private); to use a fork or mirror, run "
            "%env {REPO_URL_ENV}=https://github.com/OWNER/REPO in a cell above, then run this cell again.") from None
    after = git("rev-parse", "FETCH_HEAD").stdout.strip()
    if after == before:
        print(f"The course in {{folder}} is at {{ref}} (commit {{after[:7]}}) from {{url}}")
        return after
    moved = git("checkout", "--quiet", "--detach", after)
    if moved.returncode != 0:
        print(f"Warning: could not update {{folder}} to {{ref}} ({{moved.stderr.strip()}}); it stays at commit "
              f"{{before[:7]}}. To discard local changes there: !git -C {{folder}} checkout --force {{after[:7]}}")
        return before
    print(f"Fetched the course {{ref}} (commit {{after[:7]}}) from {{url}} into {{folder}}"
          + (f", replacing commit {{before[:7]}}" if before else ""))
    return after


if importlib.util.find_spec("helpers") is None:
    if "google.colab" in sys.modules:
        fetch_course()
        sys.path.insert(0, CLONE_DIR)
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
        try:
            device = torch.device(choice)
        except (RuntimeError, TypeError):   # a name torch does not know: its own message lists two dozen back ends
            device = None
        if device is None or device.type not in ("cpu", "cuda", "mps"):
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


def checked_device(device):
    """A device given by name (``"cpu"``, ``"cuda"``, ``"mps"``) checked by ``get_device``, so that a name
    torch does not know, or a GPU this machine lacks, is a ValueError that says what to use; a
    ``torch.device`` or None is passed on as it is."""
    return get_device(device) if isinstance(device, str) else device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


# ----------------------------------------------------------------------------- quick / full

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

#: The rehearsal switch (read by ``is_rehearsal`` only) and how many iterations a training runs in it.
REHEARSAL_ENV = "DSOS_REHEARSAL"
REHEARSAL_ITERATIONS = 3


#: What runs when ``DSOS_QUICK`` is unset on a machine with a CUDA GPU. "quick": a chapter finishes
#: top to bottom in minutes (about 10 to 30 s each on a 2-core CPU, measured under pytest), so a
#: learner on a Colab GPU runtime gets through a tutorial; the reference training is one switch away
#: (``DSOS_QUICK=0``). Full mode's GPU times are NOT measured yet (no GPU was available): once
#: ``python -m helpers.env --time-notebooks`` on a GPU shows that every chapter's full mode fits a
#: tutorial, this may become "full". Without a GPU the default is always quick.
GPU_DEFAULT_MODE = "quick"


def _flag(name: str, meaning: str, otherwise: str) -> bool | None:
    """The environment variable ``name`` read as a switch: True, False, or None when it is unset."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not understood; use {name}=1 ({meaning}) or {name}=0 ({otherwise})")


def is_rehearsal() -> bool:
    """True in a rehearsal of full mode (``DSOS_REHEARSAL=1``, with ``DSOS_QUICK=0`` or unset).

    A rehearsal takes every full-mode code path (full grids, evaluation lengths and counts) but each
    training runs only ``REHEARSAL_ITERATIONS`` iterations (``iterations``), and then the shipped model
    stands in for the trained one (``trained_or_shipped``), so every later cell runs its full-mode
    asserts on a model that really was trained. ``tests/test_rehearsal.py`` runs every notebook so.
    """
    rehearsal = _flag(REHEARSAL_ENV, "a rehearsal of full mode", "no rehearsal")
    if rehearsal and _flag("DSOS_QUICK", "quick", "full") is True:
        raise ValueError(f"{REHEARSAL_ENV}=1 rehearses full mode, but DSOS_QUICK=1 asks for quick mode; "
                         f"set DSOS_QUICK=0 (or unset it) for a rehearsal, or unset {REHEARSAL_ENV}")
    return bool(rehearsal)


def is_quick() -> bool:
    """True in quick mode (small grids, few iterations), False in full mode (and in its rehearsal).

    Read from ``DSOS_QUICK`` (``1``/``0``); when it is unset: full in a rehearsal
    (``DSOS_REHEARSAL=1``), else quick without a CUDA GPU, and ``GPU_DEFAULT_MODE`` (quick, until full
    mode's GPU time is measured) with one.
    """
    quick = _flag("DSOS_QUICK", "quick", "full")
    rehearsal = is_rehearsal()           # a clear error if DSOS_QUICK=1 contradicts it
    if quick is not None:
        return quick
    if rehearsal:
        return False
    return not torch.cuda.is_available() or GPU_DEFAULT_MODE != "full"


def mode_name() -> str:
    """"quick", "full", or "full (rehearsal)"."""
    if is_quick():
        return "quick"
    return "full (rehearsal)" if is_rehearsal() else "full"


def pick(quick, full):
    """Return ``quick`` in quick mode and ``full`` in full mode (for configuration cells).

    A rehearsal is full mode here: it takes the full sizes, lengths and counts. Training iteration
    counts go through ``iterations`` instead, the one setting a rehearsal shortens.
    """
    return quick if is_quick() else full


def iterations(quick: int, full: int) -> int:
    """A training's iteration count: ``quick`` in quick mode, ``full`` in full mode, and in a rehearsal
    at most ``REHEARSAL_ITERATIONS`` (the loop runs at full size, only briefly)."""
    for name, count in (("quick", quick), ("full", full)):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"iterations({name}=...) must be a positive integer, got {count!r}")
    if is_quick():
        return int(quick)
    return min(int(full), REHEARSAL_ITERATIONS) if is_rehearsal() else int(full)


def uses_shipped_models() -> bool:
    """True where the chapter's claims are measured on the shipped models: quick mode and a rehearsal.
    In full mode they are measured on the models this run trained."""
    return is_quick() or is_rehearsal()


def trained_or_shipped(trained, load_shipped, what: str = "the shipped model"):
    """The model the rest of a chapter measures, and a line saying which it is.

    Full mode: ``trained`` (this run's training). Quick mode and a rehearsal: ``load_shipped()`` (called
    only then), because their trainings were short: quick mode's only shows the loop running, a
    rehearsal's only checks that full mode's training starts.
    """
    if not uses_shipped_models():
        print("full mode: from here on the chapter measures the model trained above")
        return trained
    shipped = load_shipped()
    why = (f"rehearsal of full mode: the training above ran only {REHEARSAL_ITERATIONS} iterations"
           if is_rehearsal() else "quick mode: the short training above only shows the loop working")
    print(f"{why}; from here on the chapter measures {what}")
    return shipped


def stand_in(trained, load_shipped, what: str = "the shipped model"):
    """``trained``, except in a rehearsal, where its training was cut short and ``load_shipped()`` stands
    in (saying so). For a cell that judges its own training in quick mode and full mode alike."""
    if not is_rehearsal():
        return trained
    print(f"rehearsal of full mode: the training above ran only {REHEARSAL_ITERATIONS} iterations; "
          f"{what} stands in for it")
    return load_shipped()


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
    flush_denormals()
    if threads == "auto":
        threads = 1 if device.type == "cpu" and is_quick() else None
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, 'auto' or None, got {threads!r}")
        torch.set_num_threads(threads)
    if verbose:
        print(f"device: {describe_device(device)} | mode: {mode_name()} | seed: {seed}")
    return device


def flush_denormals() -> bool:
    """``torch.set_flush_denormal(True)``, after NumPy has read its float limits; returns torch's answer.

    With flushing on, the CPU treats subnormal numbers as zero, and NumPy (up to 2.3 at least, e.g.
    Colab's 2.1) computes ``np.finfo`` of a float type the first time it is asked, finds its smallest
    subnormal "equal" to zero and warns "The value of the smallest subnormal for <class
    'numpy.float32'> type is zero." twice per type. Reading ``finfo`` of every float type first fills
    NumPy's cache with the true values, so later calls (matplotlib, torch, our code) stay silent.
    """
    for dtype in (np.float16, np.float32, np.float64, np.longdouble):
        np.finfo(dtype)
    return torch.set_flush_denormal(True)


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
        print(mode_advice(device, info["colab"]))
    return info


def mode_advice(device: torch.device, colab: bool) -> str:
    """One line on what the current mode does and how to get the other (printed by ``setup``)."""
    chosen = os.environ.get("DSOS_QUICK", "").strip() != ""
    if is_rehearsal():
        return (f"rehearsal of full mode: full sizes and measurements, trainings of {REHEARSAL_ITERATIONS} "
                "iterations, then the shipped models stand in. Unset DSOS_REHEARSAL for the real training.")
    if not is_quick():
        return ("full mode: the reference trainings (thousands of iterations per chapter); their GPU time is "
                "not measured yet. For a short run set DSOS_QUICK=1 before the set-up cell.")
    line = ("quick mode: small grids and a few dozen iterations, then the shipped pretrained models show the "
            "real results. For the reference trainings set DSOS_QUICK=0 before the set-up cell")
    if device.type == "cuda" and not chosen:
        line += " (quick is the default on a GPU too: full mode's GPU time is not measured yet)"
    elif device.type == "cpu" and colab:
        line += " after switching to a GPU (Runtime > Change runtime type > T4 GPU)"
    return line + "."


# ------------------------------------------------------------------- notebook maintenance

def colab_url(notebook: str) -> str:
    """The Colab address that opens ``notebooks/<notebook>`` from the course repository."""
    owner_repo = REPO_URL.removeprefix("https://github.com/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{notebook}"


def binder_url() -> str:
    """The Binder address that builds the course repository (binder/) and opens JupyterLab on notebooks/."""
    owner_repo = REPO_URL.removeprefix("https://github.com/").removesuffix(".git")
    return f"https://mybinder.org/v2/gh/{owner_repo}/main?urlpath=lab/tree/notebooks"


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


def time_notebooks(paths, quick: bool, timeout: float = 3600.0) -> list[tuple[str, float]]:
    """Run each notebook top to bottom in a fresh kernel (quick or full mode); return (name, seconds)
    for those that ran through. One that fails is reported (its cell and error) and left out.

    The measurement behind README's chapter times: ``python -m helpers.env --time-notebooks [--full]``.
    """
    import time

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    results = []
    saved = {name: os.environ.get(name) for name in ("DSOS_QUICK", REHEARSAL_ENV)}
    os.environ["DSOS_QUICK"] = "1" if quick else "0"        # the kernel inherits this process's environment
    os.environ.pop(REHEARSAL_ENV, None)                      # a measurement of the mode itself, never a rehearsal
    try:
        for path in map(Path, paths):
            notebook = nbformat.read(path, as_version=4)
            client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": str(path.parent)}})
            start = time.perf_counter()
            try:
                client.execute()
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
                # one notebook that fails, hangs past ``timeout`` or kills its kernel must not cost the others' times
                print(f"{path.name}: FAILED, not timed: {type(error).__name__}: "
                      f"{(str(error).strip().splitlines() or [''])[-1]}", flush=True)
                continue
            results.append((path.name, time.perf_counter() - start))
            print(f"{path.name}: {results[-1][1]:.0f} s", flush=True)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return results


# --------------------------------------------------------------------- the time budget

#: Where ``python -m helpers.env --time-notebooks --write`` keeps the measured quick-mode times.
NOTEBOOK_TIMES_FILE = REPO_ROOT / "data" / "notebook_times.json"
READING_WORDS_PER_MINUTE = 200
MINUTES_PER_EXERCISE = 5           # a guess for planning, stated as one: try, check, read the hint, retry
SESSION_MINUTES = 180
BREAK_MINUTES = 10


def notebook_paths(notebook_dir: Path = REPO_ROOT / "notebooks") -> list[Path]:
    """Every notebook of the course, lessons and appendices, in chapter order."""
    return sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))


def _cells(path: Path, kind: str) -> list[str]:
    notebook = json.loads(Path(path).read_text())
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == kind]


def reading_minutes(path: Path, words_per_minute: int = READING_WORDS_PER_MINUTE) -> float:
    """Minutes to read a notebook's markdown cells at ``words_per_minute`` (code and equations' words count too)."""
    words = sum(len(text.split()) for text in _cells(path, "markdown"))
    return words / words_per_minute


def exercise_ids(path: Path) -> list[str]:
    """The exercises a notebook checks (``exercises.check("ID", ...)``), each once, in order."""
    import re

    found = re.findall(r'exercises\.check\(\s*["\']([^"\']+)["\']', "\n".join(_cells(path, "code")))
    return list(dict.fromkeys(found))


def notebook_title(path: Path) -> str:
    """The title of a notebook: its first markdown heading, without the chapter number."""
    for text in _cells(path, "markdown"):
        for line in text.splitlines():
            if line.startswith("# "):
                return line[2:].split("·", 1)[-1].strip()
    raise ValueError(f"{Path(path).name} has no title (a markdown line starting with '# ')")


def stored_notebook_times(path: Path = NOTEBOOK_TIMES_FILE) -> dict:
    """The measured quick-mode times (``--time-notebooks --write``); empty where none are stored."""
    return json.loads(Path(path).read_text()) if Path(path).is_file() else {"seconds": {}}


def chapter_map(notebook_dir: Path = REPO_ROOT / "notebooks", times: dict | None = None) -> list[dict]:
    """One row per notebook present: number, file, lesson or appendix, title, reading minutes, exercises,
    and the measured quick-mode seconds (None where not measured yet)."""
    seconds = (times if times is not None else stored_notebook_times())["seconds"]
    return [{"number": path.name[:2], "file": path.name, "title": notebook_title(path),
             "kind": "appendix" if path.stem.endswith("_appendix") else "lesson",
             "reading_minutes": reading_minutes(path), "exercises": len(exercise_ids(path)),
             "quick_seconds": seconds.get(path.name)} for path in notebook_paths(notebook_dir)]


def chapter_map_markdown(rows: list[dict] | None = None) -> str:
    """The chapter map as a markdown table (chapter 00 shows it; README's table has the same numbers)."""
    rows = chapter_map() if rows is None else rows
    lines = ["| # | notebook | what it is | reading | quick mode, 2-core CPU | exercises |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        run = "not measured" if row["quick_seconds"] is None else f"{row['quick_seconds']:.0f} s"
        title = row["title"] + (" (appendix)" if row["kind"] == "appendix" else "")
        lines.append(f"| {row['number']} | `{row['file']}` | {title} | {row['reading_minutes']:.0f} min | {run} | "
                     f"{row['exercises'] or '-'} |")
    return "\n".join(lines)


def session_plan(rows: list[dict] | None = None, total: int = SESSION_MINUTES, break_every: int = 60) -> list[str]:
    """A live session of ``total`` minutes through the lessons, in order: each lesson's reading time, its
    quick-mode run time and ``MINUTES_PER_EXERCISE`` per exercise, a ``BREAK_MINUTES`` break after about
    every ``break_every`` minutes; what does not fit is left for later (appendices always are)."""
    rows = chapter_map() if rows is None else rows
    plan, clock, since_break = [], 0.0, 0.0
    for row in (row for row in rows if row["kind"] == "lesson"):
        minutes = (row["reading_minutes"] + (row["quick_seconds"] or 0) / 60
                   + MINUTES_PER_EXERCISE * row["exercises"])
        if since_break + minutes > break_every and plan and clock + BREAK_MINUTES + minutes <= total:
            plan.append(f"{clock:5.0f} min  break ({BREAK_MINUTES} min)")
            clock, since_break = clock + BREAK_MINUTES, 0.0
        if clock + minutes > total:
            plan.append(f"{clock:5.0f} min  end; for later: {row['file']} and the lessons after it, "
                        "and the appendices")
            return plan
        running, practice = (row["quick_seconds"] or 0) / 60, MINUTES_PER_EXERCISE * row["exercises"]
        plan.append(f"{clock:5.0f} min  {row['file']} ({minutes:.0f} min: reading {row['reading_minutes']:.0f}, "
                    f"running {running:.1f}, exercises {practice})")
        clock, since_break = clock + minutes, since_break + minutes
    plan.append(f"{clock:5.0f} min  end; for later: the appendices")
    return plan


def write_notebook_times(results: list[tuple[str, float]], path: Path = NOTEBOOK_TIMES_FILE) -> Path:
    """Store measured quick-mode times (merged with those stored for other notebooks), with the machine."""
    import datetime

    stored = stored_notebook_times(path)
    stored["seconds"] = {**stored.get("seconds", {}), **{name: round(seconds, 1) for name, seconds in results}}
    stored.update(mode="quick", machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, {describe_device()}",
                  measured=datetime.date.today().isoformat(),
                  command="python -m helpers.env --time-notebooks --write",
                  note="one fresh kernel per notebook, run one after the other on a shared machine: "
                       "other work ran beside it, so read the times as upper bounds")
    Path(path).write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    return Path(path)


if __name__ == "__main__":
    if "--write-setup-cells" in sys.argv:
        for written in write_setup_cells():
            print("rewrote the set-up cell of", written.name)
    elif "--time-notebooks" in sys.argv:
        full = "--full" in sys.argv
        chosen = [arg for arg in sys.argv[1:] if arg.endswith(".ipynb")]
        paths = [Path(arg).resolve() for arg in chosen] or notebook_paths()
        print(f"device: {describe_device()} | mode: {'full' if full else 'quick'} | one fresh kernel per notebook")
        timed = time_notebooks(paths, quick=not full)
        print(f"total: {sum(seconds for _, seconds in timed):.0f} s")
        if "--write" in sys.argv:
            if full:
                raise SystemExit("--write stores quick-mode times only (README's and chapter 00's time budget)")
            print("stored in", write_notebook_times(timed))
    elif "--chapter-map" in sys.argv:
        print(chapter_map_markdown())
        print()
        print("\n".join(session_plan()))
    else:
        setup()
        for name, version in versions().items():
            print(f"{name:>12}: {version}")
