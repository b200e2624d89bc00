"""Benchmark: the plain NCA of chapter 03 against the fast rollouts of ``helpers.fast``.

    python -m helpers.bench            # quick: half the steps, 2 timed rounds
    python -m helpers.bench --full     # the reference steps (80 and 96), 5 timed rounds
    python -m helpers.bench --threads 1 --device cpu
    python -m helpers.bench --full --device cuda --json bench.json   # on a GPU, rows also as JSON

One process runs every variant on the same model, the same inputs and the same number of steps,
interleaved (plain, fast, ...; plain, fast, ...), so that a busy machine slows all of them alike
and the ratios stay meaningful even when the absolute times do not. For two configurations:

* ``texture``: batch 4, 128x128, 80 steps, VGG16 Gram (style) loss: the texture chapter;
* ``mst``:     batch 8, 100x100, 96 steps, pixel loss on channel 0: the minimum-spanning-tree chapter.

and for the per-cell-network rules of chapters 06-08, plain against ``helpers.fast.cell_network``:

* ``growing``:  the Distill growing rule (16 channels, 128 hidden), batch 8, 72x72, 80 steps, from
  a grown lizard's state (its alpha, hidden channels at random where it lives), pixel loss;
* ``manifold``: chapter 07's hypernetwork rule (64 hidden, 12-number codes), batch 8, 22x22, 28 steps;
* ``rd``:       the reaction-diffusion rule at the reference size (32 channels, 128 hidden), batch 4,
  48x48, 48 steps from random fields, pixel loss on the visible channels.

Their rules have random weights (the last layer small, so the patterns neither die nor explode), and a
cheap pixel loss, so the table shows the rollouts' cost. Their rows add ``GFLOP/s``: the plain model's
arithmetic (every cell, forward and backward: 3x the forward's multiply-adds) over the measured time,
so the fast rows say how far they are from the machine's float32 peak, had they done all the work.

It prints, per variant: the median time of one training iteration (rollout, loss, backward, Adam
step), the speed-up over the plain version (also without the loss's own time), the peak memory of
one training iteration and the inference throughput (cell updates per second, no gradients).

The variants depend on the device: "fast" is what ``helpers.fast``'s ``backend="auto"`` runs there,
the fused C++ kernel on a CPU, the Triton kernels on a CUDA GPU (when triton imports), and one
"fast, PyTorch ops" row shows what that backend adds over the PyTorch-operations backend. The
VGG16 here has random weights (``torchvision.models.vgg16(weights=None)``): the same cost as the
trained one, nothing downloaded.

Peak memory: on a GPU, ``torch.cuda.max_memory_allocated`` during one iteration. On a Linux CPU,
the growth of the process's peak resident memory (VmHWM) during one iteration, after freeing
what the allocator holds (``malloc_trim``) and resetting the peak (``/proc/self/clear_refs``);
that counts everything the iteration touches (activations, gradients, the allocator's slack), not
the model or the libraries loaded before. Elsewhere it prints ``n/a``.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data, env, fast, nca
from .fast import cell_network
from .growing_nca import GrowingNCA, alive_mask
from .losses import VGGStyleLoss
from .manifold_nca import ConditionedRule
from .reaction_diffusion import ReactionDiffusionNCA, random_field
from .train import normalize_gradients


@dataclass
class Config:
    name: str
    batch: int
    size: int
    steps: int
    loss: str              # "style" (VGG16 Gram) or "pixel"


CONFIGS = [Config("texture", 4, 128, 80, "style"), Config("mst", 8, 100, 96, "pixel")]


@dataclass
class RuleConfig:
    """A per-cell-network rule of chapters 06-08 at a training size (``loss``: always a pixel loss)."""
    name: str              # "growing", "manifold" or "rd"
    batch: int
    size: int
    steps: int
    channels: int
    hidden: int
    loss: str = "pixel"


RULE_CONFIGS = [RuleConfig("growing", 8, 72, 80, 16, 128), RuleConfig("manifold", 8, 22, 28, 16, 64),
                RuleConfig("rd", 4, 48, 48, 32, 128)]
ALL_CONFIGS = [c.name for c in CONFIGS] + [c.name for c in RULE_CONFIGS]


def plain_rollout(model, states, steps):
    return model.rollout(states, steps)


def fast_backend(device: torch.device) -> str:
    """The backend "fast" runs on ``device``: what ``backend="auto"`` picks for float32 states there."""
    if fast.uses_cpu_kernel(device):
        return "kernel"
    if fast.uses_triton(device):
        return "triton"
    return "torch"


def describe_backend(device: torch.device) -> str:
    """One line naming what the "fast" rows ran, and why not the fused kernel where they could not."""
    backend = fast_backend(device)
    if backend == "kernel":
        return f"the fused C++ kernel v{fast.cpu_kernel.version()} (helpers/fast/csrc/nca_cpu.cpp)"
    if backend == "triton":
        import triton
        return f"the fused Triton kernels (helpers/fast/triton_kernels.py, triton {triton.__version__})"
    if device.type == "cpu":
        why = f"the C++ kernel: {fast.cpu_kernel.load_error()}"
    else:
        rule = nca.Rule()
        why = "Triton: " + (fast.triton_engine.fits(rule, torch.float32, device)
                            or fast.triton_engine.self_check(rule, device) or "not a CUDA device")
    return f"PyTorch operations (no fused kernel here; {why})"


def variants(device: torch.device) -> dict:
    """name -> rollout(model, states, steps) (called with and without gradients).

    "fast" runs what ``backend="auto"`` picks (the C++ kernel on a CPU, the Triton kernels on a
    CUDA GPU, else PyTorch operations); where that is a fused kernel, a "fast, PyTorch ops" row
    shows what the kernel adds over the PyTorch backend."""
    backend = fast_backend(device)
    table = {"plain": plain_rollout,
             "fast": fast.make_rollout(backend=backend),
             "fast, bit masks": fast.make_rollout(backend=backend, masks="bits"),
             "fast, checkpoint 8": fast.make_rollout(backend=backend, checkpoint_every=8)}
    if backend != "torch":
        table["fast, PyTorch ops"] = fast.make_rollout(backend="torch")
    return table


# ------------------------------------------------------------------------------ losses

def style_loss(device: torch.device):
    """The texture chapter's loss: VGG16 Gram matrices up to relu5_1 (random VGG weights)."""
    import torchvision  # not a dependency of helpers itself (see pyproject): only this configuration needs it

    features = torchvision.models.vgg16(weights=None).features[:26].to(device).eval()
    target = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1)).to(device)
    loss = VGGStyleLoss(target, features=features)
    return lambda final: loss(nca.to_rgb(final)).mean()


