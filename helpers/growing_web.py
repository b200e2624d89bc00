"""The growing rule of chapter 06 as a live browser page: grow the pattern, erase cells with the mouse,
watch it repair itself.

* ``growing_page(model, ...)``       a self-contained HTML page (plain JavaScript on a 2D canvas, no network)
  with the model's parameters and the starting state embedded (template: ``growing_web_page.html``)
* ``show_live(model, ...)``          that page live in a notebook output (Jupyter and Colab)
* ``damage_explorer(model, state)``  the fallback where a page cannot run: ipywidgets sliders that cut a
  disc out of a grown state and show it some steps later
* ``fire_mask(step, h, w, rate)``    the deterministic fire masks: a hash of (step, row, column) that the
  page's JavaScript computes identically, so that both sides can be compared
* ``reference_rollout(model, ...)``  the PyTorch run with those masks, and ``browser_rollout(model, ...)`` the
  page's run in headless Chromium, read back: the two must agree to float32 rounding
* ``erase(state, x, y, radius)``     the page's eraser in PyTorch
"""
from __future__ import annotations

import base64
import html
import json
import math
from importlib import resources

import numpy as np
import torch

from . import checks
from .export.template import PLACEHOLDER
from .export.webgl import run_test_page, show_page
from .growing_nca import ALPHA, GrowingNCA, seed_state

TEMPLATE = "growing_web_page.html"
DEFAULT_SIZE = 72                   # the chapter's grid: a 40-cell emoji and 16 empty cells on every side
GOLDEN = 0x9E3779B9                 # offsets the step before hashing (the page's GOLDEN)
MASK32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------- deterministic fire masks

