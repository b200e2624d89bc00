"""Measure the course on the machine this runs on (meant for a GPU), and write every result to a folder.

    python tools/gpu_measure.py --out outputs/gpu                      # on a GPU machine: everything
    python tools/gpu_measure.py --wheels outputs/gpu_wheels --out outputs/gpu   # install the notebook runner first
    python tools/gpu_measure.py --download-wheels outputs/gpu_wheels   # where there is internet: fetch those wheels
    python tools/gpu_measure.py --smoke --out /tmp/smoke               # tiny, on any machine (what the tests run)

Three parts, in this order (each can be skipped, ``--skip-checks/--skip-bench/--skip-notebooks``):

1. **equality**: ``helpers.fast`` against the plain model (``helpers.nca.NCA``) on this device, for
   every option of ``nca.Rule``, with each backend the device has (on a GPU: ``triton`` and
   ``torch``; on a CPU: ``kernel`` and ``torch``): final states within 1e-5, gradients of the weight, the bias and the
   state within 1e-4 relative, and NaN/inf where the plain model has them. The plain model's
   convolutions run in true float32 here (``torch.backends.cudnn.allow_tf32 = False``): PyTorch's
   default lets cuDNN use TF32 on recent GPUs, 1e-3 relative, which would fail the reference itself.
   The same for the per-cell-network rules of chapters 06-08 (``helpers.fast.cell_network``: the
   growing rule with its ``sparse`` and ``dense`` plans, chapter 07's hypernetwork and broadcast rules,
   the reaction-diffusion rule), the growing rule also from a state holding NaN and inf:
   ``rule_equality.json``.
2. **benchmark**: ``python -m helpers bench --full`` (the table of README's Performance section:
   plain and every fast variant, training iteration, speed-up with and without the loss, peak
   memory, inference cell updates per second; the rules of chapters 06-08 too), also as
   ``bench.json``. ``--bench-configs growing manifold rd`` times only those (the GPU figures of the
   per-cell-network rules, in a few minutes).
3. **notebooks**: every chapter top to bottom in a fresh kernel in full mode (``DSOS_QUICK=0``),
   timed by ``helpers.env.time_notebooks``, one at a time so that a failing chapter is recorded
   and the next still runs. ``--budget`` seconds (default 360) bound this part: a chapter that
   would start after the budget is spent is recorded as not run, and a cell runs at most for what
   is left of it (a time-out is recorded as such: its time is a lower bound).

What it needs beyond a PyTorch GPU image (torch, torchvision, triton, numpy, matplotlib, pillow):
the course's small pure-Python dependencies and, for part 3, nbclient, nbformat and ipykernel (and
ipywidgets, anywidget for chapter 02): about 20 MB of wheels, which ``--download-wheels`` fetches
(for Python 3.12 on x86-64 Linux by default) and ``--wheels`` installs without a network. Videos
fall back to animated GIFs where imageio-ffmpeg is missing (``helpers.display``).

Written to ``--out``: ``environment.json``, ``equality.json``, ``rule_equality.json``, ``bench.txt`` and ``bench.json``,
``notebooks.json``, and ``summary.md`` (the three parts as Markdown, ready for README). The exit
status is 1 when an equality check or a notebook failed.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:              # run as a script from anywhere: import the course's helpers
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from helpers import bench, env, fast, nca  # noqa: E402
from helpers.fast import cell_network  # noqa: E402
from helpers.growing_nca import GrowingNCA  # noqa: E402
from helpers.manifold_nca import ConditionedRule  # noqa: E402
from helpers.reaction_diffusion import ReactionDiffusionNCA, random_field  # noqa: E402

#: What part 3 needs besides the course's own dependencies (import name, pip name).
NOTEBOOK_RUNNER = [("nbclient", "nbclient"), ("nbformat", "nbformat"), ("ipykernel", "ipykernel"),
                   ("ipywidgets", "ipywidgets"), ("anywidget", "anywidget")]
#: Every option of nca.Rule at least once (the same list as tests/test_fast_triton.py).
RULE_OPTIONS = [
    {},
    {"split_relu": False},
    {"filters": "side"},
    {"update_rate": 0.3},
    {"update_per": "cell", "update_rate": 1.0},
    {"padding": "zeros"},
    {"padding": "zeros", "split_relu": False, "filters": "side", "update_per": "cell"},
]
STATE_ATOL, GRADIENT_RTOL = 1e-5, 1e-4


def log(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------------ 1. equality

def make_model(options: dict, device, scale: float) -> nca.NCA:
    torch.manual_seed(0)
    model = nca.NCA(**options).to(device)
    with torch.no_grad():
        model.update.weight.normal_(0.0, scale)
        model.update.bias.normal_(0.0, 0.02)
    return model


def generator(device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def run_and_differentiate(model, state, steps, upstream, rollout):
    """The final state and d(sum(final * upstream))/d(weight, bias, state) of one rollout."""
    start = state.clone().requires_grad_(True)
    final = rollout(start)
    grads = torch.autograd.grad(final, [model.update.weight, model.update.bias, start], upstream)
    return [final.detach(), *grads]


def differences(expected: list, actual: list) -> dict:
    """States: largest absolute difference of the finite values; gradients: relative norm of the
    difference over the finite values; and whether NaN and inf sit at the same places."""
    result = {"same_non_finite": all(torch.equal(a.isnan(), e.isnan()) and torch.equal(a.isinf(), e.isinf())
                                     for e, a in zip(expected, actual))}
    for name, want, got in zip(["state", "weight_grad", "bias_grad", "state_grad"], expected, actual):
        finite = want.isfinite() & got.isfinite()
        want, got = want[finite].double(), got[finite].double()
        if name == "state":
            result["state_max_abs"] = float((got - want).abs().max()) if want.numel() else 0.0
        else:
            norm = float(want.norm())
            result[f"{name}_rel"] = float((got - want).norm()) / norm if norm > 0 else float((got - want).norm())
    return result


def passes(result: dict) -> bool:
    return (result["same_non_finite"] and result["state_max_abs"] <= STATE_ATOL
            and all(result[f"{name}_rel"] <= GRADIENT_RTOL for name in ("weight_grad", "bias_grad", "state_grad")))


def check_equality(device: torch.device, smoke: bool) -> list[dict]:
    """fast (each backend here) against plain, for every rule option, plus a state holding NaN and inf."""
    # weights small enough that the state moves by a few units, not more (float32 rounding grows with it)
    shape, steps, scale = ((1, 12, 9, 11), 3, 0.05) if smoke else ((4, 12, 64, 64), 8, 0.004)
    # the fused kernel of this device by name (so that a failing one fails here rather than being
    # replaced by the PyTorch backend, as backend="auto" would), and the PyTorch backend
    backends = ["triton" if device.type == "cuda" else bench.fast_backend(device), "torch"]
    results = []
    previous_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False          # the reference in true float32 (see the docstring)
    try:
        cases = [(options, "finite") for options in RULE_OPTIONS] + [({}, "nan and inf")]
        for options, kind in cases:
            model = make_model(options, device, scale)
            state = 0.5 * torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)
            state[:, :, 2:4, 3:6] = 0.0                                  # relu's kink
            if kind != "finite":
                state[0, 1, 1, 1], state[0, 5, -1, 0], state[-1, 9, 3, -1] = float("nan"), float("inf"), -float("inf")
            upstream = torch.randn(shape, generator=torch.Generator().manual_seed(5)).to(device)
            expected = run_and_differentiate(model, state, steps, upstream, lambda s: model.rollout(
                s, steps, generator=generator(device, 7)))
            for backend in backends:
                started = time.perf_counter()
                actual = run_and_differentiate(model, state, steps, upstream, lambda s: fast.rollout(
                    model, s, steps, generator=generator(device, 7), backend=backend))
                result = {"options": options, "state": kind, "backend": backend, "shape": list(shape), "steps": steps,
                          **differences(expected, actual), "seconds": time.perf_counter() - started}
                result["pass"] = passes(result)
                results.append(result)
                log(f"  {'PASS' if result['pass'] else 'FAIL'} {backend:7s} {kind:12s} {options or 'default rule'}: "
                    f"state {result['state_max_abs']:.1e}, grads {result['weight_grad_rel']:.1e} / "
                    f"{result['bias_grad_rel']:.1e} / {result['state_grad_rel']:.1e}")
    finally:
        torch.backends.cudnn.allow_tf32 = previous_tf32
    return results


def scrambled(module: torch.nn.Module, scale: float) -> torch.nn.Module:
    """Random weights everywhere (the zero-initialised last layers too), seeded."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return module