def pixel_loss(batch: int, size: int, device: torch.device):
    target = (torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(2)) < 0.1).float().to(device)
    return lambda final: (final[:, :1] - target).square().mean()


# ------------------------------------------------------------------------------ measuring

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_iteration(model, rollout, states, steps, loss_fn, optimizer) -> None:
    """One iteration of ``helpers.train.train_pool`` without the pool bookkeeping."""
    final = rollout(model, states, steps)
    loss = loss_fn(final)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    normalize_gradients(model)
    optimizer.step()


def timed(function, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


class PeakMemory:
    """Peak memory of one call: CUDA allocator peak, or Linux VmHWM growth (see module docstring)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.linux = Path("/proc/self/clear_refs").exists() and Path("/proc/self/status").exists()
        self.libc = ctypes.CDLL("libc.so.6") if self.linux and device.type == "cpu" else None

    @property
    def available(self) -> bool:
        return self.device.type == "cuda" or self.libc is not None

    @staticmethod
    def _status_kb(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field} in /proc/self/status")

    def measure(self, function) -> float | None:
        """Megabytes (MiB) of peak memory that ``function()`` adds."""
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            function()
            synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - before) / 2**20
        if self.libc is None:
            return None
        self.libc.malloc_trim(0)                       # give freed memory back to the system
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current size
        before = self._status_kb("VmRSS")
        function()
        return (self._status_kb("VmHWM") - before) / 1024


def make_model(device) -> nca.NCA:
    torch.manual_seed(0)
    model = nca.NCA().to(device)
    with torch.no_grad():                # trained-looking weights, so states are not all zero
        model.update.weight.normal_(0.0, 0.05)
        model.update.bias.normal_(0.0, 0.01)
    return model


def loss_alone(loss_fn, states):
    """Forward and backward of the loss by itself, on a fixed final state: the part of a training
    iteration that no rollout variant changes (for the texture configuration, the VGG16 network)."""
    final = states.clone().requires_grad_(True)
    loss_fn(final).backward()


def bench_config(config: Config, device, repeats: int, memory: PeakMemory, log) -> list[dict]:
    model = make_model(device)
    states = 0.1 * torch.randn(config.batch, nca.CHANNELS, config.size, config.size,
                               generator=torch.Generator().manual_seed(3)).to(device)
    loss_fn = style_loss(device) if config.loss == "style" else pixel_loss(config.batch, config.size, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)    # tiny steps: the model barely moves
    rollouts = variants(device)
    names = list(rollouts)
    iteration = {name: (lambda rollout=rollout: training_iteration(model, rollout, states, config.steps,
                                                                    loss_fn, optimizer))
                 for name, rollout in rollouts.items()}
    infer = {name: (lambda rollout=rollout: rollout(model, states, config.steps)) for name, rollout in rollouts.items()}
    peaks = {}
    train_times, infer_times, loss_times = {name: [] for name in names}, {name: [] for name in names}, []
    for repeat in range(repeats + 1):
        # The first round warms up (and measures peak memory); it is not timed.
        log(f"  {config.name}: round {repeat + 1} of {repeats + 1}" + (" (warm-up, memory)" if repeat == 0 else ""))
        for name in names:
            if repeat == 0:
                peaks[name] = memory.measure(iteration[name])
                with torch.no_grad():
                    infer[name]()
                continue
            train_times[name].append(timed(iteration[name], device))
            with torch.no_grad():
                infer_times[name].append(timed(infer[name], device))
        if repeat > 0:
            loss_times.append(timed(lambda: loss_alone(loss_fn, states), device))
    cell_updates = config.batch * config.size * config.size * config.steps
    plain_train = statistics.median(train_times["plain"])
    plain_infer = statistics.median(infer_times["plain"])
    loss_s = statistics.median(loss_times)
    rows = []
    for name in names:
        train = statistics.median(train_times[name])
        inference = statistics.median(infer_times[name])
        label = f"{config.name} {config.batch}x{config.size}x{config.size} {config.steps} st"
        rows.append({"config": label, "variant": name, "train_s": train, "speedup": plain_train / train,
                     "loss_s": loss_s, "peak_mib": peaks[name], "updates_per_s": cell_updates / inference,
                     "infer_speedup": plain_infer / inference})
    return rows


# ------------------------------------------------------------------------------ the rules of chapters 06-08

def forward_flops_per_cell(config: RuleConfig) -> int:
    """Multiply-adds x 2 of one cell's forward step in the plain model (perception by 3x3 filters, the
    two layers); the small elementwise work (masks, ReLU, the update) is left out."""
    channels, hidden = config.channels, config.hidden
    if config.name == "rd":
        return 2 * 9 * channels + 2 * channels * hidden + 2 * hidden * channels     # Laplacian, reaction net
    return 2 * 9 * 3 * channels + 2 * 3 * channels * hidden + 2 * hidden * channels  # identity + Sobel, net


def grown_state(config: RuleConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A grown lizard as the growing rules' pool holds it (the emoji 40/72 of the grid, centred):
    ``(state, target)``, the hidden channels random where the emoji lives."""
    side = max(4, round(config.size * 40 / 72))
    before = (config.size - side) // 2
    target = torch.nn.functional.pad(data.load_emoji("lizard", side), [before, config.size - side - before] * 2)
    hidden = torch.rand(config.batch, config.channels - 4, config.size, config.size,
                        generator=torch.Generator().manual_seed(3))
    state = torch.cat([target.expand(config.batch, -1, -1, -1), hidden * target[3]], dim=1)
    return state.to(device), target[None].to(device)


