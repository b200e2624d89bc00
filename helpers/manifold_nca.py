"""One growing NCA for many images (chapter 07; the idea of the Neural Cellular Automata Manifold,
Hernandez Ruiz, Vilalta and Moreno-Noguer, CVPR 2021).

Chapter 06's rule grows ONE image. Here every image has a *code*, a short vector (``code_size``
numbers, the image's "DNA"), and one shared system grows whichever image the code names. The
cells, their perception and their life and death are chapter 06's (``helpers.growing_nca``); what
is new is how the code reaches the rule. Three ways, compared in the chapter:

* ``broadcast``: every cell reads the code next to its perception (48 + code numbers in, as a
  one-hot label in a conditional NCA);
* ``stamp``: the code is written once into the seed cell's hidden channels (StampCA); the rule is
  chapter 06's, unchanged, and the cells must pass the code on to each other as they grow;
* ``hyper``: a small network turns the code into the weights of the rule (the manifold paper's
  "dynamic convolutions", a hypernetwork): every image gets its own rule, all applied in one
  batched step.

``ManifoldNCA`` holds the conditioned rule, a table of learned codes for the training images and an
encoder (a small convolutional network, image -> code) for images it never saw.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import growing_nca
from .checks import check_steps
from .growing_nca import ALPHA, CHANNELS, alive_mask, check_state, depthwise_filters, perceive, seed_state

METHODS = ("broadcast", "stamp", "hyper")
CODE_SIZE = 12                 # = the 12 hidden channels of a 16-channel cell: the stamp fills them all


class ConditionedRule(nn.Module):
    """Chapter 06's step, with a code per image. ``codes``: ``[batch, code_size]``."""

    def __init__(self, method: str, channels: int = CHANNELS, hidden: int = 64, code_size: int = CODE_SIZE,
                 hyper_hidden: int = 32, fire_rate: float = 0.5, alive_threshold: float = 0.1):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        growing_nca.check_cell_options(channels, hidden, fire_rate, alive_threshold)     # as chapter 06's rule
        for name, value, what in (("code_size", code_size, "the numbers of an image's code"),
                                  ("hyper_hidden", hyper_hidden, "the width of the hypernetwork's hidden layer")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} ({what}) must be a whole number >= 1, got {value!r}")
        if method == "stamp" and code_size > channels - ALPHA - 1:
            raise ValueError(f"the stamp writes the code into the {channels - ALPHA - 1} hidden channels of the "
                             f"seed cell: code_size must be at most that, got {code_size}")
        self.method, self.channels, self.hidden, self.code_size = method, channels, hidden, code_size
        self.fire_rate, self.alive_threshold = fire_rate, alive_threshold
        self.register_buffer("filters", depthwise_filters(channels))
        senses = 3 * channels + (code_size if method == "broadcast" else 0)
        self.sense = nn.Conv2d(senses, hidden, 1)
        self.act = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.act.weight)      # an untrained rule changes nothing, as in chapter 06
        nn.init.zeros_(self.act.bias)
        if method == "hyper":
            # the code -> an offset of every weight of the rule; the last layer starts at zero, so at
            # first every image shares the rule above and training moves each one away from it
            self.rule_size = sum(p.numel() for p in (self.sense.weight, self.sense.bias, self.act.weight,
                                                     self.act.bias))
            self.hypernetwork = nn.Sequential(nn.Linear(code_size, hyper_hidden), nn.ReLU(),
                                              nn.Linear(hyper_hidden, self.rule_size))
            nn.init.zeros_(self.hypernetwork[2].weight)
            nn.init.zeros_(self.hypernetwork[2].bias)

    def rule_weights(self, codes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each image's rule: ``(sense_w [B, hidden, 3C], sense_b [B, hidden], act_w [B, C, hidden],
        act_b [B, C])``. For ``broadcast`` and ``stamp`` every image gets the shared weights (the
        broadcast code enters as a per-image bias of the hidden layer, see ``change``)."""
        batch = codes.shape[0]
        sense_w = self.sense.weight.flatten(1)[:, :3 * self.channels]
        shared = [sense_w, self.sense.bias, self.act.weight.flatten(1), self.act.bias]
        shared = [w.expand(batch, *w.shape) for w in shared]
        if self.method != "hyper":
            return tuple(shared)
        offsets = self.hypernetwork(codes)
        pieces, start = [], 0
        for w in shared:
            size = w[0].numel()
            pieces.append(w + offsets[:, start:start + size].reshape(w.shape))
            start += size
        return tuple(pieces)

    def change(self, state: torch.Tensor, codes: torch.Tensor, weights: tuple | None = None) -> torch.Tensor:
        """What every cell would add this step. ``weights``: ``rule_weights(codes)``, if computed already.

        Each image's weights are applied to its own cells with one batched matrix product. For
        ``broadcast``, concatenating the code to every cell's 48 perceptions and multiplying by the
        first layer is the same as adding ``W_code @ code`` to that layer's bias, once per image
        (chapter 07 writes the concatenation and checks that the two agree)."""
        sense_w, sense_b, act_w, act_b = self.rule_weights(codes) if weights is None else weights
        if self.method == "broadcast":
            code_w = self.sense.weight.flatten(1)[:, 3 * self.channels:]
            sense_b = sense_b + codes @ code_w.T
        cells = rearrange(perceive(state, self.filters), "b c h w -> b (h w) c")
        hidden = F.relu(torch.baddbmm(sense_b[:, None, :], cells, sense_w.transpose(1, 2)))
        change = torch.baddbmm(act_b[:, None, :], hidden, act_w.transpose(1, 2))
        return rearrange(change, "b (h w) c -> b c h w", h=state.shape[2])

    def step(self, state: torch.Tensor, codes: torch.Tensor, generator: torch.Generator | None = None,
             fire: torch.Tensor | None = None, weights: tuple | None = None) -> torch.Tensor:
        """One step of chapter 06 (alive masks before and after, random updates) for these codes."""
        check_state(state, self.channels)
        check_codes(codes, state.shape[0], self.code_size)
        before = alive_mask(state, self.alive_threshold)
        if fire is None:
            fire = torch.rand(state.shape[0], 1, *state.shape[2:], generator=generator,
                              device=state.device) < self.fire_rate
        state = state + self.change(state, codes, weights) * fire.to(state.dtype)
        after = alive_mask(state, self.alive_threshold)
        return state * (before & after).to(state.dtype)

    def rollout(self, state: torch.Tensor, steps: int, codes: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``steps`` steps; each image's rule is made from its code once, before the first step."""
        steps = check_steps(steps)
        check_state(state, self.channels)
        check_codes(codes, state.shape[0], self.code_size)      # before the hypernetwork sees them
        weights = self.rule_weights(codes)
        for _ in range(steps):
            state = self.step(state, codes, generator, weights=weights)
        return state

    def seed(self, codes: torch.Tensor, size: int) -> torch.Tensor:
        """One seed cell per code, in the middle of a ``size`` x ``size`` grid; with ``stamp`` the
        code is written into the seed's first hidden channels (the others stay 1, as in chapter 06)."""
        check_codes(codes, codes.shape[0] if isinstance(codes, torch.Tensor) and codes.dim() == 2 else None,
                    self.code_size)
        state = seed_state(codes.shape[0], size, self.channels, device=codes.device).to(codes.dtype)
        if self.method == "stamp":
            middle = size // 2
            state = state.clone()
            state[:, ALPHA + 1:ALPHA + 1 + self.code_size, middle, middle] = codes
        return state


