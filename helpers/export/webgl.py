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
from .quantize import QuantizedRule, require_rule

# Headless, software WebGL (SwiftShader: no GPU needed), and nothing that reaches the network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run"]


def _base64_floats(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")


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
    require_rule(rule, "webgl_page")
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
    return template.fill(
        "page.html",
        TITLE=html.escape(title), PARAMETERS=rule.parameter_count, SPEED=int(steps_per_frame),
        WIDTH=width, HEIGHT=height, CSS_WIDTH=width * zoom, CSS_HEIGHT=height * zoom,
        CONFIG=json.dumps(config), STATE=state_text, SHADER=glsl_buffer_shader(rule),
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
    if text.startswith("NONFINITE:"):
        raise RuntimeError(f"the page's state holds {text[len('NONFINITE:'):].split(chr(10))[0]} values that are NaN "
                           f"or infinite after {steps} steps: the rule diverged")
    if not text.startswith("STATE:"):
        raise RuntimeError(f"the page did not return a state (exit code {result.returncode}); it said "
                           f"{text[:300]!r}; browser messages: {result.stderr[-800:]}")
    height, width = state.shape[2:]
    pixels = np.frombuffer(base64.b64decode(text[len("STATE:"):]), dtype="<f4").reshape(height, 3 * width, 4)
    return from_framebuffer(pixels)
