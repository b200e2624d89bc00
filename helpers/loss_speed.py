"""How fast is the VGG16 style loss on this machine, and what makes it faster? (chapter 03's CPU cost)

    python -m helpers.loss_speed                 # batch 4, 128x128: the texture benchmark's loss
    python -m helpers.loss_speed --threads 1 --repeats 7 --compile

On a CPU the texture training iteration is bound by the style loss (``helpers.bench``: about half of
the fast engine's iteration), so this measures ONE forward and backward pass of
``losses.VGGStyleLoss`` (the gradient reaches the images, as in training) in several variants, in one
process, interleaved round by round (so a busy machine slows them alike), and prints for each: the
median time, its speed-up over the plain loss, and how far its value and its gradient are from the
plain loss's (relative difference, 1e-6 means float noise):

* ``plain``: the loss as chapter 03 uses it;
* ``channels-last``: the VGG layers and the images in channels-last memory order (NHWC), which
  oneDNN's CPU convolutions prefer; the same arithmetic in another order;
* ``bf16``: ``torch.autocast("cpu", torch.bfloat16)``: convolutions in bfloat16 (8-bit mantissa),
  fast on CPUs with AVX-512 BF16 or AMX; the values change, by the figure printed;
* ``channels-last + bf16``;
* ``compiled`` (with ``--compile``): ``torch.compile`` of the whole loss (its first call, the
  compilation, is timed apart).

The VGG16 has random weights (``torchvision.models.vgg16(weights=None)``): the same cost as the
trained one, nothing downloaded.
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch

from .losses import VGGStyleLoss


def random_features() -> torch.nn.Sequential:
    import torchvision  # only this measurement needs it (as helpers.bench)

    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).features[:26].eval()


def make_variant(name: str, features: torch.nn.Sequential, target: torch.Tensor):
    """``loss(images) -> [B]`` for the variant ``name`` (a loss over its own copy of the layers)."""
    layers = torch.nn.Sequential(*[layer for layer in features]).eval()
    layers.load_state_dict(features.state_dict())
    channels_last = "channels-last" in name
    if channels_last:
        layers = layers.to(memory_format=torch.channels_last)
    loss = VGGStyleLoss(target, features=layers)
    if name == "compiled":
        loss = torch.compile(loss)        # the whole loss: normalization, layers and Gram matrices
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in name else nullcontext()

    def run(images: torch.Tensor) -> torch.Tensor:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with precision:
            return loss(images).float()

    return run


def forward_backward(loss, images: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Seconds for one forward and backward pass, the loss [B] and the images' gradient."""
    images = images.detach().clone().requires_grad_(True)
    start = time.perf_counter()
    value = loss(images)
    value.sum().backward()
    return time.perf_counter() - start, value.detach(), images.grad


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30)).item()


def measure(batch: int = 4, size: int = 128, repeats: int = 5, compile: bool = False, log=print) -> list[dict]:
    """Every variant's median time, speed-up over plain and value/gradient differences (see the module)."""
    features = random_features()
    target = torch.rand(3, size, size, generator=torch.Generator().manual_seed(1))
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(2))
    names = ["plain", "channels-last", "bf16", "channels-last + bf16"] + (["compiled"] if compile else [])
    variants = {name: make_variant(name, features, target) for name in names}
    reference, first_call = {}, {}
    for name, loss in variants.items():               # a warm-up call each (compilation, oneDNN plans)
        first_call[name], value, gradient = forward_backward(loss, images)
        reference[name] = (value, gradient)
        log(f"  {name}: first call {first_call[name]:.2f} s")
    times = {name: [] for name in names}
    for _ in range(repeats):
        for name, loss in variants.items():
            times[name].append(forward_backward(loss, images)[0])
    plain_time = statistics.median(times["plain"])
    rows = []
    for name in names:
        value, gradient = reference[name]
        median = statistics.median(times[name])
        rows.append({"variant": name, "seconds": median, "speedup": plain_time / median,
                     "first_call_seconds": first_call[name],
                     "value_difference": relative(value, reference["plain"][0]),
                     "gradient_difference": relative(gradient, reference["plain"][1])})
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m helpers.loss_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (medians)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the layers")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.batch < 1 or args.size < 32:
        parser.error("need --repeats >= 1, --batch >= 1 and --size >= 32 (VGG pools the image four times)")
    print(f"VGG16 style loss, forward + backward, batch {args.batch}, {args.size}x{args.size}, CPU, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {args.repeats} interleaved rounds")
    rows = measure(args.batch, args.size, args.repeats, args.compile)
    print(f"{'variant':22s} {'median s':>9s} {'speed-up':>9s} {'value diff':>11s} {'gradient diff':>14s}")
    for row in rows:
        print(f"{row['variant']:22s} {row['seconds']:9.3f} {row['speedup']:8.2f}x {row['value_difference']:11.1e} "
              f"{row['gradient_difference']:14.1e}")
    print("diff: |variant - plain| / |plain| of the loss values and of the images' gradient (1e-6: float noise).")
    return rows


if __name__ == "__main__":
    main()
