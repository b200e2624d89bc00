"""Compile and load the fused CPU kernel of ``helpers.fast`` (``helpers/fast/csrc/nca_cpu.cpp``).

The kernel is plain C++ without any PyTorch headers, so it compiles in about a second with the
system's C++ compiler (``g++`` on Linux and Colab, ``clang++`` on a Mac) and is called through
``ctypes`` with the tensors' data pointers. What the library is (its ``version()``, its
``max_channels()``) is written once, in the C++ source, and asked of the loaded library.

**Native code is loaded only if this package built it.** Loading a library runs its code, so:

* the build is cached in ``~/.cache/dsos/`` (or ``$DSOS_CACHE``) under a name made of its *build
  key*, the SHA-256 of the source, the compiler (its path, size and date), the flags and the
  processor; beside it, ``NAME.json`` records the full build key and the SHA-256 of the library's
  own bytes. Before loading, both are checked; a library without that record, with another key or
  with other bytes (planted, corrupt, half-written, stale) is never loaded: it is rebuilt;
* the cache folder must be owned by this user and writable by no one else, and so must every
  folder above it (root's, or sticky like ``/tmp``, are fine): anyone who can write there could
  replace the library *and* its record. Otherwise the kernel is built in a fresh private folder
  (``tempfile.mkdtemp``, removed at exit) with a warning saying why and how to fix the cache;
* the compiler runs with a time limit, ``DSOS_COMPILE_TIMEOUT`` seconds (default 120): a compiler
  that hangs is killed (with everything it started) and the PyTorch backend is used, with a clear
  ``load_error()``.

Nothing here is required: when no compiler is found or compiling fails, ``load()`` returns
``None`` with the reason in ``load_error()``, and ``helpers.fast`` runs its PyTorch backend instead.
``DSOS_CPU_KERNEL=0`` switches the kernel off. ``library_info()`` says which file was loaded, built
with which flags.

The kernel also draws the plain version's exact masks (``draw_rand_mask``): it runs the
generator's own Mersenne Twister, checked against ``torch.rand`` once per process
(``exact_masks_available``).
"""
from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "csrc" / "nca_cpu.cpp"
ENV_SWITCH = "DSOS_CPU_KERNEL"
ENV_CACHE = "DSOS_CACHE"
ENV_TIMEOUT = "DSOS_COMPILE_TIMEOUT"
DEFAULT_TIMEOUT_S = 120.0

# -march=native: the vector instructions of this processor (AVX2 and FMA on most x86 machines).
# Tried in order: with OpenMP (threads), then without (one thread, e.g. Apple clang).
FLAG_SETS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-march=native"], ["-O3"])
COMMON_FLAGS = ["-std=c++17", "-shared", "-fPIC"]

_library = None
_info: dict | None = None
_error: str | None = None
_tried = False
_twister_matches: bool | None = None
_private_dir: Path | None = None


class CompileTimeout(RuntimeError):
    """The compiler ran longer than ``DSOS_COMPILE_TIMEOUT`` seconds (it was killed)."""


