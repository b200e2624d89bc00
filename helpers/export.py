"""The texture NCA outside PyTorch: quantized weights, a GLSL shader, a C program, a WebGL page.

Chapter 04 explains every piece; this module holds the generators so later chapters (and the
tests) can reuse them.

* ``quantize(model, bits=8)``     the 588 parameters as integers and two scales: a ``QuantizedRule``
* ``QuantizedRule.model()``       the quantized rule as an ``NCA`` again (the PyTorch reference)
* ``glsl_buffer_shader(rule)``    one ShaderToy buffer pass: perception and update in one rule
* ``glsl_image_shader()``         the ShaderToy image pass that shows the RGB channels
* ``c_source(rule)``              a self-contained C99 program with the parameters embedded
* ``compile_c`` / ``run_c``       build it with the system C compiler and run it on a state
* ``to_framebuffer`` / ``from_framebuffer``  the 12 channels as three RGBA tiles side by side
* ``webgl_page(rule, ...)``       a standalone HTML page (WebGL2, no network) that runs the rule live
* ``show_page(html)``             display such a page inside a notebook (an iframe with ``srcdoc``)
* ``browser_rollout(rule, ...)``  run the page in headless Chromium and read the state back
* ``parity_tolerance(...)``       how far two correct float32 implementations may drift apart
* ``draw_circuit(rule)``          the rule drawn as a circuit of registers, filters and adders

Only the 12-channel architecture of the course is exported (Laplacian/Sobel perception, the
relu split, a 1x1 convolution 48 -> 12 with bias); anything else raises a ``ValueError``.
"""
from __future__ import annotations

import base64
import html
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from .nca import CHANNELS, LAPLACIAN, NCA, SOBEL_X, SOBEL_Y

INPUTS = 4 * CHANNELS  # relu(state), relu(perception), -relu(-state), -relu(-perception)
TILES = CHANNELS // 4  # the frame buffer holds the 12 channels as 3 RGBA tiles


# ------------------------------------------------------------------------------ quantization

def check_exportable(model) -> None:
    """Raise a ``ValueError`` unless ``model`` is the 12-channel texture NCA the exporters know."""
    if not isinstance(model, NCA):
        raise ValueError(f"the exporters need a helpers.nca.NCA, got {type(model).__name__}")
    config = model.config()
    expected = {"channels": CHANNELS, "split_relu": True, "filters": "laplacian_sobel"}
    wrong = {key: config[key] for key, value in expected.items() if config[key] != value}
    if wrong:
        raise ValueError(f"only the 12-channel architecture can be exported (channels=12, split_relu=True, "
                         f"filters='laplacian_sobel'); this model has {wrong}. Train an NCA() with the "
                         "default settings, as in chapter 03")
    expected_filters = torch.stack([LAPLACIAN] * 4 + [SOBEL_X] * 4 + [SOBEL_Y] * 4)[:, None]
    if not torch.equal(model.filters.detach().cpu().float(), expected_filters):
        raise ValueError("the exporters assume a Laplacian on channels 0..3, Sobel-x on 4..7 and Sobel-y on "
                         "8..11 (one filter per frame-buffer tile); this model's filters differ")
    if tuple(model.update.weight.shape) != (CHANNELS, INPUTS, 1, 1) or model.update.bias is None:
        raise ValueError(f"the update layer must be a 1x1 convolution {INPUTS} -> {CHANNELS} with a bias, "
                         f"got weight {tuple(model.update.weight.shape)}")


@dataclass(frozen=True)
class QuantizedRule:
    """The rule as integer codes and scales: ``weight = weight_codes * weight_scale`` (same for bias).

    ``weight_codes`` is ``[12, 48]`` (output channel, input), ``bias_codes`` is ``[12]``; the scales
    are float32 values, so every exporter rebuilds bit-identical float32 parameters.
    """
    weight_codes: np.ndarray
    bias_codes: np.ndarray
    weight_scale: float
    bias_scale: float
    bits: int
    update_rate: float = 0.5
    update_per: str = "channel"  # the random mask: one draw per value ("channel") or per cell ("cell")

    @property
    def parameter_count(self) -> int:
        return self.weight_codes.size + self.bias_codes.size

    def weight(self) -> torch.Tensor:
        """The dequantized weights, float32 ``[12, 48]``."""
        return torch.from_numpy(self.weight_codes.astype(np.float32) * np.float32(self.weight_scale))

    def bias(self) -> torch.Tensor:
        return torch.from_numpy(self.bias_codes.astype(np.float32) * np.float32(self.bias_scale))

    def model(self) -> NCA:
        """A fresh ``NCA`` that computes with the quantized parameters (the reference for parity)."""
        model = NCA(update_rate=self.update_rate, update_per=self.update_per)
        with torch.no_grad():
            model.update.weight.copy_(self.weight()[:, :, None, None])
            model.update.bias.copy_(self.bias())
        return model


def _scale_for(values: np.ndarray, largest_code: int) -> np.float32:
    largest = float(np.abs(values).max())
    return np.float32(largest / largest_code) if largest > 0 else np.float32(1.0)