def rule_cases(device: torch.device, smoke: bool) -> list[tuple]:
    """``(rule, plan, state kind, model, start, plain(state), fast(state))`` for every check of part 1b."""
    batch, size, steps = (2, 14, 4) if smoke else (8, 72, 24)
    start = torch.zeros(batch, 16, size, size)
    low, high = size // 3, size - size // 3
    start[:, :, low:high, low:high] = torch.rand(batch, 16, high - low, high - low,
                                                 generator=torch.Generator().manual_seed(1))
    broken = start.clone()
    broken[0, 7, 1, 1], broken[-1, 9, size // 2, size // 2] = float("nan"), float("inf")
    growing = scrambled(GrowingNCA(hidden=32 if smoke else 128), 0.1).to(device)
    codes = torch.randn(batch, 12, generator=torch.Generator().manual_seed(2)).to(device)
    cases = []
    for plan in ("dense", "sparse"):
        for kind, state in (("finite", start), ("nan and inf", broken)):
            cases.append(("growing", plan, kind, growing, state.to(device),
                          lambda m, s: m.rollout(s, steps, generator(device, 7)),
                          lambda m, s, plan=plan: cell_network.growing_rollout(m, s, steps, generator(device, 7),
                                                                               plan=plan)))
        for method in ("hyper", "broadcast"):
            rule = scrambled(ConditionedRule(method, hidden=16 if smoke else 64), 0.1).to(device)
            cases.append((f"manifold {method}", plan, "finite", rule, start.to(device),
                          lambda m, s: m.rollout(s, steps, codes, generator(device, 7)),
                          lambda m, s, plan=plan: cell_network.conditioned_rollout(m, s, steps, codes,
                                                                                   generator(device, 7), plan=plan)))
    rd = scrambled(ReactionDiffusionNCA(8 if smoke else 32, 16 if smoke else 128), 0.1).to(device)
    field = random_field(batch, size if smoke else 48, rd.channels, torch.Generator().manual_seed(3), device)
    cases.append(("rd", "dense", "finite", rd, field, lambda m, s: m.rollout(s, steps),
                  lambda m, s: cell_network.diffusion_rollout(m, s, steps, plan="dense")))
    return cases


def check_rules(device: torch.device, smoke: bool) -> list[dict]:
    """helpers.fast.cell_network against the plain rules of chapters 06-08 on this device: final states
    within 1e-5, the gradients of every parameter and of the state within 1e-4 relative (norm of the
    difference over the finite values), NaN and inf at the same places."""
    results = []
    previous_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for rule, plan, kind, model, state, plain, fast_run in rule_cases(device, smoke):
            upstream = torch.randn(state.shape, generator=torch.Generator().manual_seed(5)).to(device)
            outcome = []
            for run in (plain, fast_run):
                start = state.clone().requires_grad_(True)
                final = run(model, start)
                grads = torch.autograd.grad(final, [start, *model.parameters()], upstream, allow_unused=True)
                outcome.append([final.detach()] + [g for g in grads if g is not None])
            (expected, actual), worst = outcome, 0.0
            same = all(torch.equal(a.isnan(), e.isnan()) and torch.equal(a.isinf(), e.isinf())
                       for e, a in zip(expected, actual)) and len(expected) == len(actual)
            finite = expected[0].isfinite() & actual[0].isfinite()
            state_error = float((expected[0][finite] - actual[0][finite]).abs().max()) if finite.any() else 0.0
            for want, got in zip(expected[1:], actual[1:]):
                keep = want.isfinite() & got.isfinite()
                norm = float(want[keep].double().norm())
                difference = float((got[keep].double() - want[keep].double()).norm())
                worst = max(worst, difference / norm if norm > 0 else difference)
            result = {"rule": rule, "plan": plan, "state": kind, "shape": list(state.shape),
                      "same_non_finite": same, "state_max_abs": state_error, "grad_rel_worst": worst}
            result["pass"] = same and state_error <= STATE_ATOL and worst <= GRADIENT_RTOL
            results.append(result)
            log(f"  {'PASS' if result['pass'] else 'FAIL'} {rule:18s} {plan:7s} {kind:12s}: state {state_error:.1e}, "
                f"worst gradient {worst:.1e}")
    finally:
        torch.backends.cudnn.allow_tf32 = previous_tf32
    return results


# ------------------------------------------------------------------------------ 2. benchmark

def run_bench(device: torch.device, smoke: bool, out: Path, configs: list[str] | None = None) -> str:
    """The benchmark's table (printed and returned), its rows in ``bench.json``."""
    argv = ["--small", "--repeats", "1"] if smoke else ["--full"]
    argv += ["--configs", *(configs or (["mst", "growing"] if smoke else bench.ALL_CONFIGS))]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        bench.main([*argv, "--device", str(device), "--json", str(out / "bench.json")], prog="gpu_measure bench")
    text = printed.getvalue()
    log(text)
    (out / "bench.txt").write_text(text)
    return text


# ------------------------------------------------------------------------------ 3. notebooks

def missing_runner() -> list[str]:
    return [pip for name, pip in NOTEBOOK_RUNNER if importlib.util.find_spec(name) is None]


def install_wheels(folder: Path) -> None:
    """pip-install what the notebook runner lacks from a folder of wheels, without a network."""
    missing = missing_runner()
    if missing:
        log(f"installing {', '.join(missing)} from {folder}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(folder),
                        *missing], check=True)
        importlib.invalidate_caches()