def check_codes(codes: torch.Tensor, batch: int | None, code_size: int) -> None:
    """Codes must be ``[batch, code_size]``: one row per image (``batch`` None: any number of rows)."""
    rows = "N" if batch is None else f"batch={batch}"
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.shape[1] != code_size or (
            batch is not None and codes.shape[0] != batch):
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"codes must be a tensor of shape [{rows}, code_size={code_size}] (one row per image), "
                         f"got {shape}; for one code use code[None]")
    if not codes.is_floating_point() or not bool(torch.isfinite(codes).all()):
        raise ValueError(f"codes must hold finite floating point numbers, got {codes.dtype}"
                         f"{' with NaN or infinite values' if codes.is_floating_point() else ''}; use codes.float()")


class Encoder(nn.Module):
    """Image -> code: three strided 3x3 convolutions (each halves the side), an average over the
    remaining cells, a linear layer. Deterministic: no dropout, no batch statistics."""

    def __init__(self, code_size: int = CODE_SIZE, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(4, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.to_code = nn.Linear(2 * width, code_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"the encoder reads premultiplied RGBA images [batch, 4, height, width], got {shape}")
        return self.to_code(self.features(images).mean(dim=(2, 3)))


class ManifoldNCA(nn.Module):
    """The conditioned rule, a learned code per training image (``codes``) and the encoder."""

    architecture = "ManifoldNCA"     # what a saved model's JSON records (helpers.models.save)

    def __init__(self, method: str = "hyper", image_count: int = 48, channels: int = CHANNELS, hidden: int = 64,
                 code_size: int = CODE_SIZE, hyper_hidden: int = 32, encoder_width: int = 32,
                 fire_rate: float = 0.5, alive_threshold: float = 0.1):
        super().__init__()
        if not isinstance(image_count, int) or image_count < 1:
            raise ValueError(f"image_count must be a positive integer, got {image_count!r}")
        self.rule = ConditionedRule(method, channels, hidden, code_size, hyper_hidden, fire_rate, alive_threshold)
        self.codes = nn.Embedding(image_count, code_size)
        nn.init.normal_(self.codes.weight, std=0.1)
        self.encoder = Encoder(code_size, encoder_width)
        self.settings = dict(method=method, image_count=image_count, channels=channels, hidden=hidden,
                             code_size=code_size, hyper_hidden=hyper_hidden, encoder_width=encoder_width,
                             fire_rate=fire_rate, alive_threshold=alive_threshold)

    @property
    def method(self) -> str:
        return self.rule.method

    @property
    def filters(self) -> torch.Tensor:       # where the model lives (as for the other rules)
        return self.rule.filters

    def config(self) -> dict:
        return dict(self.settings)

    def grow(self, codes: torch.Tensor, size: int, steps: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """From one seed per code, ``steps`` steps on a ``size`` x ``size`` grid."""
        return self.rollout(self.rule.seed(codes, size), steps, codes, generator)

    def rollout(self, state: torch.Tensor, steps: int, codes: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``steps`` steps of the conditioned rule from ``state``, each image with its code (the pool
        loop's rollout: state, steps, then the per-entry condition)."""
        return self.rule.rollout(state, steps, codes, generator)

    def forward(self, codes: torch.Tensor, size: int, steps: int) -> torch.Tensor:
        return self.grow(codes, size, steps)