def quantize(model: NCA, bits: int = 8) -> QuantizedRule:
    """Round the 588 parameters to signed ``bits``-bit integers, one scale for the weights, one for the biases.

    The scale maps the largest magnitude to the largest code (127 for 8 bits), so the rounding
    error of every parameter is at most half a scale step.
    """
    check_exportable(model)
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 2 to 16, got {bits!r}")
    largest_code = 2 ** (bits - 1) - 1
    weight = model.update.weight.detach().cpu().double().numpy().reshape(CHANNELS, INPUTS)
    bias = model.update.bias.detach().cpu().double().numpy()
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ValueError("the model has NaN or infinite parameters; it cannot be exported")
    weight_scale, bias_scale = _scale_for(weight, largest_code), _scale_for(bias, largest_code)
    weight_codes = np.clip(np.round(weight / weight_scale), -largest_code, largest_code).astype(np.int32)
    bias_codes = np.clip(np.round(bias / bias_scale), -largest_code, largest_code).astype(np.int32)
    return QuantizedRule(weight_codes, bias_codes, float(weight_scale), float(bias_scale), bits,
                         float(model.update_rate), model.update_per)


def _float_literal(value: float) -> str:
    """A decimal that reads back as exactly this float32 (9 significant digits always suffice)."""
    return f"{np.float32(value):.9e}"


# ------------------------------------------------------------------------------------ GLSL

