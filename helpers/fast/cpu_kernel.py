"""Compile and load the fused CPU kernel of ``helpers.fast`` (``helpers/fast/csrc/nca_cpu.cpp``).

The kernel is plain C++ without any PyTorch headers, so it compiles in about a second with the
system's C++ compiler (``g++`` on Linux and Colab, ``clang++`` on a Mac) and is called through
``ctypes`` with the tensors' data pointers. The compiled library is cached in
``~/.cache/dsos/`` (or ``$DSOS_CACHE``), under a name that depends on the source, the compiler
flags and the processor, so a changed source or another machine gets a fresh build. What the
library is (its ``version()``, its ``max_channels()``) is written once, in the C++ source, and
asked of the loaded library.

Nothing here is required: when no compiler is found or compiling fails, ``load()`` returns
``None`` with the reason in ``load_error()``, and ``helpers.fast`` runs its PyTorch backend instead.
``DSOS_CPU_KERNEL=0`` switches the kernel off.

The kernel also draws the plain version's exact masks (``draw_rand_mask``): it runs the
generator's own Mersenne Twister, checked against ``torch.rand`` once per process
(``exact_masks_available``).
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "csrc" / "nca_cpu.cpp"
ENV_SWITCH = "DSOS_CPU_KERNEL"

# -march=native: the vector instructions of this processor (AVX2 and FMA on most x86 machines).
# Tried in order: with OpenMP (threads), then without (one thread, e.g. Apple clang).
FLAG_SETS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-march=native"], ["-O3"])
COMMON_FLAGS = ["-std=c++17", "-shared", "-fPIC"]

_library = None
_error: str | None = None
_tried = False
_twister_matches: bool | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("DSOS_CACHE") or Path.home() / ".cache" / "dsos")


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


def library_path(compiler: str, flags: list[str]) -> Path:
    key = hashlib.sha256("\n".join([SOURCE.read_text(), compiler, " ".join(flags), processor_id()]).encode())
    return cache_dir() / f"nca_cpu_{key.hexdigest()[:16]}.so"


def compile_library(compiler: str, flags: list[str]) -> Path:
    """Compile the kernel (or reuse a cached build); raise RuntimeError with the compiler's message."""
    target = library_path(compiler, flags)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name and rename: two processes compiling at once never see half a file.
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        built = Path(folder) / target.name
        result = subprocess.run([compiler, *flags, *COMMON_FLAGS, str(SOURCE), "-o", str(built)],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(compiler).name} {' '.join(flags)} failed: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)
    return target


def declare(library) -> None:
    """The C signatures, so that ctypes converts and checks every argument."""
    pointer, integer, long_ = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    library.nca_step.argtypes = [pointer] * 6 + [integer] * 7
    library.nca_step.restype = None
    library.nca_step_backward.argtypes = [pointer] * 10 + [integer] * 7
    library.nca_step_backward.restype = None
    library.nca_random_mask.argtypes = [pointer, long_, ctypes.c_uint64, ctypes.c_uint64, integer]
    library.nca_random_mask.restype = None
    library.nca_torch_rand_mask.argtypes = [pointer, pointer, long_, ctypes.c_uint32]
    library.nca_torch_rand_mask.restype = None
    library.nca_kernel_version.restype = integer
    library.nca_kernel_max_channels.restype = integer


def load():
    """The loaded kernel library, or None (see ``load_error()``). Compiles once per machine."""
    global _library, _error, _tried
    if _tried:
        return _library
    _tried = True
    if os.environ.get(ENV_SWITCH, "1") == "0":
        _error = f"switched off by {ENV_SWITCH}=0; using the PyTorch backend"
        return None
    compiler = find_compiler()
    if compiler is None:
        _error = "no C++ compiler found (install g++ or set CXX); using the PyTorch backend"
        return None
    failures = []
    for flags in FLAG_SETS:
        try:
            library = ctypes.CDLL(str(compile_library(compiler, flags)))
            declare(library)                 # AttributeError: a function this module calls is missing
        except (RuntimeError, OSError, AttributeError, subprocess.SubprocessError) as error:
            failures.append(str(error))
            continue
        _library = library
        return _library
    _error = f"could not compile {SOURCE}: " + " | ".join(failures)
    return None


def reset() -> None:
    """Forget the loaded library, so the next ``load()`` tries again (after changing the environment)."""
    global _library, _error, _tried, _twister_matches
    _library, _error, _tried, _twister_matches = None, None, False, None


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