def cache_dir() -> Path:
    """The configured cache folder (``$DSOS_CACHE`` or ``~/.cache/dsos``); see ``build_dir`` for the one used."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "dsos")


def compile_timeout() -> float:
    """The compiler's time limit in seconds: ``$DSOS_COMPILE_TIMEOUT``, 120 by default."""
    text = os.environ.get(ENV_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{ENV_TIMEOUT} must be a positive number of seconds, got {text!r}")
    return value


def find_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def processor_id() -> str:
    """What -march=native depends on: the processor's model and feature flags (Linux), else its name."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = [line for line in cpuinfo.read_text().splitlines()
                 if line.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(lines)))
    return platform.processor() + platform.machine()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ where: a folder only we can write

def folder_problem(folder: Path, uid: int | None = None) -> str | None:
    """Why native code must not be loaded from ``folder`` (another user could write it), or None.

    The folder must be owned by ``uid`` (this user) and writable by no group or other users; every
    folder above it must be owned by ``uid`` or root and not writable by others (unless sticky,
    like ``/tmp``, where others cannot rename what is ours)."""
    if not hasattr(os, "getuid"):
        return None                                   # no POSIX owners (Windows): nothing to check
    uid = os.getuid() if uid is None else uid
    folder = Path(folder).resolve()
    info = folder.stat()
    if not stat.S_ISDIR(info.st_mode):
        return f"{folder} is not a folder"
    if info.st_uid != uid:
        return f"{folder} is owned by another user (uid {info.st_uid}, this is uid {uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{folder} can be written by other users (mode {stat.filemode(info.st_mode)})"
    for parent in folder.parents:
        info = parent.stat()
        if info.st_uid not in (0, uid):
            return f"{parent}, a folder above it, is owned by another user (uid {info.st_uid})"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            return f"{parent}, a folder above it, can be written by other users (mode {stat.filemode(info.st_mode)})"
    return None


def private_dir() -> Path:
    """A fresh folder only this process's user can write (created once per process, removed at exit)."""
    global _private_dir
    if _private_dir is None:
        _private_dir = Path(tempfile.mkdtemp(prefix="dsos-kernel-"))
        atexit.register(shutil.rmtree, _private_dir, True)
    return _private_dir


def build_dir() -> Path:
    """The folder the kernel is built in and loaded from: the cache folder when it is safe (see
    ``folder_problem``), else a private folder, with a warning. Raises RuntimeError if neither is."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        problem = folder_problem(folder)
    except OSError as error:                          # e.g. a read-only home: build privately instead
        problem = f"it cannot be used ({error})"
    if problem is None:
        return folder
    private = private_dir()
    private_problem = folder_problem(private)
    if private_problem is not None:
        raise RuntimeError(f"refusing to load native code: the cache folder is unsafe ({problem}) and so is the "
                           f"private folder {private} ({private_problem})")
    warnings.warn(f"not loading the CPU kernel from {folder}: {problem}. Built in the private folder {private} "
                  f"instead (again in every process). To cache it, make the folder yours alone "
                  f"(chmod go-w) or set {ENV_CACHE} to a folder only you can write.", RuntimeWarning, stacklevel=3)
    return private


# ------------------------------------------------------------------------------ what: a build this package made

def build_key(compiler: str, flags: list[str]) -> str:
    """SHA-256 of everything the library's bytes depend on: source, compiler, flags, processor."""
    compiler_path = Path(compiler).resolve()
    compiler_stat = compiler_path.stat()
    parts = [SOURCE.read_text(), str(compiler_path), str(compiler_stat.st_size), str(compiler_stat.st_mtime_ns),
             " ".join(flags), " ".join(COMMON_FLAGS), processor_id()]
    return hashlib.sha256("\n\0".join(parts).encode()).hexdigest()


def library_path(compiler: str, flags: list[str], folder: Path | None = None) -> Path:
    """Where the build for ``compiler`` and ``flags`` lives (its record: the same name, ``.json``)."""
    folder = build_dir() if folder is None else Path(folder)
    return folder / f"nca_cpu_{build_key(compiler, flags)[:16]}.so"


def record_path(library: Path) -> Path:
    return Path(library).with_suffix(".json")


def untrusted_because(library: Path, key: str) -> str | None:
    """Why the file at ``library`` is not the build this package made for ``key`` (None: it is)."""
    if not library.exists() and not library.is_symlink():
        return "not built yet"
    info = library.lstat()
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        return "owned or writable by another user"
    record_file = record_path(library)
    if not record_file.is_file():
        return f"no build record {record_file.name} beside it"
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError) as error:
        return f"its build record is unreadable ({error})"
    if not isinstance(record, dict) or record.get("build_key") != key:
        return "its build record is for another source, compiler or flags"
    if record.get("library_sha256") != file_sha256(library):
        return "its bytes are not the ones this package built (corrupt, replaced or half-written)"
    return None


def run_compiler(command: list[str], log: Path, timeout: float) -> int:
    """Run the compiler in its own process group; on timeout kill the group and raise CompileTimeout."""
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)   # the driver and what it started (cc1plus, ld)
            except ProcessLookupError:
                pass                                      # it ended between the timeout and the kill
            process.wait()
            raise CompileTimeout(f"compiling {SOURCE.name} with {Path(command[0]).name} took longer than "
                                 f"{timeout:g} s and was stopped (set {ENV_TIMEOUT} to allow more); "
                                 f"using the PyTorch backend") from None