def _mix32(h: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finaliser on uint32 values (numpy's uint32 products wrap mod 2**32, like Math.imul)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def fire_uniforms(step: int, height: int, width: int) -> np.ndarray:
    """``[height, width]`` float64 numbers in [0, 1), a pure function of (step, row, column): the hash chain
    mix32(mix32(mix32(step + GOLDEN) + row) + column), its top 24 bits divided by 2**24."""
    with np.errstate(over="ignore"):
        step_hash = _mix32(np.array([(step + GOLDEN) & MASK32], dtype=np.uint32))
        rows = _mix32(step_hash + np.arange(height, dtype=np.uint32))               # uint32: wraps mod 2**32
        cells = _mix32(rows[:, None] + np.arange(width, dtype=np.uint32)[None, :])
    return (cells >> np.uint32(8)).astype(np.float64) / 2.0 ** 24


def fire_mask(step: int, height: int, width: int, fire_rate: float) -> torch.Tensor:
    """``[1, 1, height, width]`` booleans: the cells that update at ``step`` in deterministic mode (each with
    probability ``fire_rate``, independently of the other cells and steps as far as a hash can tell). The
    page computes the same mask bit for bit, so ``model.step(state, fire=fire_mask(...))`` is its twin."""
    if not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}, {width}")
    if not 0.0 < fire_rate <= 1.0:
        raise ValueError(f"fire_rate must be in (0, 1], got {fire_rate}")
    mask = fire_uniforms(int(step), int(height), int(width)) < float(fire_rate)
    return torch.from_numpy(mask)[None, None]


def reference_rollout(model: GrowingNCA, state: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` steps of ``model`` in PyTorch with the deterministic fire masks of steps 0, 1, ..., the run
    that ``browser_rollout`` must reproduce."""
    _check_model(model)
    _check_state(state, model, batch=None)
    steps = checks.check_steps(steps)
    height, width = state.shape[2:]
    with torch.no_grad():
        for t in range(steps):
            state = model.step(state, fire=fire_mask(t, height, width, model.fire_rate).to(state.device))
    return state


def erase(state: torch.Tensor, x: float, y: float, radius: float) -> torch.Tensor:
    """A copy of ``state`` with all channels set to 0 in the cells whose centre lies within ``radius`` cells of
    column ``x``, row ``y`` (cell centres at integer coordinates): the page's eraser."""
    if not isinstance(state, torch.Tensor) or state.ndim != 4:
        shape = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
        raise ValueError(f"the state must be a tensor [batch, channels, height, width], got {shape}")
    for name, value in (("x", x), ("y", y), ("radius", radius)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number (in cells), got {value!r}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0 cells, got {radius!r}")
    rows = torch.arange(state.shape[2], device=state.device, dtype=torch.float64)[:, None]
    columns = torch.arange(state.shape[3], device=state.device, dtype=torch.float64)[None, :]
    disc = (columns - x) ** 2 + (rows - y) ** 2 <= float(radius) ** 2
    return state * (~disc).to(state.dtype)


# ---------------------------------------------------------------------------- the page

def _check_model(model) -> None:
    if not isinstance(model, GrowingNCA):
        raise ValueError(f"expected a helpers.growing_nca.GrowingNCA, got {type(model).__name__}")


def _check_state(state, model: GrowingNCA, batch: int | None = 1) -> None:
    shape = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
    wanted = f"[{batch if batch else 'batch'}, {model.channels}, height, width]"
    if (not isinstance(state, torch.Tensor) or state.dim() != 4 or state.shape[1] != model.channels
            or (batch is not None and state.shape[0] != batch)):
        raise ValueError(f"the state must be a tensor {wanted}, got {shape}")
    if not state.is_floating_point():
        raise ValueError(f"the state must hold floating point values, got {state.dtype}")
    if state.shape[2] < 3 or state.shape[3] < 3:
        raise ValueError(f"the grid must be at least 3x3 cells, got {shape}")
    if not torch.isfinite(state).all():
        raise ValueError("the state holds NaN or infinite values")


def rule_vector(model: GrowingNCA) -> np.ndarray:
    """The page's parameters as one float32 vector: the perception filters ``[3C, 3, 3]``, then ``sense``
    (weight ``[hidden, 3C]``, bias) and ``act`` (weight ``[C, hidden]``, bias)."""
    parts = [model.filters, model.sense.weight, model.sense.bias, model.act.weight, model.act.bias]
    return torch.cat([part.detach().reshape(-1).cpu().float() for part in parts]).numpy()


def _base64(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")


def _fill(**values: object) -> str:
    """The template with every ``__KEY__`` replaced (helpers.export.template's rules: all or nothing)."""
    text = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    expected = set(PLACEHOLDER.findall(text))
    if expected != set(values):
        raise KeyError(f"{TEMPLATE} has the placeholders {sorted(expected)}, but values were given for "
                       f"{sorted(values)}")
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), text)


def growing_page(model: GrowingNCA, state: torch.Tensor | None = None, zoom: int = 8, steps_per_frame: int = 1,
                 deterministic: bool = False, size: int | tuple[int, int] = DEFAULT_SIZE, radius: int | None = None,
                 test_steps: int = 0, title: str = "Growing neural cellular automaton") -> str:
    """A standalone HTML page (no network access) that runs ``model`` live on a canvas, ``zoom`` screen
    pixels per cell, ``steps_per_frame`` steps per animation frame (a slider changes it).

    ``state`` ([1, C, H, W]) is where it starts (default: the seed of a ``size`` grid); "reset to seed" goes
    back to the seed, and a second button, "back to the start", back to ``state``: it is shown only when
    ``state`` is not the seed (e.g. a grown pattern), where the two buttons differ. Dragging the mouse
    erases a disc of cells (radius ``radius`` cells, default about an eighth of the grid; a slider changes
    it). The fire masks come from ``Math.random``, or with ``deterministic`` from ``fire_mask`` (the same
    masks after every reset).
    ``test_steps > 0`` (implies ``deterministic``): no animation; the page runs that many steps as it loads
    and writes the final state, base64 float32, channels last, after ``STATE:`` into ``<pre id="result">``.
    """
    _check_model(model)
    if state is None:
        state = seed_state(1, size, channels=model.channels)
    _check_state(state, model)
    for name, value, low in [("zoom", zoom, 1), ("steps_per_frame", steps_per_frame, 1), ("test_steps", test_steps, 0)]:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    height, width = state.shape[2:]
    max_radius = max(2, min(height, width) // 2)
    radius = max(1, round(min(height, width) / 8)) if radius is None else radius
    if not isinstance(radius, (int, np.integer)) or not 1 <= radius <= max_radius:
        raise ValueError(f"radius must be an integer in [1, {max_radius}] for this grid, got {radius!r}")
    config = {"width": width, "height": height, "channels": model.channels, "hidden": model.hidden, "alpha": ALPHA,
              "fireRate": float(model.fire_rate), "aliveThreshold": float(model.alive_threshold),
              "deterministic": bool(deterministic or test_steps > 0), "testSteps": int(test_steps),
              "startsAtSeed": starts_at_seed(state, model)}
    weights = rule_vector(model)
    # The state is written channels last, one cell's channels side by side, as the page loops over cells.
    cells = state[0].detach().cpu().float().permute(1, 2, 0).numpy()
    return _fill(TITLE=html.escape(title), PARAMETERS=f"{sum(p.numel() for p in model.parameters()):,}",
                 WIDTH=width, HEIGHT=height, CSS_WIDTH=width * zoom, CSS_HEIGHT=height * zoom,
                 SPEED=min(int(steps_per_frame), 16), RADIUS=radius, MAX_RADIUS=max_radius,
                 CONFIG=json.dumps(config), WEIGHTS=_base64(weights), STATE=_base64(cells))


def starts_at_seed(state: torch.Tensor, model: GrowingNCA) -> bool:
    """Whether ``state`` is exactly the seed of its grid (the page then hides "back to the start")."""
    return torch.equal(state.detach().cpu().float(), seed_state(1, tuple(state.shape[2:]), channels=model.channels))


def show_live(model: GrowingNCA, state: torch.Tensor | None = None, **options):
    """Show ``growing_page(model, state, **options)`` live in the notebook output (an iframe, Jupyter and Colab)."""
    if state is None:
        state = seed_state(1, options.pop("size", DEFAULT_SIZE), channels=model.channels)
    page = growing_page(model, state, **options)
    return show_page(page, height=state.shape[2] * options.get("zoom", 8) + 130)   # + the controls' lines


# ---------------------------------------------------------------------------- headless Chromium

def browser_rollout(model: GrowingNCA, state: torch.Tensor, steps: int, browser: str | None = None,
                    timeout: float = 120) -> torch.Tensor:
    """Run ``steps`` deterministic steps of the page in headless Chromium from ``state`` ([1, C, H, W]) and
    read the final state back ([1, C, H, W], float32); ``reference_rollout`` is its PyTorch twin."""
    _check_model(model)
    _check_state(state, model)
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    raw = run_test_page(growing_page(model, state, test_steps=int(steps)), steps, browser, timeout)
    height, width = state.shape[2:]
    values = np.frombuffer(raw, dtype="<f4")
    if values.size != height * width * model.channels:
        raise RuntimeError(f"the page returned {values.size} values, expected {height * width * model.channels}")
    cells = torch.from_numpy(values.copy()).reshape(height, width, model.channels)
    return cells.permute(2, 0, 1).unsqueeze(0).contiguous()


# ---------------------------------------------------------------------------- the widget fallback

def damage_explorer(model: GrowingNCA, grown_state: torch.Tensor, max_steps: int = 200, steps: int = 50,
                    radius: int | None = None):
    """Sliders instead of a mouse (where the page cannot run): cut a disc (centre x, y, radius in cells) out
    of ``grown_state`` ([1, C, H, W]) and show the damaged state next to it ``steps`` steps later (the
    deterministic fire masks, so a setting always shows the same picture). Returns the ipywidgets
    ``interactive``; its ``result`` holds the last ``{"damaged": ..., "after": ...}``."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    from .growing_nca import to_rgb

    _check_model(model)
    _check_state(grown_state, model)
    if not 0 <= steps <= max_steps:
        raise ValueError(f"need 0 <= steps <= max_steps, got {steps}, {max_steps}")
    height, width = grown_state.shape[2:]
    grown = grown_state.detach().float().to(model.filters.device)
    largest = max(height, width) // 2
    radius = min(largest, max(1, round(min(height, width) / 6)) if radius is None else radius)

    def slider(description, value, low, high):
        return widgets.IntSlider(value=value, min=low, max=high, description=description, continuous_update=False)

    last = {}                   # the last setting's states: a redraw of the same setting runs no steps

    def show(x, y, radius, steps):
        if last.get("setting") != (x, y, radius, steps):
            damaged = erase(grown, x, y, radius)
            last.update(setting=(x, y, radius, steps), damaged=damaged, after=reference_rollout(model, damaged, steps))
        damaged, after = last["damaged"], last["after"]
        figure, axes = plt.subplots(1, 2, figsize=(7, 3.6))
        for ax, image, caption in [(axes[0], damaged, "damaged"), (axes[1], after, f"{steps} steps later")]:
            ax.imshow(to_rgb(image)[0].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_title(caption)
            ax.set_axis_off()
        display(figure)
        plt.close(figure)        # shown once, by display, in any matplotlib backend
        return {"damaged": damaged, "after": after}

    explorer = widgets.interactive(show, x=slider("centre x", width // 2, 0, width - 1),
                                   y=slider("centre y", height // 2, 0, height - 1),
                                   radius=slider("radius", radius, 1, largest),
                                   steps=slider("steps", steps, 0, max_steps))
    if explorer.result is None:     # ipywidgets 7 (Colab's) draws the first view only when displayed; 8 at once
        explorer.update()           # now, so .result is there either way (displaying it then only redraws)
    return explorer
