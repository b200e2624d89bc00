"""Tests of helpers.widgets: the live drag toys (mouse canvas and slider fallback) and their callbacks."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import toys, widgets

F64 = torch.float64


def make_chain(n=4, pinned=None):
    return toys.DragToy("chain", lambda a: toys.chain_points(a, 1.0), torch.full((n,), 0.3, dtype=F64),
                        toys.chain_edges(n), handles=range(1, n + 1), pinned=pinned)


def test_slider_widget_callback_moves_the_point():
    pytest.importorskip("ipywidgets")
    toy = make_chain(4)
    live = widgets.make_drag_widget(toy, prefer="sliders")
    assert isinstance(live, widgets.SliderDrag)
    before = toy.distance(4, [1.0, 2.0])
    image_before = live.image.value
    after = live.on_drag(4, 1.0, 2.0)
    assert after < before and live.events == 1
    assert live.image.value != image_before  # the drawing was re-rendered
    assert "point 4" in live.status.value


def test_slider_moves_run_the_solver_and_choosing_a_point_does_not():
    pytest.importorskip("ipywidgets")
    toy = make_chain(4)
    live = widgets.make_drag_widget(toy, prefer="sliders", steps_per_event=5)
    start = toy.params.detach().clone()
    live.point_menu.value = 2  # the sliders jump to point 2, without a solver step
    assert live.events == 0 and torch.equal(toy.params.detach(), start)
    assert (live.x.value, live.y.value) == pytest.approx(toy.points()[2].tolist(), abs=1e-9)
    target = [live.x.value - 0.3, live.y.value]  # within reach of p2
    before = toy.distance(2, target)
    live.x.value = target[0]  # moving a slider is one event for the chosen point
    assert live.events == 1 and not torch.equal(toy.params.detach(), start)
    assert toy.distance(2, target) < before / 10


def test_canvas_widget_callback_moves_the_point():
    pytest.importorskip("anywidget")
    toy = make_chain(4)
    live = widgets.make_drag_widget(toy, prefer="canvas")
    assert isinstance(live, widgets.CanvasDrag)
    assert live.view._esm == widgets.CANVAS_JS and "export default" in widgets.CANVAS_JS
    before = toy.distance(4, [1.0, 2.0])
    live.view.drag = {"index": 4, "x": 1.0, "y": 2.0, "t": 1}  # what the browser sends
    assert toy.distance(4, [1.0, 2.0]) < before
    assert live.view.points == toy.points().tolist()
    assert live.view.target == [1.0, 2.0] and "point 4" in live.view.message


def test_canvas_grab_colours_the_pinned_segments():
    pytest.importorskip("anywidget")
    toy = make_chain(4, pinned=lambda k: torch.arange(4) >= k)
    grey, blue = toys.PALETTE["pinned"], toys.PALETTE["edge"]
    live = widgets.make_drag_widget(
        toy, edge_colors=lambda k: [grey if p else blue for p in (torch.arange(4) >= k).tolist()])
    assert live.view.edge_colors == [blue] * 4  # nothing held yet
    live.view.grab = 2  # the browser says: point 2 is held
    assert live.view.edge_colors == [blue, blue, grey, grey]
    before = toy.params.detach().clone()
    live.view.drag = {"index": 2, "x": -0.5, "y": 1.5, "t": 2}
    assert torch.equal(toy.params.detach()[2:], before[2:])  # the pinned angles did not move


def test_without_anywidget_the_toy_falls_back_to_sliders(monkeypatch, capsys):
    pytest.importorskip("ipywidgets")
    monkeypatch.setattr(widgets, "has_anywidget", lambda: False)
    live = widgets.make_drag_widget(make_chain(3))
    assert isinstance(live, widgets.SliderDrag)
    assert "anywidget is not installed" in capsys.readouterr().out
    widgets.make_drag_widget(make_chain(3), verbose=False)
    assert capsys.readouterr().out == ""


def test_has_anywidget_matches_the_import():
    try:
        import anywidget  # noqa: F401 (only whether it imports matters)
        installed = True
    except ImportError:
        installed = False
    assert widgets.has_anywidget() is installed


def test_enable_colab_widgets_is_a_no_op_outside_colab():
    assert "google.colab" not in sys.modules
    widgets.enable_colab_widgets()  # must not try to import google.colab


def test_bad_widget_arguments_are_refused():
    with pytest.raises(ValueError, match="prefer"):
        widgets.make_drag_widget(make_chain(2), prefer="mouse")
    pytest.importorskip("ipywidgets")
    with pytest.raises(ValueError, match="steps_per_event"):
        widgets.SliderDrag(make_chain(2), steps_per_event=0)


# ------------------------------------------------------------------- flow control of the canvas

def drag_queue_source() -> str:
    """The canvas's DragQueue, exactly as shipped in CANVAS_JS (between its marker lines)."""
    start = widgets.CANVAS_JS.index("// --- drag queue")
    return widgets.CANVAS_JS[start:widgets.CANVAS_JS.index("// --- end drag queue")]