class CodedRule(torch.nn.Module):
    """Chapter 07's rule with its images' codes, so that Adam trains both (as the manifold task does)."""

    def __init__(self, rule: ConditionedRule, codes: torch.Tensor):
        super().__init__()
        self.rule, self.codes = rule, torch.nn.Parameter(codes)


def rule_setup(config: RuleConfig, device):
    """``(model, start state, loss_fn, variants)``: variants map a name to ``rollout(model, state, steps)``."""
    torch.manual_seed(0)
    if config.name == "rd":
        model = ReactionDiffusionNCA(config.channels, config.hidden).to(device)
        with torch.no_grad():
            model.reaction_out.weight.normal_(0.0, 0.02)
        state = random_field(config.batch, config.size, config.channels, torch.Generator().manual_seed(3), device)
        target = torch.rand(1, 3, config.size, config.size, generator=torch.Generator().manual_seed(4)).to(device)
        table = {"plain": lambda m, s, n: m.rollout(s, n),
                 "fast": lambda m, s, n: cell_network.diffusion_rollout(m, s, n)}
        return model, state, lambda final: (final[:, :3] - target).square().mean(), table
    state, target = grown_state(config, device)
    loss_fn = lambda final: (final[:, :4] - target).square().mean()    # noqa: E731
    if config.name == "growing":
        model = GrowingNCA(config.channels, config.hidden).to(device)
        with torch.no_grad():
            model.act.weight.normal_(0.0, 0.02)
        table = {"plain": lambda m, s, n: m.rollout(s, n),
                 "fast": lambda m, s, n: cell_network.growing_rollout(m, s, n),
                 "fast, dense": lambda m, s, n: cell_network.growing_rollout(m, s, n, plan="dense"),
                 "fast, sparse": lambda m, s, n: cell_network.growing_rollout(m, s, n, plan="sparse")}
    else:
        rule = ConditionedRule("hyper", config.channels, config.hidden)
        with torch.no_grad():
            rule.act.weight.normal_(0.0, 0.02)
            rule.hypernetwork[2].weight.normal_(0.0, 0.002)
        codes = torch.randn(config.batch, rule.code_size, generator=torch.Generator().manual_seed(5)) * 0.1
        model = CodedRule(rule, codes).to(device)
        table = {"plain": lambda m, s, n: m.rule.rollout(s, n, m.codes),
                 "fast": lambda m, s, n: cell_network.conditioned_rollout(m.rule, s, n, m.codes),
                 "fast, dense": lambda m, s, n: cell_network.conditioned_rollout(m.rule, s, n, m.codes, plan="dense"),
                 "fast, sparse": lambda m, s, n: cell_network.conditioned_rollout(m.rule, s, n, m.codes,
                                                                                  plan="sparse")}
    # "fast" is what plan="auto" runs here; the row naming that plan again is left out
    chosen = cell_network.choose("auto", torch.device(device))
    table.pop(f"fast, {chosen}", None)
    return model, state, loss_fn, table


