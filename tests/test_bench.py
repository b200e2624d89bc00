"""The benchmark's device-dependent rows and JSON output (helpers/bench.py), and the GPU measurement
script (tools/gpu_measure.py) in its smoke mode, which must run on a machine without a GPU.

(tests/test_fast.py runs the benchmark's table itself, ``--small`` on the CPU.)"""
import importlib.util
import json
from pathlib import Path

import nbformat
import pytest
import torch

from helpers import bench, fast

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_measure.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_measure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fast_rows_follow_the_device(monkeypatch):
    """CPU: the C++ kernel plus a PyTorch-ops row; CUDA: the Triton kernels plus a PyTorch-ops row when
    triton imports, else only the PyTorch backend (no row comparing it with itself)."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # (the kernels' check on the device needs a GPU: here it is taken as passed, on a GPU said to be there)
    monkeypatch.setattr(fast.triton_engine, "self_check", lambda rule, device: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert bench.fast_backend(cpu) == ("kernel" if fast.uses_cpu_kernel() else "torch")
    assert "C++ kernel" in bench.describe_backend(cpu)
    if importlib.util.find_spec("triton") is not None:
        assert bench.fast_backend(cuda) == "triton"
        assert "Triton" in bench.describe_backend(cuda)
        assert "fast, PyTorch ops" in bench.variants(cuda)
    monkeypatch.setenv("DSOS_TRITON", "0")
    assert bench.fast_backend(cuda) == "torch"
    assert "DSOS_TRITON=0" in bench.describe_backend(cuda)
    assert set(bench.variants(cuda)) == {"plain", "fast", "fast, bit masks", "fast, checkpoint 8"}


def test_the_benchmark_writes_its_rows_as_json(monkeypatch, tmp_path, capsys):
    """--json: the printed rows, the speed-up without the loss, and what machine measured them."""
    def fake_config(config, device, repeats, memory, log):
        label = f"{config.name} {config.batch}x{config.size}x{config.size} {config.steps} st"
        return [{"config": label, "variant": variant, "train_s": train, "speedup": 2.0 / train, "loss_s": 0.5,
                 "peak_mib": 10.0, "updates_per_s": 1e6, "infer_speedup": 1.0}
                for variant, train in (("plain", 2.0), ("fast", 1.0))]

    monkeypatch.setattr(bench, "bench_config", fake_config)
    path = tmp_path / "deeper" / "bench.json"
    rows = bench.main(["--small", "--configs", "mst", "--device", "cpu", "--json", str(path)])
    written = json.loads(path.read_text())
    assert written["mode"] == "small" and written["device"] == "cpu" and "fast" in written
    assert [row["variant"] for row in written["rows"]] == [row["variant"] for row in rows] == ["plain", "fast"]
    assert written["rows"][1]["speedup_without_loss"] == pytest.approx((2.0 - 0.5) / (1.0 - 0.5))
    assert "fast" in capsys.readouterr().out


def notebook(path: Path, source: str) -> Path:
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(source)]
    nbformat.write(book, path)
    return path


@pytest.mark.slow
def test_the_measurement_script_runs_in_smoke_mode(tmp_path):
    """Smoke mode: tiny equality checks (they pass), a tiny benchmark, two tiny notebooks in quick mode
    (one fails, and is recorded as failed while the other still runs), every result file written."""
    script = load_script()
    good = notebook(tmp_path / "good.ipynb", "import os\nassert os.environ['DSOS_QUICK'] == '1'")
    bad = notebook(tmp_path / "bad.ipynb", "raise ValueError('this chapter is broken')")
    out = tmp_path / "results"
    status = script.main(["--smoke", "--out", str(out), "--notebooks", str(bad), str(good), "--budget", "300"])
    assert status == 1                                           # the failing notebook
    checks = json.loads((out / "equality.json").read_text())
    assert len(checks) == 2 * (len(script.RULE_OPTIONS) + 1) and all(check["pass"] for check in checks)
    assert {check["backend"] for check in checks} == {bench.fast_backend(torch.device("cpu")), "torch"}
    assert any(check["state"] == "nan and inf" for check in checks)
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert {row["variant"] for row in rows} >= {"plain", "fast"}
    assert {row["config"].split()[0] for row in rows} == {"mst", "growing"}
    rule_checks = json.loads((out / "rule_equality.json").read_text())
    assert all(check["pass"] for check in rule_checks)
    assert {check["rule"] for check in rule_checks} == {"growing", "manifold hyper", "manifold broadcast", "rd"}
    assert {(check["plan"], check["state"]) for check in rule_checks if check["rule"] == "growing"} == {
        (plan, state) for plan in ("dense", "sparse") for state in ("finite", "nan and inf")}
    books = json.loads((out / "notebooks.json").read_text())
    assert [(book["notebook"], book["status"]) for book in books] == [("bad.ipynb", "failed"), ("good.ipynb", "ok")]
    assert "this chapter is broken" in books[0]["why"]
    assert json.loads((out / "environment.json").read_text())["torch"] == torch.__version__
    summary = (out / "summary.md").read_text()
    assert "Equality with the plain model" in summary and "| good.ipynb | ok |" in summary
    assert "The rules of chapters 06-08 against their plain models" in summary
    assert "train iter" in (out / "bench.txt").read_text()


def test_the_rules_of_chapters_06_to_08_get_their_rows(capsys):
    """Plain, the fast path 'auto' picks, and the other plan for the growing rules; the GFLOP/s column."""
    rows = bench.main(["--small", "--repeats", "1", "--configs", "growing", "manifold", "rd", "--device", "cpu"])
    variants = {}
    for row in rows:
        variants.setdefault(row["config"].split()[0], set()).add(row["variant"])
    assert variants == {"growing": {"plain", "fast", "fast, dense"}, "manifold": {"plain", "fast", "fast, dense"},
                        "rd": {"plain", "fast"}}
    for row in rows:
        assert row["train_s"] > 0 and row["updates_per_s"] > 0 and row["gflops"] > 0 and row["infer_speedup"] > 0
        assert row["peak_mib"] is not None and row["loss_s"] is None
    printed = capsys.readouterr().out
    assert "GFLOP/s" in printed and "plan 'sparse'" in printed and "hand-written rollout" in printed


def test_the_rules_flops_are_counted_per_cell():
    """The growing rule at 16 channels and 128 hidden: 3x3 perception 864, 48 -> 128 12,288, 128 -> 16
    4,096 (the issue's 'about 16 kFLOP per cell-step'); reaction-diffusion 32/128: 576 + 2 x 8,192."""
    growing, manifold, rd = bench.RULE_CONFIGS
    assert bench.forward_flops_per_cell(growing) == 864 + 12_288 + 4_096
    assert bench.forward_flops_per_cell(rd) == 576 + 2 * 8_192


@pytest.mark.slow
def test_the_candidates_are_measured_with_their_differences():
    """The candidates' table: every candidate timed, the fast ones equal to plain (1e-5), bfloat16 not."""
    rows = {row["candidate"]: row for row in bench.rule_candidates(steps=2, repeats=1, progress=lambda _: None)}
    assert set(rows) == {"plain", "torch.compile(step)", "bfloat16 autocast", "perception folded into layer 1",
                         "fast, dense", "fast, sparse"}
    assert rows["plain"]["state_max_abs_difference"] == 0.0
    assert rows["fast, sparse"]["state_max_abs_difference"] < 1e-5 > rows["fast, dense"]["state_max_abs_difference"]
    assert rows["bfloat16 autocast"]["state_max_abs_difference"] > 1e-5
    assert all(row["train_s"] > 0 for row in rows.values())


def test_a_failed_equality_check_fails_the_script(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "STATE_ATOL", -1.0)            # no difference is below -1: every check fails
    monkeypatch.setattr(script, "RULE_OPTIONS", [{}])
    status = script.main(["--smoke", "--out", str(tmp_path), "--skip-bench"])
    assert status == 1
    assert not any(check["pass"] for check in json.loads((tmp_path / "equality.json").read_text()))


def test_without_the_notebook_runner_the_script_says_what_to_install(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "missing_runner", lambda: ["nbclient", "ipykernel"])
    status = script.main(["--smoke", "--out", str(tmp_path), "--skip-checks", "--skip-bench", "--notebooks", "03"])
    books = json.loads((tmp_path / "notebooks.json").read_text())
    assert status == 1 and books[0]["status"] == "not run"
    assert "pip install nbclient ipykernel" in books[0]["why"] and "--wheels" in books[0]["why"]


def test_chapters_are_named_by_number_or_path(tmp_path):
    script = load_script()
    assert [path.name for path in script.chapter_paths(["3"])] == sorted(      # the lesson and its appendix
        path.name for path in (SCRIPT.parents[1] / "notebooks").glob("03_*.ipynb"))
    assert len(script.chapter_paths(None)) >= 6
    with pytest.raises(SystemExit, match="no chapter"):
        script.chapter_paths(["99"])
    budgetless = script.time_chapters([tmp_path / "x.ipynb"], full=False, budget=0)
    assert budgetless[0]["status"] == "not run"