def download_wheels(folder: Path, python: str, platforms: list[str]) -> None:
    """Fetch the notebook runner's wheels (with their dependencies) for another machine's Python."""
    command = [sys.executable, "-m", "pip", "download", "--dest", str(folder), "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}"]
    for name in platforms:
        command += ["--platform", name]
    subprocess.run([*command, *(pip for _, pip in NOTEBOOK_RUNNER)], check=True)


def chapter_paths(chosen: list[str] | None) -> list[Path]:
    """The notebooks to time: the given paths or chapter numbers ("03"), or every chapter."""
    chapters = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not chosen:
        return chapters
    paths = []
    for item in chosen:
        if item.endswith(".ipynb"):
            paths.append(Path(item).resolve())
            continue
        found = [path for path in chapters if path.name.startswith(f"{int(item):02d}_")]
        if not found:
            raise SystemExit(f"no chapter {item!r} in {REPO / 'notebooks'}")
        paths += found
    return paths


def time_chapters(paths: list[Path], full: bool, budget: float) -> list[dict]:
    """Each notebook in a fresh kernel (``env.time_notebooks``), one at a time, within ``budget`` seconds."""
    results = []
    started = time.perf_counter()
    for path in paths:
        left = budget - (time.perf_counter() - started)
        if left < 10:
            results.append({"notebook": path.name, "status": "not run",
                            "why": f"the budget of {budget:.0f} s is spent"})
            log(f"  {path.name}: not run (budget spent)")
            continue
        start = time.perf_counter()
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                timed = env.time_notebooks([path], quick=not full, timeout=int(left))    # nbclient: an int
            log(printed.getvalue().rstrip())
            if not timed:           # time_notebooks reports a failing notebook and leaves it out
                results.append({"notebook": path.name, "status": "failed", "seconds": time.perf_counter() - start,
                                "why": printed.getvalue().strip()[-2000:]})
                continue
            (name, seconds), = timed
            results.append({"notebook": name, "status": "ok", "seconds": seconds})
        except Exception as error:           # a failing cell or a time-out: recorded, the next chapter runs
            seconds = time.perf_counter() - start
            timed_out = "timeout" in type(error).__name__.lower() or "timed out" in str(error).lower()
            results.append({"notebook": path.name, "status": "timed out" if timed_out else "failed",
                            "seconds": seconds, "why": f"{type(error).__name__}: {str(error)[-2000:]}"})
            log(f"  {path.name}: {'timed out' if timed_out else 'FAILED'} after {seconds:.0f} s "
                f"({type(error).__name__})")
    return results