def describe_rule_plan(device: torch.device) -> str:
    """One line naming what the rules' "fast" rows ran on ``device``."""
    chosen = cell_network.choose("auto", device)
    why = {"sparse": "the network only in the cells that fire next to a living one",
           "dense": "every cell, without autograd's bookkeeping",
           "plain": "the plain model (the fast plan failed its self-check here)"}[chosen]
    return f"helpers.fast.cell_network, plan {chosen!r} for the growing rules ({why}); reaction-diffusion: " + (
        "the hand-written rollout" if cell_network.diffusion_self_check(device) is None else "the plain model")


def bench_rule(config: RuleConfig, device, repeats: int, memory: PeakMemory, log) -> list[dict]:
    """The rows of one rule: every variant timed interleaved (training iteration and inference)."""
    model, states, loss_fn, rollouts = rule_setup(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)    # tiny steps: the model barely moves
    names = list(rollouts)

    def iteration(rollout):
        return training_iteration(model, rollout, states, config.steps, loss_fn, optimizer)

    def measured_memory(rollout):
        cell_network.release_memory()        # so that the arena the fast rollout keeps is counted
        return memory.measure(lambda: iteration(rollout))

    peaks, train_times, infer_times = {}, {name: [] for name in names}, {name: [] for name in names}
    for repeat in range(repeats + 1):
        log(f"  {config.name}: round {repeat + 1} of {repeats + 1}" + (" (warm-up, memory)" if repeat == 0 else ""))
        for name in names:
            if repeat == 0:
                peaks[name] = measured_memory(rollouts[name])
            else:
                train_times[name].append(timed(lambda: iteration(rollouts[name]), device))
            with torch.no_grad():
                duration = timed(lambda: rollouts[name](model, states, config.steps), device)
            if repeat > 0:
                infer_times[name].append(duration)
    cells = config.batch * config.size * config.size * config.steps
    flops = 3 * forward_flops_per_cell(config) * cells
    plain_train, plain_infer = statistics.median(train_times["plain"]), statistics.median(infer_times["plain"])
    rows = []
    for name in names:
        train, inference = statistics.median(train_times[name]), statistics.median(infer_times[name])
        rows.append({"config": f"{config.name} {config.batch}x{config.size}x{config.size} {config.steps} st",
                     "variant": name, "train_s": train, "speedup": plain_train / train, "loss_s": None,
                     "peak_mib": peaks[name], "updates_per_s": cells / inference,
                     "infer_speedup": plain_infer / inference, "gflops": flops / train / 1e9})
    return rows


