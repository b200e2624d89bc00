"""The rule live in a browser: a standalone WebGL2 page (``templates/page.html``), shown in a notebook
or run in headless Chromium to read its state back."""
from __future__ import annotations

import base64
import html
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import template
from .glsl import from_framebuffer, glsl_buffer_shader, to_framebuffer
from .quantize import STATE_CODE, QuantizedRule, check_state_bits, quantize_state, require_rule

# Headless, software WebGL (SwiftShader: no GPU needed), and nothing that reaches the network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run"]


def _base64_state(state: torch.Tensor, state_bits: int) -> str:
    """The frame buffer of ``state`` as the page's texture data, base64: float32 values, or for the
    8-bit state the bytes b = code + 127 (RGBA8 reads them as b / 255; the shader decodes the value)."""
    pixels = to_framebuffer(state)
    if state_bits == 8:
        data = (np.round(np.clip(pixels, -1, 1) * STATE_CODE) + STATE_CODE).astype(np.uint8)
    else:
        data = np.ascontiguousarray(pixels, dtype="<f4")
    return base64.b64encode(data.tobytes()).decode("ascii")


def webgl_page(rule: QuantizedRule, size: tuple[int, int] = (128, 128), zoom: int = 4, steps_per_frame: int = 4,
               initial_state: torch.Tensor | None = None, test_steps: int = 0,
               test_mouse: tuple[int, int] | None = None, title: str = "Neural cellular automaton",
               state_bits: int = 32) -> str:
    """A standalone HTML page (no network access) that runs the rule live with WebGL2.

    ``size`` is the grid (H, W); ``initial_state`` ([1, 12, H, W], default: the zero seed) is
    embedded in the page. With ``test_steps > 0`` the page runs that many deterministic steps (every
    value updates, no mouse) as soon as it loads and writes the final frame buffer, base64 float32,
    into ``<pre id="result">`` after ``STATE:`` (this is what ``browser_rollout`` reads back);
    ``test_mouse=(column, row)`` holds the mouse down on that cell during those steps (erase mode).
    ``state_bits=8`` keeps the state in RGBA8 textures, 8 bits per value (``glsl_buffer_shader(rule, 8)``;
    no float render targets needed, so it also runs where WebGL2 lacks EXT_color_buffer_float); the
    ``initial_state`` is then rounded to the 255 levels first.
    """
    require_rule(rule, "webgl_page")
    check_state_bits(state_bits)
    if initial_state is not None:
        size = tuple(initial_state.shape[2:])
        state_text = _base64_state(initial_state, state_bits)
    else:
        state_text = ""
    height, width = size
    if height < 3 or width < 3:
        raise ValueError(f"the grid must be at least 3x3 cells, got {size}")
    config = {"width": width, "height": height, "testSteps": int(test_steps), "updateRate": rule.update_rate,
              "stateBits": state_bits,
              "testMouse": [int(v) for v in test_mouse] if test_mouse is not None else None}
    return template.fill(
        "page.html",
        TITLE=html.escape(title), PARAMETERS=rule.parameter_count, SPEED=int(steps_per_frame),
        WIDTH=width, HEIGHT=height, CSS_WIDTH=width * zoom, CSS_HEIGHT=height * zoom,
        CONFIG=json.dumps(config), STATE=state_text, SHADER=glsl_buffer_shader(rule, state_bits),
    )


def show_page(page: str, height: int = 620):
    """Display an HTML page live inside the notebook output (Jupyter and Colab), as an iframe ``srcdoc``."""
    from IPython.display import HTML, display

    frame = (f'<div><iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{int(height)}px;'
             f'border:0" sandbox="allow-scripts"></iframe></div>')  # a div: IPython warns on a bare iframe
    shown = HTML(frame)
    display(shown)
    return shown


def find_chromium() -> str | None:
    """A Chromium or Chrome executable on the PATH (``$CHROMIUM`` first), or None."""
    for name in [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"]:
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def run_test_page(page: str, steps: int, browser: str | None = None, timeout: float = 180) -> bytes:
    """Open a test page (one that runs ``steps`` steps as it loads and writes ``STATE:`` and base64 bytes
    into ``<pre id="result">``) in headless Chromium; return those bytes. Chapter 04's WebGL page and
    chapter 06's growing page both answer this way."""
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium found (tried $CHROMIUM, chromium, chromium-browser, google-chrome, "
                                "chrome); install it, e.g. `apt-get install chromium`")
    with tempfile.TemporaryDirectory(prefix="dsos_browser_") as folder:
        page_path = Path(folder) / "page.html"
        page_path.write_text(page, encoding="utf-8")
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={Path(folder) / 'profile'}", "--dump-dom",
                   page_path.as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"Chromium did not finish the page within {timeout} s") from error
    dom = result.stdout
    start = dom.find('<pre id="result">')
    text = dom[start:].split(">", 1)[1].split("</pre>", 1)[0] if start >= 0 else ""
    if text.startswith("NONFINITE:"):
        raise RuntimeError(f"the page's state holds {text[len('NONFINITE:'):].split(chr(10))[0]} values that are NaN "
                           f"or infinite after {steps} steps: the rule diverged")
    if not text.startswith("STATE:"):
        raise RuntimeError(f"the page did not return a state (exit code {result.returncode}); it said "
                           f"{text[:300]!r}; browser messages: {result.stderr[-800:]}")
    return base64.b64decode(text[len("STATE:"):])


def browser_rollout(rule: QuantizedRule, state: torch.Tensor, steps: int, browser: str | None = None,
                    timeout: float = 180, mouse: tuple[int, int] | None = None, state_bits: int = 32) -> torch.Tensor:
    """Run ``steps`` deterministic steps of the WebGL page in headless Chromium from ``state`` and read
    the final state back ([1, 12, H, W], float32). Software WebGL (SwiftShader) is used, so no GPU is
    needed. ``mouse=(column, row)`` holds the (erasing) mouse on that cell meanwhile. ``state_bits=8``:
    the page keeps the state in RGBA8 textures and the bytes read back are decoded to their levels."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    raw = run_test_page(webgl_page(rule, initial_state=state, test_steps=steps, test_mouse=mouse,
                                   state_bits=state_bits), steps, browser, timeout)
    height, width = state.shape[2:]
    if state_bits == 8:  # byte b -> code b - 127 -> value code / 127, as quantize_state computes it
        codes = np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - STATE_CODE
        return quantize_state(from_framebuffer(codes.reshape(height, 3 * width, 4) / STATE_CODE))
    return from_framebuffer(np.frombuffer(raw, dtype="<f4").reshape(height, 3 * width, 4))