# ------------------------------------------------------------------------------ report

def environment(device: torch.device) -> dict:
    about = {"device": env.describe_device(device), "python": platform.python_version(), "torch": torch.__version__,
             "cuda": torch.version.cuda, "fast_backend": bench.describe_backend(device),
             "fast_rules": bench.describe_rule_plan(device),
             "cudnn_allow_tf32_default": torch.backends.cudnn.allow_tf32,
             "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    for name in ("triton", "torchvision", "numpy", "nbclient", "ipykernel"):
        try:
            about[name] = __import__(name).__version__
        except Exception:
            about[name] = None
    return about


def summary(about: dict, checks: list[dict] | None, bench_text: str | None, notebooks: list[dict] | None,
            full: bool, rule_checks: list[dict] | None = None) -> str:
    lines = [f"# Measured on {about['device']} ({about['date']})", "",
             f"torch {about['torch']} (CUDA {about['cuda']}), triton {about['triton']}, Python {about['python']}; "
             f"fast = {about['fast_backend']}", ""]
    if checks is not None:
        failed = [check for check in checks if not check["pass"]]
        lines += [f"## Equality with the plain model: {len(checks) - len(failed)} of {len(checks)} pass", "",
                  "| backend | rule | state | state max abs | weight grad rel | bias grad rel | state grad rel "
                  "| pass |", "|---|---|---|---|---|---|---|---|"]
        for check in checks:
            lines.append(f"| {check['backend']} | {check['options'] or 'default'} | {check['state']} | "
                         f"{check['state_max_abs']:.1e} | {check['weight_grad_rel']:.1e} | "
                         f"{check['bias_grad_rel']:.1e} | {check['state_grad_rel']:.1e} | "
                         f"{'yes' if check['pass'] else 'NO'} |")
        lines.append("")
    if rule_checks is not None:
        failed = [check for check in rule_checks if not check["pass"]]
        lines += [f"## The rules of chapters 06-08 against their plain models: {len(rule_checks) - len(failed)} of "
                  f"{len(rule_checks)} pass", "", "| rule | plan | state | state max abs | worst gradient rel | pass |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c['rule']} | {c['plan']} | {c['state']} | {c['state_max_abs']:.1e} | {c['grad_rel_worst']:.1e} "
                  f"| {'yes' if c['pass'] else 'NO'} |" for c in rule_checks]
        lines.append("")
    if bench_text is not None:
        lines += ["## Benchmark", "", "```", bench_text.rstrip(), "```", ""]
    if notebooks is not None:
        lines += [f"## Chapters in {'full' if full else 'quick'} mode", "", "| notebook | status | seconds |",
                  "|---|---|---|"]
        for item in notebooks:
            seconds = item.get("seconds")
            lines.append(f"| {item['notebook']} | {item['status']} | "
                         f"{'' if seconds is None else f'{seconds:.0f}'} |")
        done = [item["seconds"] for item in notebooks if item["status"] == "ok"]
        lines += ["", f"total of the chapters that ran: {math.fsum(done):.0f} s", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/gpu_measure.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gpu_measure", help="folder for the results")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny checks, a tiny benchmark, notebooks in quick mode (and none unless --notebooks)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: helpers.env.get_device())")
    parser.add_argument("--notebooks", nargs="+",
                        help="chapter numbers (03) or notebook paths (default: every chapter)")
    parser.add_argument("--budget", type=float, default=360.0, help="seconds for all notebooks together (default 360)")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--bench-configs", nargs="+", choices=bench.ALL_CONFIGS,
                        help="only these benchmark configurations (default: all)")
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--skip-notebooks", action="store_true")
    parser.add_argument("--wheels", type=Path, help="install the notebook runner from this folder of wheels first")
    parser.add_argument("--download-wheels", type=Path, metavar="FOLDER",
                        help="only fetch the notebook runner's wheels into FOLDER (needs the internet), then stop")
    parser.add_argument("--wheel-python", default="3.12", help="the Python those wheels are for (default 3.12)")
    parser.add_argument("--wheel-platforms", nargs="+", default=["manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                                                                 "manylinux2014_x86_64", "any"])
    args = parser.parse_args(argv)
    if args.download_wheels:
        download_wheels(args.download_wheels, args.wheel_python, args.wheel_platforms)
        return 0
    device = env.get_device(args.device)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    about = environment(device)
    (out / "environment.json").write_text(json.dumps(about, indent=2) + "\n")
    log(f"device: {about['device']}; fast: {about['fast_backend']}; results in {out}")
    if device.type != "cuda" and not args.smoke:
        log("note: no CUDA GPU here, so these are not GPU figures")
    failed = False
    checks = bench_text = notebooks = rule_checks = None
    if not args.skip_checks:
        log("1. equality of helpers.fast and the plain model on this device")
        checks = check_equality(device, args.smoke)
        (out / "equality.json").write_text(json.dumps(checks, indent=2) + "\n")
        failed |= not all(check["pass"] for check in checks)
        log("1b. equality of helpers.fast.cell_network and the rules of chapters 06-08")
        rule_checks = check_rules(device, args.smoke)
        (out / "rule_equality.json").write_text(json.dumps(rule_checks, indent=2) + "\n")
        failed |= not all(check["pass"] for check in rule_checks)
    if not args.skip_bench:
        log("2. benchmark")
        bench_text = run_bench(device, args.smoke, out, args.bench_configs)
    if not args.skip_notebooks and not (args.smoke and not args.notebooks):
        full = not args.smoke
        log(f"3. notebooks in {'full' if full else 'quick'} mode, budget {args.budget:.0f} s")
        if args.wheels:
            install_wheels(args.wheels)
        missing = missing_runner()
        if {"nbclient", "nbformat", "ipykernel"} & set(missing):
            notebooks = [{"notebook": "all", "status": "not run",
                          "why": f"missing {', '.join(missing)}: pip install {' '.join(missing)}, or "
                                 f"--wheels FOLDER (fetched with --download-wheels FOLDER where there is internet)"}]
            log(f"  not run: {notebooks[0]['why']}")
        else:
            notebooks = time_chapters(chapter_paths(args.notebooks), full, args.budget)
        (out / "notebooks.json").write_text(json.dumps(notebooks, indent=2) + "\n")
        failed |= any(item["status"] != "ok" for item in notebooks)
    (out / "summary.md").write_text(summary(about, checks, bench_text, notebooks, full=not args.smoke,
                                            rule_checks=rule_checks))
    log(f"summary: {out / 'summary.md'}" + ("  (something FAILED: see above)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