def folded_rollout(model: GrowingNCA, state: torch.Tensor, steps: int, generator=None) -> torch.Tensor:
    """The growing rule with its perception folded into the first layer: identity + Sobel, then a 1x1
    layer, is ONE 3x3 convolution (16 -> 128 channels) whose weights mix the two (a candidate)."""
    channels = model.channels
    kernels = model.filters.reshape(channels, 3, 3, 3)                       # [C, k, 3, 3]
    sense = model.sense.weight.reshape(model.hidden, channels, 3)            # [hidden, C, k]
    folded = torch.einsum("hck,ckyx->hcyx", sense, kernels)
    state = state.contiguous(memory_format=torch.channels_last)
    for _ in range(steps):
        before = alive_mask(state, model.alive_threshold)
        fire = torch.rand(state.shape[0], 1, *state.shape[2:], generator=generator) < model.fire_rate
        hidden = torch.relu(torch.nn.functional.conv2d(state, folded, model.sense.bias, padding=1))
        state = state + model.act(hidden) * fire.to(state.dtype)
        state = state * (before & alive_mask(state, model.alive_threshold)).to(state.dtype)
    return state


def rule_candidates(steps: int = 16, repeats: int = 2, progress=None) -> list[dict]:
    """What was measured before choosing the growing rule's fast path on a CPU: one training iteration
    at the article's size (batch 8, 72x72, ``steps`` steps) of each candidate, interleaved, with its
    largest state difference from the plain model (same masks) and its first call's time (compiling)."""
    progress = progress or log
    config = RuleConfig("growing", 8, 72, steps, 16, 128)
    model, state, loss_fn, _ = rule_setup(config, "cpu")
    compiled_step = torch.compile(model.step, dynamic=False)

    def compiled(m, s, n, g):
        s = s.contiguous(memory_format=torch.channels_last)
        for _ in range(n):
            s = compiled_step(s, g)
        return s

    def bfloat16(m, s, n, g):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m.rollout(s, n, g)

    candidates = {"plain": lambda m, s, n, g: m.rollout(s, n, g),
                  "torch.compile(step)": compiled,
                  "bfloat16 autocast": bfloat16,
                  "perception folded into layer 1": folded_rollout,
                  "fast, dense": lambda m, s, n, g: cell_network.growing_rollout(m, s, n, g, plan="dense"),
                  "fast, sparse": lambda m, s, n, g: cell_network.growing_rollout(m, s, n, g, plan="sparse")}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
    times = {name: [] for name in candidates}
    first, error = {}, {}
    with torch.no_grad():      # before any training moves the weights
        reference = model.rollout(state, steps, torch.Generator().manual_seed(1))
        for name, rollout in candidates.items():
            started = time.perf_counter()
            final = rollout(model, state, steps, torch.Generator().manual_seed(1))
            first[name] = time.perf_counter() - started
            error[name] = (final.float() - reference).abs().max().item()
    for repeat in range(repeats + 1):
        for name, rollout in candidates.items():
            progress(f"  candidates: round {repeat + 1} of {repeats + 1}, {name}")

            def same_masks(m, s, n, rollout=rollout):
                return rollout(m, s, n, torch.Generator().manual_seed(1))

            duration = timed(lambda: training_iteration(model, same_masks, state, steps, loss_fn, optimizer),
                             torch.device("cpu"))
            if repeat == 0:
                first[name] += duration       # the first inference and the first training iteration
            else:
                times[name].append(duration)
    plain = statistics.median(times["plain"])
    return [{"candidate": name, "train_s": statistics.median(times[name]),
             "speedup": plain / statistics.median(times[name]), "first_call_s": first[name],
             "state_max_abs_difference": error[name]} for name in candidates]


