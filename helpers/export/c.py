"""The rule as a C99 program (``templates/rule.c``), and building and running it with the system compiler."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..nca import CHANNELS
from . import template
from .quantize import QuantizedRule, float32_literal, require_rule


def c_source(rule: QuantizedRule) -> str:
    """A self-contained C99 program (standard library only) that runs the quantized rule on a grid.

    Usage: ``nca HEIGHT WIDTH STEPS IN OUT [UPDATE_RATE [SEED]]``. States are raw float32 files laid
    out cell by cell, ``[HEIGHT][WIDTH][12]``; IN may be ``-`` for the all-zero seed. With
    UPDATE_RATE 1 every value updates every step (the deterministic mode used for parity).
    """
    require_rule(rule, "c_source")
    return template.fill(
        "rule.c",
        PARAMETERS=rule.parameter_count, BITS=rule.bits, UPDATE_RATE=rule.update_rate,
        CODE_TYPE="signed char" if rule.bits <= 8 else "short",
        MASK_PER_CELL=int(rule.update_per == "cell"),
        WEIGHT_CODES=",\n  ".join("{" + ",".join(str(int(c)) for c in row) + "}" for row in rule.weight_codes),
        BIAS_CODES=",".join(str(int(c)) for c in rule.bias_codes),
        WEIGHT_SCALE=float32_literal(rule.weight_scale), BIAS_SCALE=float32_literal(rule.bias_scale),
    )


def find_c_compiler() -> str | None:
    """The system C compiler (``$CC``, else cc, gcc or clang on the PATH), or None."""
    for name in [os.environ.get("CC"), "cc", "gcc", "clang"]:
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compile_c(source: str, directory: str | Path | None = None, compiler: str | None = None) -> Path:
    """Write ``source`` to ``nca.c`` in ``directory`` (a fresh temporary one by default) and build ``nca``."""
    compiler = compiler or find_c_compiler()
    if compiler is None:
        raise FileNotFoundError("no C compiler found (tried $CC, cc, gcc, clang); install one, "
                                "e.g. `apt-get install gcc` or Xcode's command line tools")
    directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="dsos_nca_c_"))
    directory.mkdir(parents=True, exist_ok=True)
    source_path, binary = directory / "nca.c", directory / "nca"
    source_path.write_text(source)
    result = subprocess.run([compiler, "-O2", "-std=c99", str(source_path), "-o", str(binary), "-lm"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{compiler} failed to compile {source_path}:\n{result.stderr}")
    return binary


def run_c(binary: str | Path, state: torch.Tensor | None, steps: int, size: tuple[int, int] | None = None,
          update_rate: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Run the compiled program for ``steps`` steps from ``state`` ([1, 12, H, W]; None = the zero seed
    of ``size`` (H, W)) and return the final state as a tensor [1, 12, H, W]."""
    if state is None:
        if size is None:
            raise ValueError("give a state [1, 12, H, W] or, for the zero seed, size=(H, W)")
        height, width = size
    else:
        if state.ndim != 4 or state.shape[:2] != (1, CHANNELS):
            raise ValueError(f"the C program runs one state shaped [1, 12, H, W], got {tuple(state.shape)}")
        height, width = state.shape[2:]
    with tempfile.TemporaryDirectory(prefix="dsos_nca_run_") as folder:
        source, target = Path(folder) / "in.bin", Path(folder) / "out.bin"
        if state is None:
            source_arg = "-"
        else:
            cells = rearrange(state[0].detach().cpu().float(), "c h w -> h w c").contiguous().numpy()
            cells.astype("<f4").tofile(source)
            source_arg = str(source)
        command = [str(binary), str(height), str(width), str(steps), source_arg, str(target),
                   repr(float(update_rate)), str(int(seed))]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"the C program failed ({result.returncode}): {result.stderr.strip()}")
        cells = np.fromfile(target, dtype="<f4").reshape(height, width, CHANNELS)
    return rearrange(torch.from_numpy(cells.copy()), "h w c -> 1 c h w")
