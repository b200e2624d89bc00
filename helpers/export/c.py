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
from .quantize import STATE_CODE, QuantizedRule, check_state_bits, float32_literal, require_rule, state_codes


def c_source(rule: QuantizedRule, state_bits: int = 32) -> str:
    """A self-contained C99 program (standard library only) that runs the quantized rule on a grid.

    Usage: ``nca HEIGHT WIDTH STEPS IN OUT [UPDATE_RATE [SEED]]``. States are raw files laid out cell
    by cell, ``[HEIGHT][WIDTH][12]``: float32 values, or with ``state_bits=8`` one signed byte per
    value (the code q in [-127, 127] of the value q / 127; the program keeps the state in 8 bits and
    rounds every step's result to it). IN may be ``-`` for the all-zero seed. With UPDATE_RATE 1
    every value updates every step (the deterministic mode used for parity).
    """
    require_rule(rule, "c_source")
    check_state_bits(state_bits)
    return template.fill(
        "rule.c", STATE_BITS=state_bits,
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
          update_rate: float = 1.0, seed: int = 0, state_bits: int = 32) -> torch.Tensor:
    """Run the compiled program for ``steps`` steps from ``state`` ([1, 12, H, W]; None = the zero seed
    of ``size`` (H, W)) and return the final state as a float32 tensor [1, 12, H, W].

    ``state_bits`` must be what the program was generated with (``c_source(rule, state_bits)``): 8
    hands it the state's 8-bit codes (``state_codes``) and reads codes back; a program of the other
    format refuses the file."""
    check_state_bits(state_bits)
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
            cells = rearrange(state[0].detach().cpu().float(), "c h w -> h w c").contiguous()
            if state_bits == 8:
                state_codes(cells).numpy().tofile(source)
            else:
                cells.numpy().astype("<f4").tofile(source)
            source_arg = str(source)
        command = [str(binary), str(height), str(width), str(steps), source_arg, str(target),
                   repr(float(update_rate)), str(int(seed))]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"the C program failed ({result.returncode}): {result.stderr.strip()}")
        cells = np.fromfile(target, dtype="i1" if state_bits == 8 else "<f4").reshape(height, width, CHANNELS)
    values = torch.from_numpy(cells.astype(np.float32))
    if state_bits == 8:
        values = values / STATE_CODE  # code q -> q / 127, as the program and quantize_state compute it
    return rearrange(values, "h w c -> 1 c h w")