def rollout_speedup(row: dict, plain: dict) -> float:
    """Speed-up of the training iteration without the loss's own time (the rollout's part; the rules'
    rows, whose loss is a cheap pixel loss, were not measured without it: nan)."""
    if row["loss_s"] is None or plain["loss_s"] is None:
        return float("nan")
    fast_part, plain_part = row["train_s"] - row["loss_s"], plain["train_s"] - plain["loss_s"]
    return plain_part / fast_part if fast_part > 0 else float("nan")


def print_table(rows: list[dict], out=None) -> None:
    out = out or sys.stdout
    header = (f"{'config':28s} {'variant':20s} {'train iter (s)':>14s} {'speed-up':>9s} {'w/o loss':>9s} "
              f"{'peak mem (MiB)':>15s} {'inference (cell updates/s)':>27s} {'speed-up':>9s} {'GFLOP/s':>8s}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for row in rows:
        plain = next(other for other in rows if other["config"] == row["config"] and other["variant"] == "plain")
        peak = "n/a" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        without_loss = rollout_speedup(row, plain)
        without_loss = f"{without_loss:8.2f}x" if without_loss == without_loss else f"{'-':>9s}"
        print(f"{row['config']:28s} {row['variant']:20s} {row['train_s']:14.3f} {row['speedup']:8.2f}x "
              f"{without_loss} {peak:>15s} {row['updates_per_s']:27.3g} "
              f"{row['infer_speedup']:8.2f}x {row['gflops'] if 'gflops' in row else float('nan'):8.1f}", file=out)
    for config in dict.fromkeys(row["config"] for row in rows):
        plain = next(row for row in rows if row["config"] == config and row["variant"] == "plain")
        if plain["loss_s"] is None:
            continue
        print(f"{config}: the loss alone (forward + backward) takes {plain['loss_s']:.3f} s, "
              f"{100 * plain['loss_s'] / plain['train_s']:.0f}% of the plain iteration", file=out)


def log(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def main(argv=None, prog: str | None = None) -> list[dict]:
    """Run the benchmark with command-line arguments ``argv`` (default: ``sys.argv[1:]``), print the
    table and return its rows. ``prog`` names the command in the help (default ``python -m helpers.bench``),
    for another command line that hands its arguments on."""
    parser = argparse.ArgumentParser(prog=prog or "python -m helpers.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="reference steps, 5 rounds (default: quick)")
    parser.add_argument("--small", action="store_true", help="tiny grids and few steps (a smoke test)")
    parser.add_argument("--repeats", type=int, help="timed rounds per configuration (default 2 quick, 5 full)")
    parser.add_argument("--configs", nargs="+", default=ALL_CONFIGS, choices=ALL_CONFIGS,
                        help="which configurations (default: all)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: helpers.env.get_device())")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the machine's description as JSON")
    parser.add_argument("--candidates", action="store_true",
                        help="instead: the candidate fast paths of the growing rule on the CPU (rule_candidates)")
    args = parser.parse_args(argv)
    if args.candidates:
        if args.threads:
            torch.set_num_threads(args.threads)
        rows = rule_candidates(steps=80 if args.full else 16, repeats=args.repeats or 2)
        print(f"growing rule, batch 8, 72x72, {80 if args.full else 16} steps, {torch.get_num_threads()} threads: "
              "one training iteration, medians, interleaved")
        for row in rows:
            print(f"{row['candidate']:32s} {row['train_s']:8.3f} s {row['speedup']:6.2f}x   first call "
                  f"{row['first_call_s']:7.2f} s   state differs by {row['state_max_abs_difference']:.1e}")
        return rows
    device = env.get_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.full else 2)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    memory = PeakMemory(device)
    machine = env.describe_device(device)
    print(f"device {machine}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{repeats} timed rounds (medians), VGG16 with random weights (same cost as trained)")
    rows = []
    started = time.perf_counter()
    for config in CONFIGS:
        if args.small:
            config = Config(config.name, 2, 24, 8, config.loss)
        elif not args.full:
            config = Config(config.name, config.batch, config.size, config.steps // 2, config.loss)
        if config.name in args.configs:
            log(f"{config.name}: batch {config.batch}, {config.size}x{config.size}, {config.steps} steps, "
                f"{config.loss} loss")
            rows += bench_config(config, device, repeats, memory, log)
    for config in RULE_CONFIGS:
        if args.small:
            config = RuleConfig(config.name, 2, 24, 6, config.channels, config.hidden)
        elif not args.full:
            config = RuleConfig(config.name, config.batch, config.size, config.steps // 2, config.channels,
                                config.hidden)
        if config.name in args.configs:
            log(f"{config.name}: batch {config.batch}, {config.size}x{config.size}, {config.steps} steps, "
                f"{config.channels} channels, {config.hidden} hidden")
            rows += bench_rule(config, device, repeats, memory, log)
    print_table(rows)
    print("speed-up: plain time / this variant's time, measured interleaved in this process.")
    print("w/o loss: the same ratio after subtracting the loss's own time (the rollout's part).")
    print("fast: " + describe_backend(device))
    if any(row["config"].split()[0] in {c.name for c in RULE_CONFIGS} for row in rows):
        print("fast (growing, manifold, rd): " + describe_rule_plan(device))
        print("GFLOP/s: the plain model's arithmetic for one iteration (every cell, 3x the forward) / its time.")
    print("peak mem: " + ("CUDA max_memory_allocated during one training iteration." if device.type == "cuda"
                          else "growth of peak resident memory (VmHWM) during one training iteration."
                          if memory.available else "not measurable here (needs CUDA or Linux)."))
    print("bit masks: Bernoulli(0.5) masks from random bits: the same distribution, not the same draws;")
    print("           the other fast rows draw exactly the plain version's masks (torch.rand).")
    total = time.perf_counter() - started
    print(f"total {total:.0f} s")
    if args.json:
        write_json(args.json, rows, {"device": str(device), "machine": machine, "torch": torch.__version__,
                                     "threads": torch.get_num_threads(), "repeats": repeats,
                                     "fast": describe_backend(device), "fast_rules": describe_rule_plan(device),
                                     "mode": "full" if args.full else
                                     "small" if args.small else "quick", "seconds": total})
    return rows


def write_json(path, rows: list[dict], about: dict) -> None:
    """The table's rows (and what machine measured them) as JSON, for a report or README."""
    import json

    plain = {row["config"]: row for row in rows if row["variant"] == "plain"}
    table = []
    for row in rows:
        without_loss = rollout_speedup(row, plain[row["config"]])
        table.append({**row, "speedup_without_loss": without_loss if without_loss == without_loss else None})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**about, "rows": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