def compile_library(compiler: str, flags: list[str], folder: Path | None = None) -> Path:
    """The verified build for ``compiler`` and ``flags``: the cached one if its record and bytes check
    out, else a fresh one (replacing whatever was there). Raises RuntimeError with the compiler's
    message, CompileTimeout when it runs too long."""
    folder = build_dir() if folder is None else Path(folder)
    key = build_key(compiler, flags)
    target = library_path(compiler, flags, folder)
    if untrusted_because(target, key) is None:
        return target
    # Build under temporary names in a private subfolder, then rename: the library first, its record
    # last, so a reader in between sees a mismatch (and rebuilds), never a record for other bytes.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as scratch:
        built, log = Path(scratch) / target.name, Path(scratch) / "compiler.log"
        code = run_compiler([compiler, *flags, *COMMON_FLAGS, str(SOURCE), "-o", str(built)], log, compile_timeout())
        if code != 0 or not built.is_file():
            raise RuntimeError(f"{Path(compiler).name} {' '.join(flags)} failed: {log.read_text().strip()[-2000:]}")
        record = {"build_key": key, "library_sha256": file_sha256(built), "compiler": compiler, "flags": flags,
                  "common_flags": COMMON_FLAGS, "source_sha256": file_sha256(SOURCE)}
        written = Path(scratch) / "record.json"
        written.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(built, target)
        os.replace(written, record_path(target))
    # (Not checked again here: another process of this user building the same key at the same time
    # may have just replaced the pair with its own, equally genuine one; the folder is ours alone.)
    return target


def declare(library) -> None:
    """The C signatures, so that ctypes converts and checks every argument."""
    pointer, integer, long_ = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    library.nca_step.argtypes = [pointer] * 6 + [integer] * 8
    library.nca_step.restype = None
    library.nca_step_backward.argtypes = [pointer] * 10 + [integer] * 8
    library.nca_step_backward.restype = None
    library.nca_random_mask.argtypes = [pointer, long_, ctypes.c_uint64, ctypes.c_uint64, integer]
    library.nca_random_mask.restype = None
    library.nca_torch_rand_mask.argtypes = [pointer, pointer, long_, ctypes.c_uint32]
    library.nca_torch_rand_mask.restype = None
    library.nca_kernel_version.restype = integer
    library.nca_kernel_max_channels.restype = integer


def load():
    """The loaded kernel library, or None (see ``load_error()``). Compiles once per machine."""
    global _library, _info, _error, _tried
    if _tried:
        return _library
    if os.environ.get(ENV_SWITCH, "1") == "0":
        _tried, _error = True, f"switched off by {ENV_SWITCH}=0; using the PyTorch backend"
        return None
    timeout = compile_timeout()                       # a bad value is an error (every time), not a silent default
    _tried = True
    compiler = find_compiler()
    if compiler is None:
        _error = "no C++ compiler found (install g++ or set CXX); using the PyTorch backend"
        return None
    try:
        folder = build_dir()
    except (OSError, RuntimeError) as error:
        _error = f"no safe folder to build the CPU kernel in ({error}); using the PyTorch backend"
        return None
    failures = []
    for flags in FLAG_SETS:
        try:
            path = compile_library(compiler, flags, folder)
            library = ctypes.CDLL(str(path))          # only a verified build of ours gets here
            declare(library)                          # AttributeError: a function this module calls is missing
        except CompileTimeout as error:
            _error = str(error)                       # the next flags would hang as long: stop here
            return None
        except (RuntimeError, OSError, AttributeError) as error:
            failures.append(str(error))
            continue
        _library, _info = library, {"path": path, "flags": list(flags), "compiler": compiler,
                                    "timeout_s": timeout, "failures": failures}
        return _library
    _error = f"could not compile {SOURCE}: " + " | ".join(failures)
    return None


def reset() -> None:
    """Forget the loaded library, so the next ``load()`` tries again (after changing the environment)."""
    global _library, _info, _error, _tried, _twister_matches
    _library, _info, _error, _tried, _twister_matches = None, None, None, False, None