def _mat4_blocks(rule: QuantizedRule) -> list[str]:
    """36 ``mat4(...)`` literals: block (tile k, input group j) = weight_codes[4k:4k+4, 4j:4j+4].

    GLSL fills a mat4 column by column, so the 16 codes of a block written row by row make its
    *columns* the rows of the block; ``x * M`` (row vector times matrix) then gives, for output
    channel r of the tile, the sum over c of block[r, c] * x[c]: exactly the 1x1 convolution.
    """
    blocks = []
    for tile in range(TILES):
        for group in range(INPUTS // 4):
            codes = rule.weight_codes[4 * tile:4 * tile + 4, 4 * group:4 * group + 4].reshape(-1)
            blocks.append("mat4(" + ",".join(str(int(c)) for c in codes) + ")")
    return blocks


def glsl_buffer_shader(rule: QuantizedRule) -> str:
    """A ShaderToy buffer shader (Buffer A, with iChannel0 = Buffer A) that runs one NCA step per frame.

    Frame buffer layout: for a grid of W x H cells the buffer is 3W x H pixels; the pixel (k*W + x, y)
    holds channels 4k..4k+3 of cell (x, y) in its RGBA. Each pixel reads the 3x3 neighbourhood of
    its cell in all three tiles (27 fetches, wrapping around), computes the 12 perception values,
    and writes the 4 new channels of its own tile. Pixel row y is grid row y (as in PyTorch).
    """
    if not isinstance(rule, QuantizedRule):
        raise ValueError(f"glsl_buffer_shader needs a QuantizedRule (from quantize(model)), got {type(rule).__name__}")
    per_cell = rule.update_per == "cell"  # one draw for all 12 values of a cell, or one per value
    mask_comment = "every cell (all its channels together)" if per_cell else "every channel of every cell"
    mask_channel = "0" if per_cell else "4 * k + c"
    weights = ",\n  ".join(", ".join(row) for row in np.array_split(_mat4_blocks(rule), 12))
    biases = ",".join("vec4(" + ",".join(str(int(c)) for c in rule.bias_codes[4 * k:4 * k + 4]) + ")"
                      for k in range(TILES))
    return f"""\
// Neural cellular automaton, texture rule: {rule.parameter_count} parameters as {rule.bits}-bit integers.
// ShaderToy "Buffer A" with iChannel0 = Buffer A. A W x H grid lives in a 3W x H buffer:
// pixel (k*W + x, y) holds channels 4k..4k+3 of cell (x, y). Drag the mouse to erase cells.
#ifndef UPDATE_RATE
#define UPDATE_RATE {rule.update_rate}
#endif
#ifndef MOUSE_MODE
#define MOUSE_MODE 0
#endif
#define WS {_float_literal(rule.weight_scale)}
#define BS {_float_literal(rule.bias_scale)}
// W[12*k + j]: weights from input group j (4 values) to tile k (4 channels); B[k]: biases of tile k.
const mat4 W[36] = mat4[](
  {weights});
const vec4 B[3] = vec4[]({biases});
ivec2 G; // grid size in cells

// Tile k (channels 4k..4k+3) of cell c, wrapping around the edges of the grid.
vec4 S(ivec2 c, int k) {{ c = (c + G) % G; return texelFetch(iChannel0, ivec2(c.x + k * G.x, c.y), 0); }}

// A uniform random number in [0, 1) for every cell, channel and frame (integer hash).
float rnd(ivec2 p, int c, int frame) {{
  uint h = uint(p.x) * 1973u + uint(p.y) * 9277u + uint(c) * 26699u + uint(frame) * 104729u;
  h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
  return float(h >> 8) / 16777216.0;
}}

void mainImage(out vec4 o, in vec2 f) {{
  G = ivec2(int(iResolution.x) / 3, int(iResolution.y));
  ivec2 p = ivec2(f);
  int k = p.x / G.x;
  p.x -= k * G.x;
  if (k > 2 || iFrame < 1) {{ o = vec4(0); return; }}
  // Perception: Laplacian on tile 0, Sobel-x on tile 1, Sobel-y on tile 2 (y grows downwards).
  vec4 s[3], q[3];
  for (int t = 0; t < 3; t++) {{
    vec4 a = S(p + ivec2(-1, -1), t), b = S(p + ivec2(0, -1), t), c = S(p + ivec2(1, -1), t);
    vec4 d = S(p + ivec2(-1, 0), t), e = S(p, t), g = S(p + ivec2(1, 0), t);
    vec4 h = S(p + ivec2(-1, 1), t), i = S(p + ivec2(0, 1), t), j = S(p + ivec2(1, 1), t);
    s[t] = e;
    q[t] = t == 0 ? a + c + h + j + 2. * (b + d + g + i) - 12. * e
         : t == 1 ? c + 2. * g + j - a - 2. * d - h
         : h + 2. * i + j - a - 2. * b - c;
  }}
  // The 48 inputs: relu of state and perception, then their negative parts.
  vec4 x[12];
  for (int t = 0; t < 3; t++) {{
    x[t] = max(s[t], 0.); x[t + 3] = max(q[t], 0.);
    x[t + 6] = min(s[t], 0.); x[t + 9] = min(q[t], 0.);
  }}
  vec4 dx = B[k] * BS;
  for (int j = 0; j < 12; j++) dx += x[j] * (W[12 * k + j] * WS);
  // Stochastic update: {mask_comment} changes with probability UPDATE_RATE.
  vec4 m = vec4(0);
  for (int c = 0; c < 4; c++) m[c] = rnd(p, {mask_channel}, iFrame) < float(UPDATE_RATE) ? 1. : 0.;
  o = s[k] + dx * m;
  // Mouse (drawn as in the image pass): erase (MOUSE_MODE 0) or disturb (1) the cells near it.
  ivec2 mc = ivec2(int(iMouse.x) % G.x, G.y - 1 - int(iMouse.y));
  if (iMouse.z > 0. && length(vec2(p - mc)) < 0.06 * float(G.y)) {{
    o = MOUSE_MODE == 0 ? vec4(0) : o + vec4(rnd(p, 12, iFrame), rnd(p, 13, iFrame), rnd(p, 14, iFrame), rnd(p, 15, iFrame)) - .5;
  }}
}}
"""


def glsl_image_shader() -> str:
    """The ShaderToy image pass (iChannel0 = Buffer A): the RGB channels, the grid repeated across the width."""
    return """\
// Image pass, iChannel0 = Buffer A: show channels 0..2 (+0.5) of the grid, tiled across the screen.
void mainImage(out vec4 o, in vec2 f) {
  ivec2 G = ivec2(int(iResolution.x) / 3, int(iResolution.y));
  ivec2 p = ivec2(f);
  p = ivec2(p.x % G.x, G.y - 1 - p.y);
  o = vec4(texelFetch(iChannel0, p, 0).rgb + .5, 1.);
}
"""


# --------------------------------------------------------------------------------------- C

def c_source(rule: QuantizedRule) -> str:
    """A self-contained C99 program (standard library only) that runs the quantized rule on a grid.

    Usage: ``nca HEIGHT WIDTH STEPS IN OUT [UPDATE_RATE [SEED]]``. States are raw float32 files laid
    out cell by cell, ``[HEIGHT][WIDTH][12]``; IN may be ``-`` for the all-zero seed. With
    UPDATE_RATE 1 every value updates every step (the deterministic mode used for parity).
    """
    if not isinstance(rule, QuantizedRule):
        raise ValueError(f"c_source needs a QuantizedRule (from quantize(model)), got {type(rule).__name__}")
    code_type = "signed char" if rule.bits <= 8 else "short"
    mask_per_cell = int(rule.update_per == "cell")
    weight_rows = ",\n  ".join("{" + ",".join(str(int(c)) for c in row) + "}" for row in rule.weight_codes)
    bias_codes = ",".join(str(int(c)) for c in rule.bias_codes)
    return f"""\
/* Neural cellular automaton, texture rule: {rule.parameter_count} parameters as {rule.bits}-bit integers.
   Generated by helpers/export.py. Build: cc -O2 -std=c99 nca.c -o nca -lm
   Run:   ./nca HEIGHT WIDTH STEPS IN.bin OUT.bin [UPDATE_RATE [SEED]]
   State files: float32, [HEIGHT][WIDTH][12] (cell by cell, row by row); IN.bin "-" = all zeros. */
#include <stdio.h>
#include <stdlib.h>

#define CH 12
#define IN 48
#define MASK_PER_CELL {mask_per_cell} /* 1: all values of a cell update together; 0: each value alone */
static const {code_type} WEIGHT_CODES[CH][IN] = {{
  {weight_rows}}};
static const {code_type} BIAS_CODES[CH] = {{{bias_codes}}};
static const float WEIGHT_SCALE = {_float_literal(rule.weight_scale)}f;
static const float BIAS_SCALE = {_float_literal(rule.bias_scale)}f;
static float weight[CH][IN], bias[CH];

/* Perception filters: Laplacian on channels 0..3, Sobel-x on 4..7, Sobel-y on 8..11. */
static const float FILTERS[3][3][3] = {{
  {{{{1, 2, 1}}, {{2, -12, 2}}, {{1, 2, 1}}}},
  {{{{-1, 0, 1}}, {{-2, 0, 2}}, {{-1, 0, 1}}}},
  {{{{-1, -2, -1}}, {{0, 0, 0}}, {{1, 2, 1}}}}}};

static unsigned long long rng = 88172645463325252ULL;
static float uniform01(void) {{ /* xorshift64: a uniform number in [0, 1) */
  rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
  return (float)(rng >> 40) / 16777216.0f;
}}

/* One step of the rule on an h x w grid that wraps around: out = in + delta * mask. */
static void step(const float *in, float *out, int h, int w, float rate) {{
  for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) {{
    const float *cell = in + (y * w + x) * CH;
    float perception[CH] = {{0}}, inputs[IN];
    for (int dy = -1; dy <= 1; dy++) for (int dx = -1; dx <= 1; dx++) {{
      const float *other = in + (((y + dy + h) % h) * w + (x + dx + w) % w) * CH;
      for (int c = 0; c < CH; c++) perception[c] += FILTERS[c / 4][dy + 1][dx + 1] * other[c];
    }}
    for (int c = 0; c < CH; c++) {{ /* relu split: positive parts, then negative parts */
      inputs[c] = cell[c] > 0 ? cell[c] : 0;            inputs[CH + c] = perception[c] > 0 ? perception[c] : 0;
      inputs[2 * CH + c] = cell[c] < 0 ? cell[c] : 0;   inputs[3 * CH + c] = perception[c] < 0 ? perception[c] : 0;
    }}
    int update = 0;
    for (int o = 0; o < CH; o++) {{
      float delta = bias[o];
      for (int i = 0; i < IN; i++) delta += weight[o][i] * inputs[i];
      if (o == 0 || !MASK_PER_CELL) update = rate >= 1.0f || uniform01() < rate; /* the random mask */
      out[(y * w + x) * CH + o] = cell[o] + (update ? delta : 0.0f);
    }}
  }}
}}

int main(int argc, char **argv) {{
  if (argc < 6) {{ fprintf(stderr, "usage: %s HEIGHT WIDTH STEPS IN.bin|- OUT.bin [UPDATE_RATE [SEED]]\\n", argv[0]); return 2; }}
  int h = atoi(argv[1]), w = atoi(argv[2]), steps = atoi(argv[3]);
  float rate = argc > 6 ? (float)atof(argv[6]) : {rule.update_rate}f;
  if (argc > 7) rng ^= strtoull(argv[7], NULL, 10) * 2654435761ULL;
  if (h < 3 || w < 3 || steps < 0) {{ fprintf(stderr, "need HEIGHT, WIDTH >= 3 and STEPS >= 0\\n"); return 2; }}
  for (int o = 0; o < CH; o++) {{
    bias[o] = BIAS_CODES[o] * BIAS_SCALE;
    for (int i = 0; i < IN; i++) weight[o][i] = WEIGHT_CODES[o][i] * WEIGHT_SCALE;
  }}
  size_t n = (size_t)h * w * CH;
  float *a = calloc(n, sizeof(float)), *b = calloc(n, sizeof(float));
  if (!a || !b) {{ fprintf(stderr, "out of memory\\n"); return 1; }}
  if (argv[4][0] != '-') {{
    FILE *f = fopen(argv[4], "rb");
    if (!f || fread(a, sizeof(float), n, f) != n) {{ fprintf(stderr, "cannot read %zu floats from %s\\n", n, argv[4]); return 1; }}
    fclose(f);
  }}
  for (int t = 0; t < steps; t++) {{ float *swap; step(a, b, h, w, rate); swap = a; a = b; b = swap; }}
  FILE *f = fopen(argv[5], "wb");
  if (!f || fwrite(a, sizeof(float), n, f) != n) {{ fprintf(stderr, "cannot write %s\\n", argv[5]); return 1; }}
  fclose(f);
  free(a); free(b);
  return 0;
}}
"""


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


# ------------------------------------------------------------------------- frame buffer

def to_framebuffer(state: torch.Tensor) -> np.ndarray:
    """A state [1, 12, H, W] as the shader's frame buffer: float32 [H, 3W, 4] (three RGBA tiles)."""
    if not isinstance(state, torch.Tensor) or state.ndim != 4 or state.shape[:2] != (1, CHANNELS):
        raise ValueError(f"expected one state shaped [1, 12, H, W], got "
                         f"{tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__}")
    return rearrange(state[0].detach().cpu().float(), "(tile rgba) h w -> h (tile w) rgba",
                     tile=TILES).contiguous().numpy()


def from_framebuffer(pixels: np.ndarray) -> torch.Tensor:
    """The inverse of ``to_framebuffer``: [H, 3W, 4] pixels back to a state [1, 12, H, W]."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] != 4 or pixels.shape[1] % TILES:
        raise ValueError(f"expected frame-buffer pixels shaped [H, 3W, 4], got {pixels.shape}")
    return rearrange(torch.from_numpy(pixels.copy()), "h (tile w) rgba -> 1 (tile rgba) h w", tile=TILES)


# ------------------------------------------------------------------------------- WebGL

def _base64_floats(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")


_PAGE = """\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 12px; background: #f7f7f7; color: #222; }
 canvas { image-rendering: pixelated; cursor: crosshair; border: 1px solid #999; touch-action: none; }
 .controls { margin: 8px 0; display: flex; gap: 14px; flex-wrap: wrap; align-items: center; font-size: 14px; }
 #result { white-space: pre-wrap; word-break: break-all; font-size: 10px; }
</style></head><body>
<div><b>__TITLE__</b>: every pixel runs the same __PARAMS__-parameter rule (WebGL2, all on your GPU).
Drag on the image to change the cells.</div>
<div class="controls">
 <label>steps per frame <input id="speed" type="range" min="0" max="16" value="__SPEED__">
  <span id="speed-value">__SPEED__</span></label>
 <label>mouse <select id="mouse-mode"><option value="0">erase</option><option value="1">disturb</option></select></label>
 <button id="reset">reset to the seed</button>
 <span id="info"></span>
</div>
<canvas id="view" width="__W__" height="__H__" style="width:__CSS_W__px;height:__CSS_H__px"></canvas>
<pre id="result"></pre>
<script id="config" type="application/json">__CONFIG__</script>
<script id="initial-state" type="text/plain">__STATE__</script>
<script id="rule" type="x-shader/x-fragment">__SHADER__</script>
<script>
"use strict";
const config = JSON.parse(document.getElementById("config").textContent);
const W = config.width, H = config.height;
const result = document.getElementById("result");
function fail(message) { result.textContent = "ERROR: " + message; throw new Error(message); }

const canvas = document.getElementById("view");
const gl = canvas.getContext("webgl2", {antialias: false, preserveDrawingBuffer: true});
if (!gl) fail("this browser has no WebGL2");
if (!gl.getExtension("EXT_color_buffer_float")) fail("WebGL2 without EXT_color_buffer_float (float render targets)");

const VERTEX = "#version 300 es\\nvoid main() { vec2 p = vec2(gl_VertexID & 1, gl_VertexID >> 1) * 4.0 - 1.0;" +
               " gl_Position = vec4(p, 0.0, 1.0); }";
// The ShaderToy buffer shader, unchanged, behind the inputs ShaderToy would provide.
const RULE = "#version 300 es\\nprecision highp float;\\nprecision highp int;\\n" +
  "uniform vec3 iResolution;\\nuniform int iFrame;\\nuniform vec4 iMouse;\\nuniform sampler2D iChannel0;\\n" +
  "uniform float uUpdateRate;\\nuniform int uMouseMode;\\n#define UPDATE_RATE uUpdateRate\\n#define MOUSE_MODE uMouseMode\\n" +
  "out vec4 fragColor;\\n" + document.getElementById("rule").textContent +
  "\\nvoid main() { mainImage(fragColor, gl_FragCoord.xy); }\\n";
const VIEW = "#version 300 es\\nprecision highp float;\\nuniform sampler2D state;\\nuniform vec2 size;\\nout vec4 color;\\n" +
  "void main() { ivec2 p = ivec2(gl_FragCoord.xy); p.y = int(size.y) - 1 - p.y;\\n" +
  " color = vec4(texelFetch(state, p, 0).rgb + 0.5, 1.0); }\\n";

function program(fragment) {
  const p = gl.createProgram();
  for (const [type, text] of [[gl.VERTEX_SHADER, VERTEX], [gl.FRAGMENT_SHADER, fragment]]) {
    const s = gl.createShader(type);
    gl.shaderSource(s, text); gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) fail("shader: " + gl.getShaderInfoLog(s));
    gl.attachShader(p, s);
  }
  gl.linkProgram(p);
  if (!gl.getProgramParameter(p, gl.LINK_STATUS)) fail("link: " + gl.getProgramInfoLog(p));
  return p;
}
const rule = program(RULE), view = program(VIEW);

function decodeFloats(text) {
  const bytes = Uint8Array.from(atob(text.trim()), ch => ch.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}
function encodeFloats(floats) {
  const bytes = new Uint8Array(floats.buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
  return btoa(text);
}

// Two float textures of 3W x H pixels (three RGBA tiles) and their frame buffers: read one, write the other.
const initial = document.getElementById("initial-state").textContent.trim();
const seed = initial ? decodeFloats(initial) : new Float32Array(3 * W * H * 4);
if (seed.length !== 3 * W * H * 4) fail("the initial state has " + seed.length + " values, expected " + 3 * W * H * 4);
const targets = [0, 1].map(() => {
  const texture = gl.createTexture();
  gl.bindTexture(gl.TEXTURE_2D, texture);
  gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32F, 3 * W, H, 0, gl.RGBA, gl.FLOAT, seed);
  for (const [key, value] of [[gl.TEXTURE_MIN_FILTER, gl.NEAREST], [gl.TEXTURE_MAG_FILTER, gl.NEAREST],
                              [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]])
    gl.texParameteri(gl.TEXTURE_2D, key, value);
  const framebuffer = gl.createFramebuffer();
  gl.bindFramebuffer(gl.FRAMEBUFFER, framebuffer);
  gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, texture, 0);
  if (gl.checkFramebufferStatus(gl.FRAMEBUFFER) !== gl.FRAMEBUFFER_COMPLETE) fail("float frame buffer incomplete");
  return {texture, framebuffer};
});
let current = 0, frame = 1;
const mouse = {x: 0, y: 0, down: false};

function step(updateRate) {
  const source = targets[current], target = targets[1 - current];
  gl.bindFramebuffer(gl.FRAMEBUFFER, target.framebuffer);
  gl.viewport(0, 0, 3 * W, H);
  gl.useProgram(rule);
  gl.activeTexture(gl.TEXTURE0);
  gl.bindTexture(gl.TEXTURE_2D, source.texture);
  gl.uniform1i(gl.getUniformLocation(rule, "iChannel0"), 0);
  gl.uniform3f(gl.getUniformLocation(rule, "iResolution"), 3 * W, H, 1);
  gl.uniform1i(gl.getUniformLocation(rule, "iFrame"), frame);
  gl.uniform4f(gl.getUniformLocation(rule, "iMouse"), mouse.x, mouse.y, mouse.down ? 1 : 0, 0);
  gl.uniform1f(gl.getUniformLocation(rule, "uUpdateRate"), updateRate);
  gl.uniform1i(gl.getUniformLocation(rule, "uMouseMode"), Number(document.getElementById("mouse-mode").value));
  gl.drawArrays(gl.TRIANGLES, 0, 3);
  current = 1 - current;
  frame += 1;
}
function draw() {
  gl.bindFramebuffer(gl.FRAMEBUFFER, null);
  gl.viewport(0, 0, W, H);
  gl.useProgram(view);
  gl.bindTexture(gl.TEXTURE_2D, targets[current].texture);
  gl.uniform1i(gl.getUniformLocation(view, "state"), 0);
  gl.uniform2f(gl.getUniformLocation(view, "size"), W, H);
  gl.drawArrays(gl.TRIANGLES, 0, 3);
}
function readState() {
  gl.bindFramebuffer(gl.FRAMEBUFFER, targets[current].framebuffer);
  const pixels = new Float32Array(3 * W * H * 4);
  gl.readPixels(0, 0, 3 * W, H, gl.RGBA, gl.FLOAT, pixels);
  return pixels;
}

if (config.testSteps > 0) {
  // Test mode: every value updates every step (no random mask, no mouse), then the state is read back.
  if (config.testMouse) {  // a held mouse at [column, row] of the grid, erasing
    mouse.x = config.testMouse[0]; mouse.y = H - 1 - config.testMouse[1]; mouse.down = true;
  }
  for (let t = 0; t < config.testSteps; t++) step(1.0);
  draw();
  result.textContent = "STATE:" + encodeFloats(readState());
} else {
  // Mouse position in cells, in the buffer shader's convention (y counted from the bottom).
  function track(event) {
    const box = canvas.getBoundingClientRect();
    mouse.x = Math.floor((event.clientX - box.left) / box.width * W);
    mouse.y = H - 1 - Math.floor((event.clientY - box.top) / box.height * H);
  }
  canvas.addEventListener("pointerdown", e => { mouse.down = true; track(e); canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener("pointermove", track);
  canvas.addEventListener("pointerup", () => { mouse.down = false; });
  const speed = document.getElementById("speed");
  speed.addEventListener("input", () => { document.getElementById("speed-value").textContent = speed.value; });
  document.getElementById("reset").addEventListener("click", () => {
    for (const target of targets) {
      gl.bindTexture(gl.TEXTURE_2D, target.texture);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32F, 3 * W, H, 0, gl.RGBA, gl.FLOAT, seed);
    }
  });
  let last = performance.now(), frames = 0;
  function animate(now) {
    for (let i = 0; i < Number(speed.value); i++) step(config.updateRate);
    draw();
    frames += 1;
    canvas.dataset.step = frame - 1;  // the number of steps run so far (read by the tests)
    if (now - last > 1000) {
      document.getElementById("info").textContent = `${(frames * 1000 / (now - last)).toFixed(0)} frames/s, step ${frame - 1}`;
      last = now; frames = 0;
    }
    requestAnimationFrame(animate);
  }
  requestAnimationFrame(animate);
}
</script></body></html>
"""


def webgl_page(rule: QuantizedRule, size: tuple[int, int] = (128, 128), zoom: int = 4, steps_per_frame: int = 4,
               initial_state: torch.Tensor | None = None, test_steps: int = 0,
               test_mouse: tuple[int, int] | None = None, title: str = "Neural cellular automaton") -> str:
    """A standalone HTML page (no network access) that runs the rule live with WebGL2.

    ``size`` is the grid (H, W); ``initial_state`` ([1, 12, H, W], default: the zero seed) is
    embedded in the page. With ``test_steps > 0`` the page runs that many deterministic steps (every
    value updates, no mouse) as soon as it loads and writes the final frame buffer, base64 float32,
    into ``<pre id="result">`` after ``STATE:`` (this is what ``browser_rollout`` reads back);
    ``test_mouse=(column, row)`` holds the mouse down on that cell during those steps (erase mode).
    """
    if not isinstance(rule, QuantizedRule):
        raise ValueError(f"webgl_page needs a QuantizedRule (from quantize(model)), got {type(rule).__name__}")
    if initial_state is not None:
        size = tuple(initial_state.shape[2:])
        state_text = _base64_floats(to_framebuffer(initial_state))
    else:
        state_text = ""
    height, width = size
    if height < 3 or width < 3:
        raise ValueError(f"the grid must be at least 3x3 cells, got {size}")
    config = {"width": width, "height": height, "testSteps": int(test_steps), "updateRate": rule.update_rate,
              "testMouse": [int(v) for v in test_mouse] if test_mouse is not None else None}
    replacements = {"__TITLE__": html.escape(title), "__PARAMS__": str(rule.parameter_count),
                    "__SPEED__": str(int(steps_per_frame)), "__W__": str(width), "__H__": str(height),
                    "__CSS_W__": str(width * zoom), "__CSS_H__": str(height * zoom),
                    "__CONFIG__": json.dumps(config), "__STATE__": state_text,
                    "__SHADER__": glsl_buffer_shader(rule)}
    page = _PAGE
    for key, value in replacements.items():
        page = page.replace(key, value)
    return page


def show_page(page: str, height: int = 620):
    """Display an HTML page live inside the notebook output (Jupyter and Colab), as an iframe ``srcdoc``."""
    from IPython.display import HTML, display

    frame = (f'<div><iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{int(height)}px;'
             f'border:0" sandbox="allow-scripts"></iframe></div>')  # a div: IPython warns on a bare iframe
    shown = HTML(frame)
    display(shown)
    return shown


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run"]


def find_chromium() -> str | None:
    """A Chromium or Chrome executable on the PATH (``$CHROMIUM`` first), or None."""
    for name in [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"]:
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def browser_rollout(rule: QuantizedRule, state: torch.Tensor, steps: int, browser: str | None = None,
                    timeout: float = 180, mouse: tuple[int, int] | None = None) -> torch.Tensor:
    """Run ``steps`` deterministic steps of the WebGL page in headless Chromium from ``state`` and read
    the final state back ([1, 12, H, W]). Software WebGL (SwiftShader) is used, so no GPU is needed.
    ``mouse=(column, row)`` holds the (erasing) mouse on that cell meanwhile."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium found (tried $CHROMIUM, chromium, chromium-browser, google-chrome); "
                                "install it, e.g. `apt-get install chromium`")
    page = webgl_page(rule, initial_state=state, test_steps=steps, test_mouse=mouse)
    with tempfile.TemporaryDirectory(prefix="dsos_browser_") as folder:
        page_path = Path(folder) / "page.html"
        page_path.write_text(page)
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={Path(folder) / 'profile'}", "--dump-dom",
                   page_path.as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    dom = result.stdout
    start = dom.find('<pre id="result">')
    text = dom[start:].split(">", 1)[1].split("</pre>", 1)[0] if start >= 0 else ""
    if not text.startswith("STATE:"):
        raise RuntimeError(f"the page did not return a state (exit code {result.returncode}); it said "
                           f"{text[:300]!r}; browser messages: {result.stderr[-800:]}")
    height, width = state.shape[2:]
    pixels = np.frombuffer(base64.b64decode(text[len("STATE:"):]), dtype="<f4").reshape(height, 3 * width, 4)
    return from_framebuffer(pixels)


# ------------------------------------------------------------------------------ parity

def parity_tolerance(model: NCA, state: torch.Tensor, steps: int, safety: float = 10.0,
                     floor: float = 1e-5) -> float:
    """The largest difference two correct float32 implementations of ``model`` may show after ``steps``
    deterministic steps from ``state``.

    Float32 rounds every sum; a different summation order (C loops, a GPU, another library) rounds
    differently, and the dynamics amplify those differences step by step. We measure that amplified
    rounding noise directly: the largest gap between float32 and float64 runs of the same model. A
    second float32 implementation lies about as far from the float64 run, so the gap between two of
    them is at most about twice that; ``safety`` (10) leaves room for unluckier orders, and ``floor``
    covers a gap that happens to be tiny.
    """
    with torch.no_grad():
        single, double = state.float(), state.double()
        model_double = NCA(**model.config()).double()
        model_double.load_state_dict(model.state_dict())
        model = model.float()
        ones = torch.ones(1)
        for _ in range(steps):
            single = model(single, mask=ones)
            double = model_double(double, mask=ones.double())
        gap = float((single.double() - double).abs().max())
    if not np.isfinite(gap):
        raise ValueError("the deterministic run diverged (NaN or infinity); parity cannot be checked on it")
    return max(safety * gap, floor)


# ----------------------------------------------------------------------------- circuit

def draw_circuit(rule: QuantizedRule, keep: int = 60, ax=None):
    """Draw the rule as a circuit: 12 state registers, their fixed filters, 12 adders and the feedback.

    Only the ``keep`` strongest of the 576 weights are drawn (all of them would be a grey blur):
    green lines for positive coefficients, red for negative, width proportional to the size; solid
    lines carry the positive part (relu) of an input, dashed lines its negative part. The blue loops
    under the diagram carry each adder's output back into its register. Returns the axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as CurvePath

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 9))
    weight = rule.weight_codes.astype(float) * rule.weight_scale
    rows = np.arange(CHANNELS)[::-1] * 1.0  # channel 0 at the top
    x_state, x_filter, x_sum = 0.0, 1.3, 5.0
    filter_rows = rows - 0.5  # filters sit between the registers, so register -> adder lines pass them by
    filter_names = ["∇²"] * 4 + ["∂x"] * 4 + ["∂y"] * 4

    def node(x, y, text, color):
        ax.add_patch(FancyBboxPatch((x - 0.32, y - 0.22), 0.64, 0.44, boxstyle="round,pad=0.02", fc=color,
                                    ec="black", lw=0.8, zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=8, zorder=4)

    # The 48 inputs of the 1x1 convolution: positive parts of (state, perception), then negative parts.
    sources = [(x_state, rows[c]) for c in range(CHANNELS)] + [(x_filter, filter_rows[c]) for c in range(CHANNELS)]
    sources = sources * 2
    strongest = np.argsort(np.abs(weight), axis=None)[::-1][:keep]
    largest = np.abs(weight).max() or 1.0
    for flat in strongest:
        out, i = divmod(int(flat), INPUTS)
        (x0, y0), value = sources[i], weight[out, i]
        ax.add_patch(FancyArrowPatch((x0 + 0.33, y0), (x_sum - 0.33, rows[out]), arrowstyle="-|>", mutation_scale=7,
                                     color="tab:green" if value > 0 else "tab:red", lw=0.4 + 2.6 * abs(value) / largest,
                                     ls="-" if i < 2 * CHANNELS else "--", alpha=0.75, zorder=1))
    bottom = rows.min() - 1.0
    for c in range(CHANNELS):
        node(x_state, rows[c], f"s{c}", "#cfe2ff")
        node(x_filter, filter_rows[c], f"{filter_names[c]} s{c}", "#eeeeee")
        node(x_sum, rows[c], f"Σ → Δs{c}", "#fff3c4")
        ax.add_patch(FancyArrowPatch((x_state + 0.2, rows[c] - 0.22), (x_filter - 0.33, filter_rows[c]),
                                     arrowstyle="-|>", mutation_scale=7, color="grey", lw=0.8, zorder=2))
        # Feedback: the adder's output goes round and back into register c (s <- s + Δs, next step).
        right, left, low = x_sum + 0.45 + 0.07 * c, x_state - 0.45 - 0.07 * c, bottom - 0.12 * c
        loop = CurvePath([(x_sum + 0.33, rows[c]), (right, rows[c]), (right, low), (left, low), (left, rows[c]),
                          (x_state - 0.33, rows[c])])
        ax.add_patch(FancyArrowPatch(path=loop, arrowstyle="-|>", mutation_scale=7, color="tab:blue", lw=0.7,
                                     alpha=0.55, zorder=0))
    ax.plot([], [], color="tab:green", lw=2, label="positive coefficient")
    ax.plot([], [], color="tab:red", lw=2, label="negative coefficient")
    ax.plot([], [], color="black", ls="--", lw=1, label="from the negative part of an input")
    ax.plot([], [], color="tab:blue", lw=1, alpha=0.6, label="feedback: s ← s + Δs every step")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8, frameon=False)
    ax.text(x_state, rows[0] + 0.6, "state\nregisters", ha="center", fontsize=9)
    ax.text(x_filter, rows[0] + 0.6, "fixed filters\n(3×3 neighbours)", ha="center", fontsize=9)
    ax.text(x_sum, rows[0] + 0.6, "adders\n(48 inputs + bias)", ha="center", fontsize=9)
    ax.set_xlim(x_state - 1.5, x_sum + 1.5)
    ax.set_ylim(bottom - 0.12 * CHANNELS - 0.3, rows[0] + 1.4)
    ax.set_axis_off()
    ax.set_title(f"the rule as a circuit: the {keep} strongest of {weight.size} weights")
    return ax