QUEUE_SCRIPT = """
const sent = []; let inFlightMax = 0, inFlight = 0;
const queue = new DragQueue((message) => {
  sent.push(message); inFlight += 1; inFlightMax = Math.max(inFlightMax, inFlight);
});
for (let k = 0; k < 50; k++) queue.move({ index: 4, x: k, y: 0 });      // a burst of moves before any answer
const afterBurst = sent.length;
queue.acknowledged(999);                                                 // a stale ack changes nothing
const afterStale = sent.length;
for (let round = 0; round < 5; round++) {                                // Python answers, the user keeps moving
  const last = sent[sent.length - 1]; inFlight -= 1; queue.acknowledged(last.seq);
  for (let k = 0; k < 10; k++) queue.move({ index: 4, x: 100 + 10 * round + k, y: 0 });
}
console.log(JSON.stringify({ afterBurst, afterStale, inFlightMax, sent }));
"""


def test_the_canvas_sends_one_drag_at_a_time_and_always_the_newest():
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed to run the canvas's JavaScript (apt-get install nodejs)")
    result = subprocess.run([node, "-e", drag_queue_source() + QUEUE_SCRIPT], capture_output=True, text=True,
                            timeout=60, check=True)
    run = json.loads(result.stdout)
    assert run["afterBurst"] == 1 and run["afterStale"] == 1      # 50 moves, one drag in flight
    assert run["inFlightMax"] == 1
    xs = [message["x"] for message in run["sent"]]
    # the first move, then after each answer the NEWEST move since (49, then 109, 119, ...): none queued up
    assert xs == [0, 49, 109, 119, 129, 139]
    assert [message["seq"] for message in run["sent"]] == list(range(1, len(run["sent"]) + 1))


def test_python_acknowledges_each_drag_after_solving_it():
    pytest.importorskip("anywidget")
    toy = make_chain(4)
    live = widgets.make_drag_widget(toy, prefer="canvas")
    seen = []
    live.view.observe(lambda change: seen.append((change["new"], live.events)), names="ack")
    live.view.drag = {"index": 4, "x": 1.0, "y": 2.0, "t": 1, "seq": 1}
    live.view.drag = {"index": 4, "x": 1.5, "y": 2.0, "t": 2, "seq": 2}
    assert seen == [(1, 1), (2, 2)]            # each ack comes after its solver step, never before


def test_sliders_solve_once_per_release_not_per_pixel():
    pytest.importorskip("ipywidgets")
    live = widgets.make_drag_widget(make_chain(4), prefer="sliders")
    assert live.x.continuous_update is False and live.y.continuous_update is False
    assert "devicePixelRatio" in widgets.CANVAS_JS and 'background = "#ffffff"' in widgets.CANVAS_JS


def test_the_canvas_module_parses_and_exports_render(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed to run the canvas's JavaScript (apt-get install nodejs)")
    module = tmp_path / "canvas.mjs"
    module.write_text(widgets.CANVAS_JS)
    script = f"import({json.dumps(module.as_uri())}).then(m => console.log(typeof m.default.render))"
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "function", result.stderr