def library_info() -> dict | None:
    """What ``load()`` loaded: its ``path``, the ``flags`` it was built with, the ``compiler``, and the
    ``failures`` of flag sets tried before (None without a kernel)."""
    load()
    return None if _info is None else dict(_info)


def load_error() -> str | None:
    """Why ``load()`` returned None (None when the kernel is loaded or not tried yet)."""
    return _error


def available() -> bool:
    return load() is not None


def version() -> int | None:
    """The loaded kernel's version, as its source writes it (None without a kernel)."""
    library = load()
    return None if library is None else library.nca_kernel_version()


def max_channels() -> int:
    """The most channels the kernel runs (0 without a kernel)."""
    library = load()
    return 0 if library is None else library.nca_kernel_max_channels()


def pointer(tensor: torch.Tensor, dtype: torch.dtype, shape=None) -> int:
    """The address of a contiguous CPU tensor's data, for a C function that reads it as ``dtype``
    (and, when given, as ``shape``): the C side trusts the pointer, so anything else is refused here,
    never reinterpreted (a float64 buffer read as float32 gives garbage, a smaller one overruns)."""
    if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise ValueError("the CPU kernel needs contiguous CPU tensors")
    if tensor.dtype != dtype:
        raise TypeError(f"the CPU kernel reads this buffer as {dtype}, got {tensor.dtype}")
    if shape is not None and tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"the CPU kernel reads this buffer as {tuple(shape)}, got {tuple(tensor.shape)}")
    return tensor.data_ptr()


# ------------------------------------------------------------------------------ exact masks

#: The bytes of a CPU torch.Generator.get_state() the kernel uses: seed, left, seeded, next, 624 words.
TWISTER_STATE_BYTES = 8 + 4 + 4 + 8 + 624 * 8


def rand_threshold(rate: float) -> int:
    """The integer t with ``u < rate`` exactly when ``(y mod 2^24) < t``, for torch.rand's float32
    ``u = (y mod 2^24) / 2^24`` (the comparison happens in float32, hence float32(rate))."""
    return math.ceil(float(torch.tensor(rate, dtype=torch.float32)) * 2**24)


def draw_rand_mask(out: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``out[...] = torch.rand(out.shape, generator=generator) < rate`` (out: a contiguous bool CPU
    tensor), drawn by the kernel from the generator's own Mersenne Twister state, which it leaves
    exactly where torch.rand would. Use it only when ``exact_masks_available()``."""
    generator = generator if generator is not None else torch.default_generator
    state = generator.get_state()
    if state.numel() < TWISTER_STATE_BYTES:     # the kernel reads and writes that many bytes of it
        raise ValueError(f"draw_rand_mask needs a CPU generator (a Mersenne Twister state of at least "
                         f"{TWISTER_STATE_BYTES} bytes), got a {state.numel()}-byte state")
    load().nca_torch_rand_mask(pointer(state, torch.uint8), pointer(out, torch.bool), out.numel(),
                               rand_threshold(rate))
    generator.set_state(state)
    return out


def exact_masks_available() -> bool:
    """Whether ``draw_rand_mask`` reproduces ``torch.rand(...) < rate`` on this PyTorch: checked once,
    on both sides of several regenerations of the twister, with torch's default float32 dtype.
    (If a PyTorch release drew its random numbers differently, the kernel backend would quietly
    keep using torch.rand instead.)"""
    global _twister_matches
    if _twister_matches is None:
        _twister_matches = bool(available()) and _twister_check()
    return _twister_matches and torch.get_default_dtype() == torch.float32   # float64 rand draws 64 bits


def _twister_check() -> bool:
    ours, theirs = torch.Generator().manual_seed(20261201), torch.Generator().manual_seed(20261201)
    for count, rate in [(5, 0.5), (3000, 0.3), (623, 0.5), (1, 0.9), (7000, 0.5)]:
        mask = draw_rand_mask(torch.empty(count, dtype=torch.bool), rate, ours)
        if not torch.equal(mask, torch.rand(count, generator=theirs, dtype=torch.float32) < rate):
            return False
    return torch.equal(torch.rand(10, generator=ours), torch.rand(10, generator=theirs))
