"""Live widgets of chapter 02: drag a point of a ``toys.DragToy`` and its solver moves the parameters.

* ``make_drag_widget(toy)``  the live toy: the mouse canvas when anywidget is installed, else sliders.
  It returns an object with ``view`` (display it) and ``on_drag(index, x, y)`` (the event callback,
  which the notebooks also call directly, so the tests exercise it without a mouse).
* ``CanvasDrag``             the mouse version: an anywidget canvas (JavaScript in ``CANVAS_JS``);
  the browser sends the dragged point and the mouse position, Python runs ``toy.step`` and sends
  the new points back.
* ``SliderDrag``             the fallback that needs only ipywidgets: a point menu and two sliders,
  the drawing rendered by ``toys.DrawingRenderer``.
* ``has_anywidget()``        whether the mouse canvas can be used.

anywidget, traitlets, ipywidgets and Colab's ``google.colab`` are optional: each is imported only
when the widget that needs it is made.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Callable

from . import checks, toys


def has_anywidget() -> bool:
    return importlib.util.find_spec("anywidget") is not None


# The canvas, as an anywidget ES module: it draws the edges and handles it is sent, and while a
# handle is held it sends {index, x, y, t, seq} in drawing units. Flow control: a drag is sent only
# when Python has acknowledged the previous one (``ack`` = its ``seq``); moves in between replace
# each other, so a slow solver (the tree and the dragon take 20-50 ms per event) never builds a queue.
# The queue is plain JavaScript between the two marker lines, so tests run it under Node.js.
CANVAS_JS = r"""
// --- drag queue
class DragQueue {
  constructor(send) { this.send = send; this.pending = null; this.inFlight = null; this.sequence = 0; }
  move(message) { this.pending = message; this.flush(); }         // the newest move replaces the older
  flush() {
    if (this.inFlight !== null || this.pending === null) return;
    this.sequence += 1; this.inFlight = this.sequence;
    const message = { ...this.pending, seq: this.sequence }; this.pending = null; this.send(message);
  }
  acknowledged(seq) { if (seq === this.inFlight) { this.inFlight = null; this.flush(); } }
}
// --- end drag queue
function render({ model, el }) {
  const size = model.get("size"), ratio = window.devicePixelRatio || 1;   // sharp on HiDPI screens
  const canvas = document.createElement("canvas");
  canvas.width = size * ratio; canvas.height = size * ratio;
  canvas.style.width = size + "px"; canvas.style.height = size + "px";
  canvas.style.border = "1px solid #ccc"; canvas.style.touchAction = "none"; canvas.style.cursor = "crosshair";
  canvas.style.background = "#ffffff";                 // readable in a dark theme too: its own white paper
  el.appendChild(canvas);
  const info = document.createElement("div"); info.style.font = "12px sans-serif"; el.appendChild(info);
  const ctx = canvas.getContext("2d"); ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const toPixel = ([x, y]) => { const [x0, x1, y0, y1] = model.get("bounds");
    return [(x - x0) / (x1 - x0) * size, (y1 - y) / (y1 - y0) * size]; };
  const toWorld = (px, py) => { const [x0, x1, y0, y1] = model.get("bounds");
    return [x0 + px / size * (x1 - x0), y1 - py / size * (y1 - y0)]; };
  let grabbed = null;
  const queue = new DragQueue((message) => { model.set("drag", message); model.save_changes(); });
  model.on("change:ack", () => queue.acknowledged(model.get("ack")));
  function draw() {
    const points = model.get("points"), colors = model.get("edge_colors");
    ctx.clearRect(0, 0, size, size);
    ctx.lineWidth = 2; ctx.lineCap = "round";
    model.get("edges").forEach(([a, b], k) => {
      ctx.strokeStyle = colors[k] || "#2b4c7e"; ctx.beginPath();
      ctx.moveTo(...toPixel(points[a])); ctx.lineTo(...toPixel(points[b])); ctx.stroke(); });
    model.get("handles").forEach((i) => { const [px, py] = toPixel(points[i]);
      ctx.fillStyle = i === grabbed ? "#d62728" : "#2b4c7e";
      ctx.beginPath(); ctx.arc(px, py, i === grabbed ? 6 : 3.5, 0, 2 * Math.PI); ctx.fill(); });
    const target = model.get("target");
    if (target.length === 2) { const [px, py] = toPixel(target); ctx.strokeStyle = "#d62728";
      ctx.beginPath(); ctx.moveTo(px - 7, py); ctx.lineTo(px + 7, py);
      ctx.moveTo(px, py - 7); ctx.lineTo(px, py + 7); ctx.stroke(); }
    info.textContent = model.get("message");
  }
  function position(event) { const r = canvas.getBoundingClientRect();
    return [(event.clientX - r.left) * size / r.width, (event.clientY - r.top) * size / r.height]; }
  canvas.addEventListener("pointerdown", (event) => {
    const [px, py] = position(event); let best = null, bestDistance = 12;
    model.get("handles").forEach((i) => { const [hx, hy] = toPixel(model.get("points")[i]);
      const d = Math.hypot(hx - px, hy - py); if (d < bestDistance) { best = i; bestDistance = d; } });
    if (best === null) return;
    grabbed = best; canvas.setPointerCapture(event.pointerId);
    model.set("grab", grabbed); model.save_changes(); draw(); });
  canvas.addEventListener("pointermove", (event) => {
    if (grabbed === null) return;
    const [x, y] = toWorld(...position(event));
    queue.move({ index: grabbed, x: x, y: y, t: event.timeStamp }); });
  const release = () => { grabbed = null; model.set("grab", -1); model.save_changes(); draw(); };
  canvas.addEventListener("pointerup", release); canvas.addEventListener("pointercancel", release);
  ["points", "target", "message", "edge_colors"].forEach((name) => model.on("change:" + name, draw));
  draw();
}
export default { render };
"""

_CANVAS_CLASS = None


def _canvas_class():
    """The anywidget class of the mouse canvas, built on first use (anywidget is optional)."""
    global _CANVAS_CLASS
    if _CANVAS_CLASS is None:
        import anywidget
        import traitlets

        class DragCanvas(anywidget.AnyWidget):
            _esm = CANVAS_JS
            points = traitlets.List().tag(sync=True)
            edges = traitlets.List().tag(sync=True)
            edge_colors = traitlets.List().tag(sync=True)
            handles = traitlets.List().tag(sync=True)
            bounds = traitlets.List().tag(sync=True)
            target = traitlets.List().tag(sync=True)
            message = traitlets.Unicode("").tag(sync=True)
            size = traitlets.Int(320).tag(sync=True)
            grab = traitlets.Int(-1).tag(sync=True)
            drag = traitlets.Dict().tag(sync=True)
            ack = traitlets.Int(0).tag(sync=True)     # the seq of the last drag Python has answered

        _CANVAS_CLASS = DragCanvas
    return _CANVAS_CLASS


class _LiveToy:
    """What both widgets share: the toy, the solver call per event, and the status line."""

    def __init__(self, toy: toys.DragToy, steps_per_event: int, edge_colors: Callable[[int], list] | None):
        if steps_per_event < 1:
            raise ValueError(f"steps_per_event must be at least 1, got {steps_per_event}")
        self.toy, self.steps_per_event, self.edge_colors = toy, steps_per_event, edge_colors
        self.events = 0

    def on_drag(self, index: int, x: float, y: float) -> float:
        """The callback of one mouse (or slider) event: a few solver steps toward (x, y)."""
        distance = self.toy.step(index, (x, y), self.steps_per_event)
        self.events += 1
        self.redraw(index, (x, y), distance)
        return distance

    def colors(self, index: int | None) -> list:
        if self.edge_colors is None or index is None:
            return [toys.PALETTE["edge"]] * len(self.toy.edges)
        return self.edge_colors(index)

    def redraw(self, index, target, distance) -> None:
        raise NotImplementedError


class CanvasDrag(_LiveToy):
    """The mouse version: an anywidget canvas; drag a dot, Python runs the solver, the canvas redraws."""

    def __init__(self, toy: toys.DragToy, steps_per_event: int = 3, edge_colors=None, size: int = 320):
        super().__init__(toy, steps_per_event, edge_colors)
        self.view = _canvas_class()(points=toy.points().tolist(), edges=toy.edges.tolist(),
                                    edge_colors=self.colors(None), handles=list(toy.handles), bounds=toy.bounds,
                                    target=[], size=size, message=f"{toy.name}: drag a dot")
        self.view.observe(self._on_drag_message, names="drag")
        self.view.observe(self._on_grab, names="grab")

    def _on_grab(self, change) -> None:
        if change["new"] >= 0:
            self.view.edge_colors = self.colors(change["new"])

    def _on_drag_message(self, change) -> None:
        message = change["new"]
        if message:
            self.on_drag(int(message["index"]), float(message["x"]), float(message["y"]))
            # Only now may the canvas send its next drag (see DragQueue in CANVAS_JS).
            self.view.ack = int(message.get("seq", 0))

    def redraw(self, index, target, distance) -> None:
        self.view.points = self.toy.points().tolist()
        self.view.target = [float(target[0]), float(target[1])]
        self.view.message = f"{self.toy.name}: point {index}, distance to the mouse {distance:.2e}"


class SliderDrag(_LiveToy):
    """The fallback that needs only ipywidgets: choose a point, move the target with two sliders."""

    def __init__(self, toy: toys.DragToy, steps_per_event: int = 10, edge_colors=None, size_inches: float = 3.2):
        import ipywidgets

        super().__init__(toy, steps_per_event, edge_colors)
        x0, x1, y0, y1 = toy.bounds
        self.renderer = toys.DrawingRenderer(toy.bounds, panel_inches=size_inches)
        start = toy.handles[-1]
        point = toy.points()[start]
        self.point_menu = ipywidgets.Dropdown(options=toy.handles, value=start, description="point")
        # continuous_update=False: one solver call when the slider is released, not one per pixel moved
        self.x = ipywidgets.FloatSlider(value=float(point[0]), min=x0, max=x1, step=(x1 - x0) / 200,
                                        description="target x", continuous_update=False)
        self.y = ipywidgets.FloatSlider(value=float(point[1]), min=y0, max=y1, step=(y1 - y0) / 200,
                                        description="target y", continuous_update=False)
        self.image = ipywidgets.Image(format="png", value=self.renderer.png([toys.toy_panel(toy)]))
        self.status = ipywidgets.Label(f"{toy.name}: choose a point, then move the target")
        for slider in (self.x, self.y):
            slider.observe(self._on_slider, names="value")
        self.point_menu.observe(self._on_point, names="value")
        self.view = ipywidgets.HBox([self.image, ipywidgets.VBox([self.point_menu, self.x, self.y, self.status])])

    def _on_slider(self, change) -> None:
        self.on_drag(self.point_menu.value, self.x.value, self.y.value)

    def _on_point(self, change) -> None:
        """A new point is chosen: the sliders jump to where it is, without a solver step. (Not inside
        ``hold_trait_notifications``: that would deliver the held changes to the re-attached observer.)"""
        point = self.toy.points()[change["new"]]
        for slider in (self.x, self.y):
            slider.unobserve(self._on_slider, names="value")
        self.x.value, self.y.value = float(point[0]), float(point[1])
        for slider in (self.x, self.y):
            slider.observe(self._on_slider, names="value")

    def redraw(self, index, target, distance) -> None:
        panel = toys.toy_panel(self.toy, index, target)
        panel["edge_colors"] = self.colors(index)
        self.image.value = self.renderer.png([panel])
        self.status.value = f"point {index}: distance to the target {distance:.2e}"


def make_drag_widget(toy: toys.DragToy, prefer: str = "canvas", edge_colors=None, steps_per_event: int | None = None,
                     verbose: bool = True) -> _LiveToy:
    """The live toy: the mouse canvas when anywidget is installed (``prefer="canvas"``), else sliders.

    Returns an object with ``view`` (display it) and ``on_drag(index, x, y)`` (the event callback).
    """
    if not isinstance(toy, toys.DragToy):
        raise TypeError(f"make_drag_widget needs a helpers.toys.DragToy (e.g. one of chapter 02's toys), got "
                        f"{type(toy).__name__}")
    if steps_per_event is not None:
        checks.check_count("steps_per_event", steps_per_event, 1, "steps_per_event=3")
    if prefer not in ("canvas", "sliders"):
        raise ValueError(f"prefer must be 'canvas' or 'sliders', got {prefer!r}")
    if prefer == "canvas" and has_anywidget():
        enable_colab_widgets()
        return CanvasDrag(toy, steps_per_event or 3, edge_colors)
    if prefer == "canvas" and verbose:
        print("anywidget is not installed (pip install anywidget), so this toy uses sliders instead of the mouse")
    return SliderDrag(toy, steps_per_event or 10, edge_colors)


def enable_colab_widgets() -> None:
    """Colab shows third-party widgets only after enabling its custom widget manager; elsewhere a no-op."""
    if "google.colab" in sys.modules:
        from google.colab import output  # available only inside Colab

        output.enable_custom_widget_manager()
