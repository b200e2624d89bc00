"""Losses for growing textures with a neural cellular automaton (chapter 03).

* ``VGGStyleLoss``      the style loss of Gatys et al.: Gram matrices of VGG16 features
                        (relu1_1 ... relu5_1) of the output against those of the target image.
* ``SlicedWassersteinLoss`` a VGG-free texture loss: the sliced Wasserstein distance between the
                        distributions of small image patches of the output and of the target, at
                        several scales. It needs no downloaded weights.
* ``RotationInvariantLoss`` (chapter 08) wraps a texture loss so that it does not care which way
                        the pattern points: the loss to the best of several turned copies of the target.
* ``overflow_loss``     keeps every state value inside [-1, 1].

The VGG16 weights are the course's one download. ``load_vgg16_features`` takes them, in order, from
a local file (argument or the environment variable ``DSOS_VGG16_WEIGHTS``: a ``state_dict`` saved from
``torchvision.models.vgg16``), from torch.hub's cache (where torchvision keeps them), or from the
internet (with a progress bar). When none works it raises ``VGGUnavailable`` saying why and how to
provide them; chapters catch exactly that and switch to the VGG-free loss.

Only the layers the loss uses are built and loaded: the eleven convolutions up to relu5_1 (10.0
million of VGG16's 138.4 million parameters). The checkpoint's other entries (the classifier is 124
million parameters, 471 MB) are dropped before anything is built, and files in torch's zip format
are memory-mapped so that those entries are never read. ``python -m helpers.losses --peak-memory``
prints what loading and one training step of the loss cost (see README, Hardware notes).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

#: Environment variable naming a local VGG16 weights file (a state_dict of torchvision's vgg16).
VGG_WEIGHTS_ENV = "DSOS_VGG16_WEIGHTS"

#: Positions of the style layers inside ``torchvision.models.vgg16().features``.
STYLE_LAYERS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 18, "relu5_1": 25}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGUnavailable(RuntimeError):
    """The VGG16 ImageNet weights could not be loaded (offline, no cached copy, or a bad file)."""


# ------------------------------------------------------------------------------ Gram matrices

def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``G[b, c, d] = mean over positions of features[b, c] * features[b, d]``: [B, C, C].

    The Gram matrix forgets *where* a feature fired and keeps *which features fire together*:
    exactly the statistics that describe a texture.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be shaped [batch, channels, height, width], got {tuple(features.shape)}")
    positions = features.shape[2] * features.shape[3]
    return torch.einsum("bchw,bdhw->bcd", features, features) / positions


def style_distance(grams_a: list[torch.Tensor], grams_b: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the mean squared difference of Gram matrices, one value per image [B]."""
    if len(grams_a) != len(grams_b):
        raise ValueError(f"need the same number of layers, got {len(grams_a)} and {len(grams_b)}")
    return sum(((a - b) ** 2).mean(dim=(1, 2)) for a, b in zip(grams_a, grams_b))


# ------------------------------------------------------------------------------------- VGG16

#: torchvision's VGG16 ImageNet weights (``VGG16_Weights.IMAGENET1K_V1``; a test checks they agree).
#: The hex digits in the name are the start of the file's SHA-256, checked after a download.
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"

#: VGG16's convolutional part up to relu5_1 (torchvision's configuration "D", cut there): the output
#: channels of each 3x3 convolution (each followed by a ReLU), "M" a 2x2 max-pool.
VGG16_UP_TO_RELU5_1 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512]


def build_vgg16_features() -> nn.Sequential:
    """An untrained VGG16 feature stack up to relu5_1, numbered as torchvision's ``vgg16().features``
    (layer 0 the first convolution, 25 = relu5_1), so that its state_dict keys match theirs."""
    layers, channels = [], 3
    for item in VGG16_UP_TO_RELU5_1:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    assert len(layers) == STYLE_LAYERS["relu5_1"] + 1
    return nn.Sequential(*layers)


def _vgg16_used_keys() -> list[str]:
    """The state_dict keys of ``build_vgg16_features()`` ("0.weight", "0.bias", "2.weight", ...)."""
    keys, index = [], 0
    for item in VGG16_UP_TO_RELU5_1:
        if item == "M":
            index += 1
        else:
            keys += [f"{index}.weight", f"{index}.bias"]
            index += 2                                   # the convolution and its ReLU
    return keys


#: The 22 tensors (11 convolutions) of a VGG16 checkpoint that the style loss uses.
VGG16_USED_KEYS = _vgg16_used_keys()


def _freeze(features: nn.Sequential) -> nn.Sequential:
    features.eval()
    for parameter in features.parameters():
        parameter.requires_grad_(False)
    return features


def _used_weights(state_dict, source: str) -> dict[str, torch.Tensor]:
    """The entries of a torchvision vgg16 state_dict (or of its ``features``) that the loss uses,
    keyed as in ``build_vgg16_features()``; everything else (conv5_2 on, the classifier) is dropped."""
    if not isinstance(state_dict, dict):
        raise VGGUnavailable(f"{source} does not hold a state_dict (got {type(state_dict).__name__}); "
                             "save one with torch.save(torchvision.models.vgg16(weights=...).state_dict(), path)")
    wanted = VGG16_USED_KEYS
    prefix = "features." if any(str(key).startswith("features.") for key in state_dict) else ""
    used = {key: state_dict[prefix + key] for key in wanted if prefix + key in state_dict}
    missing = [prefix + key for key in wanted if key not in used]
    if missing:
        raise VGGUnavailable(f"{source} is not a VGG16 state_dict of torchvision's format: it lacks "
                             f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    return used


def _load_file(path: Path) -> dict:
    """``torch.load`` of a weights file, memory-mapped when its format allows (torch's zip format):
    the tensors the loss does not use are then never read from disk."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError, OSError):      # the legacy format cannot be mapped: read it all
        return torch.load(path, map_location="cpu", weights_only=True)


def _features_from_file(path: Path) -> nn.Sequential:
    try:
        state_dict = _load_file(path)
    except Exception as error:  # a corrupt or foreign file: say so, keep the cause attached
        raise VGGUnavailable(f"could not read {path} as a torch state_dict ({error}). {HOW_TO_PROVIDE}") from error
    used = _used_weights(state_dict, str(path))
    del state_dict                                   # the unused entries go before anything is built
    features = build_vgg16_features()
    try:
        features.load_state_dict(used)
    except RuntimeError as error:
        raise VGGUnavailable(f"{path} is not a VGG16 state_dict of torchvision's format: {error}") from error
    return _freeze(features)


def cached_weights_path() -> Path:
    """Where the downloaded VGG16 weights are kept: torch.hub's checkpoint folder, as torchvision does."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(VGG16_URL).path)


def _can_reach(url: str, timeout: float = 3.0) -> bool:
    """A quick check that the weights' server answers, so an offline machine fails in seconds."""
    host = urlparse(url).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


HOW_TO_PROVIDE = (f"To use the VGG style loss, run once where there is internet (e.g. Colab), or download "
                  f"torchvision's vgg16 ImageNet weights ({VGG16_URL}) and pass their path as "
                  f"weights_path= or set the environment variable {VGG_WEIGHTS_ENV}=/path/to/file.pth. "
                  f"Otherwise use the VGG-free loss (SlicedWassersteinLoss).")


def load_vgg16_features(weights_path: str | Path | None = None, download: bool = True,
                        progress: bool = True) -> nn.Sequential:
    """VGG16's features (ImageNet weights) up to relu5_1, frozen and in eval mode.

    Tries, in order: ``weights_path`` (or ``$DSOS_VGG16_WEIGHTS``), torch.hub's cache, a download
    into that cache (528 MB, with a progress bar unless ``progress=False``; only when ``download``
    and the server answers within seconds). Raises ``VGGUnavailable`` with the reason and what to
    do when none of them works. Builds and loads only the layers the loss uses.
    """
    weights_path = weights_path or os.environ.get(VGG_WEIGHTS_ENV) or None
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise VGGUnavailable(f"the VGG16 weights file {path} does not exist. {HOW_TO_PROVIDE}")
        return _features_from_file(path)

    cached = cached_weights_path()
    if cached.is_file():
        return _features_from_file(cached)
    if not download:
        raise VGGUnavailable(f"no cached VGG16 weights at {cached} and downloading is switched off. {HOW_TO_PROVIDE}")
    if not _can_reach(VGG16_URL):
        raise VGGUnavailable(f"no cached VGG16 weights at {cached}, and {urlparse(VGG16_URL).hostname} cannot be "
                             f"reached (offline?). {HOW_TO_PROVIDE}")
    hash_prefix = torch.hub.HASH_REGEX.search(cached.name).group(1)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        print(f"Downloading the VGG16 weights (528 MB, once) to {cached}")
        # writes to a temporary file and moves it into place only once complete and its hash checked
        torch.hub.download_url_to_file(VGG16_URL, str(cached), hash_prefix=hash_prefix, progress=progress)
    except Exception as error:  # a failed download has many exception types (URLError, OSError, hash ...)
        raise VGGUnavailable(f"downloading the VGG16 weights from {VGG16_URL} failed: {error}. "
                             f"{HOW_TO_PROVIDE}") from error
    return _features_from_file(cached)


class VGGStyleLoss(nn.Module):
    """Gram-matrix style loss of images in [0, 1] against one target image (Gatys et al. 2015).

    ``loss(images)`` returns one value per image, [B]; take ``.mean()`` for training.
    """

    def __init__(self, target: torch.Tensor, features: nn.Sequential | None = None,
                 weights_path: str | Path | None = None):
        super().__init__()
        target = _check_image(target, "target")
        self.features = features if features is not None else load_vgg16_features(weights_path)
        self.features.eval()
        for parameter in self.features.parameters():
            parameter.requires_grad_(False)
        self.features.to(target.device)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, device=target.device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, device=target.device).view(1, 3, 1, 1))
        with torch.no_grad():
            self.target_grams = [gram.detach() for gram in self.grams(target[None])]

    def layer_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Features at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of ImageNet-normalized images."""
        x = (images - self.mean) / self.std
        wanted = set(STYLE_LAYERS.values())
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                outputs.append(x)
        return outputs

    def grams(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [gram_matrix(features) for features in self.layer_outputs(images)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = _check_image(images, "images", batched=True)
        return style_distance(self.grams(images), [g.expand(images.shape[0], -1, -1) for g in self.target_grams])


# ---------------------------------------------------------------------- VGG-free texture loss

def patches(images: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Every ``size`` x ``size`` patch of every image, wrapping around: [B, 3*size*size, H*W]."""
    half = size // 2
    padded = F.pad(images, (half, half, half, half), mode="circular")
    return F.unfold(padded, kernel_size=size)


def image_pyramid(images: torch.Tensor, scales: int) -> list[torch.Tensor]:
    """The images at full, half, quarter ... resolution (2x2 average pooling between levels)."""
    levels = [images]
    for _ in range(scales - 1):
        if min(levels[-1].shape[-2:]) < 6:
            break
        levels.append(F.avg_pool2d(levels[-1], 2))
    return levels


def random_directions(count: int, dimensions: int, generator: torch.Generator | None = None,
                      device=None) -> torch.Tensor:
    """``count`` random unit vectors in ``dimensions`` dimensions, [count, dimensions]."""
    directions = torch.randn(count, dimensions, generator=generator)
    return (directions / directions.norm(dim=1, keepdim=True)).to(device)


def sorted_projections(points: torch.Tensor, directions: torch.Tensor, samples: int | None = None) -> torch.Tensor:
    """Project point clouds [B, D, N] on directions [K, D] and sort: [B, K, N] (or ``samples``
    evenly spaced quantiles, so clouds of different sizes can be compared)."""
    projected = torch.einsum("kd,bdn->bkn", directions, points).sort(dim=2).values
    if samples is not None and samples != projected.shape[2]:
        projected = F.interpolate(projected, size=samples, mode="linear", align_corners=True)
    return projected


def sliced_wasserstein(points: torch.Tensor, target_points: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Squared sliced Wasserstein-2 distance between each cloud of ``points`` [B, D, N] and the
    target cloud [1, D, M], averaged over the directions [K, D]: one value per image, [B].

    In one dimension optimal transport is easy: sort both and match in order. Random 1-D
    projections ("slices") bring the high-dimensional comparison down to many such sorts.
    """
    count = points.shape[2]
    ours = sorted_projections(points, directions)
    theirs = sorted_projections(target_points, directions, samples=count)
    return ((ours - theirs) ** 2).mean(dim=(1, 2))


#: Directions of the colour term of ``SlicedWassersteinLoss`` (colours are 3-D: a few suffice).
COLOUR_PROJECTIONS = 16


class SlicedWassersteinLoss(nn.Module):
    """VGG-free texture loss: sliced Wasserstein distance between the multi-scale patch
    distributions of the output images and of the target.

    At each of ``scales`` resolutions (halving each time), every ``patch`` x ``patch`` colour patch
    is a point in 3*patch*patch dimensions; output and target should fill that space alike.
    Directions are drawn afresh at every call (pass ``generator`` for a repeatable value).
    ``colour_weight`` adds that many times the sliced Wasserstein distance between the single-pixel
    colour distributions at full resolution (3-D, so a few directions pin it down): the patch term
    alone lets colours blend (one maroon dot where the target has red and navy ones).
    ``loss(images)`` returns one value per image, [B].
    """

    def __init__(self, target: torch.Tensor, scales: int = 4, patch: int = 3, projections: int = 64,
                 colour_weight: float = 0.0):
        super().__init__()
        target = _check_image(target, "target")
        _check_patch_options(scales, patch, projections, colour_weight)
        self.scales, self.patch, self.projections, self.colour_weight = scales, patch, projections, colour_weight
        self.register_buffer("target", target[None].clone())

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        images = _check_image(images, "images", batched=True)
        dimensions = 3 * self.patch * self.patch
        total = images.new_zeros(images.shape[0])
        for ours, theirs in zip(image_pyramid(images, self.scales), image_pyramid(self.target, self.scales)):
            directions = random_directions(self.projections, dimensions, generator, images.device)
            total = total + sliced_wasserstein(patches(ours, self.patch), patches(theirs, self.patch), directions)
        if self.colour_weight:
            directions = random_directions(COLOUR_PROJECTIONS, 3, generator, images.device)
            total = total + self.colour_weight * sliced_wasserstein(images.flatten(2), self.target.flatten(2),
                                                                    directions)
        return total


def _check_patch_options(scales: int, patch: int, projections: int, colour_weight: float) -> None:
    if scales < 1 or patch < 1 or patch % 2 == 0 or projections < 1 or not colour_weight >= 0:
        raise ValueError(f"need scales >= 1, an odd patch size, projections >= 1 and colour_weight >= 0, "
                         f"got scales={scales}, patch={patch}, projections={projections}, "
                         f"colour_weight={colour_weight}")


def rotated(image: torch.Tensor, degrees: float, size: int | None = None) -> torch.Tensor:
    """A tileable texture ``[3, H, W]`` turned counter-clockwise (on screen) by ``degrees``, cut to a
    ``size`` x ``size`` window at the texture's own scale (default: H). Quarter turns are exact
    (``torch.rot90``, tiled); other angles sample a 3x3 tiling of the texture bilinearly, so the turned
    copy has no empty corners."""
    image = _check_image(image, "image")
    size = size or image.shape[-1]
    if degrees % 90 == 0:
        turned = torch.rot90(image, int(degrees // 90) % 4, dims=(-2, -1))
        copies = -(-size // min(turned.shape[-2:]))          # enough tiles to cut a size x size window
        return turned.repeat(1, copies, copies)[:, :size, :size]
    height, width = image.shape[-2:]
    tiled = image.repeat(1, 3, 3)[None]
    angle = torch.tensor(degrees * torch.pi / 180)
    cos, sin = torch.cos(angle).item(), torch.sin(angle).item()
    # output pixel (x, y) in [-1, 1] of a size-cell window reads the tiling at the turned position;
    # the tiling spans 3x the texture, so one texture side is 2/3 in its normalized coordinates
    scale_x, scale_y = size / (3 * width), size / (3 * height)
    theta = torch.tensor([[cos * scale_x, sin * scale_y, 0.0], [-sin * scale_x, cos * scale_y, 0.0]])
    grid = F.affine_grid(theta[None], [1, 3, size, size], align_corners=False)
    return F.grid_sample(tiled, grid.to(image), mode="bilinear", padding_mode="reflection", align_corners=False)[0]


class RotationInvariantLoss(nn.Module):
    """A texture loss that does not penalize the pattern's orientation (chapter 08).

    A rule with no sense of direction cannot choose which way its stripes run: the random starting
    state chooses. A plain texture loss would punish every orientation but the target's, so instead
    each image is compared with ``angles`` copies of the target turned evenly over a full turn and
    scored by the BEST match. The comparison is ``SlicedWassersteinLoss``'s (same ``options``): the
    images' sorted projections are computed once per call and compared with every turned copy's on
    the same random directions. ``per_angle(images)`` is [B, angles]; ``loss(images)`` its minimum, [B]."""

    def __init__(self, target: torch.Tensor, angles: int = 8, scales: int = 4, patch: int = 3,
                 projections: int = 64, colour_weight: float = 0.0):
        super().__init__()
        target = _check_image(target, "target")
        if not (isinstance(angles, int) and angles >= 1):
            raise ValueError(f"angles must be a whole number >= 1, got {angles!r}")
        _check_patch_options(scales, patch, projections, colour_weight)
        self.scales, self.patch, self.projections, self.colour_weight = scales, patch, projections, colour_weight
        self.degrees = [360 * k / angles for k in range(angles)]
        self.register_buffer("targets", torch.stack([rotated(target, d) for d in self.degrees]))

    def per_angle(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss to every turned target, [B, angles]."""
        images = _check_image(images, "images", batched=True)
        dimensions = 3 * self.patch * self.patch
        total = images.new_zeros(images.shape[0], len(self.degrees))
        for ours, theirs in zip(image_pyramid(images, self.scales), image_pyramid(self.targets, self.scales)):
            directions = random_directions(self.projections, dimensions, generator, images.device)
            total = total + _distances_to_each(patches(ours, self.patch), patches(theirs, self.patch), directions)
        if self.colour_weight:
            directions = random_directions(COLOUR_PROJECTIONS, 3, generator, images.device)
            colours = _distances_to_each(images.flatten(2), self.targets.flatten(2), directions)
            total = total + self.colour_weight * colours
        return total

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.per_angle(images, generator).min(dim=1).values


def _distances_to_each(points: torch.Tensor, targets: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``sliced_wasserstein`` from every cloud [B, D, N] to every target cloud [A, D, M]: [B, A]."""
    ours = sorted_projections(points, directions)                                  # [B, K, N]
    theirs = sorted_projections(targets, directions, samples=points.shape[2])      # [A, K, N]
    return ((ours[:, None] - theirs[None]) ** 2).mean(dim=(2, 3))


# -------------------------------------------------------------------------------- overflow

def overflow_loss(state: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    """How far the state values lie outside [-limit, limit]: sum of |excess| per sample, [B].

    Zero while every value stays inside; it keeps the rule's numbers in a small known range,
    which is what makes the rule easy to quantize to 8 bits later.
    """
    if state.ndim < 2:
        raise ValueError(f"state must have a batch dimension, got shape {tuple(state.shape)}")
    excess = state - state.clamp(-limit, limit)
    return excess.abs().flatten(1).sum(dim=1)


# ------------------------------------------------------------------------------------ checks

def _check_image(images: torch.Tensor, name: str, batched: bool = False) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(images).__name__}")
    expected = 4 if batched else 3
    layout = "[batch, 3, height, width]" if batched else "[3, height, width]"
    if images.ndim != expected or images.shape[-3] != 3:
        raise ValueError(f"{name} must be an RGB image shaped {layout} with values in [0, 1], "
                         f"got shape {tuple(images.shape)}")
    return images.float()


# ------------------------------------------------------------------------- peak memory, measured

def random_vgg16_checkpoint(path: str | Path, legacy_format: bool = False) -> Path:
    """Save a full-size VGG16 state_dict with random weights (528 MB, torchvision's keys and shapes):
    a stand-in for the ImageNet file with the same size and cost. Needs torchvision."""
    import torchvision

    state_dict = torchvision.models.vgg16(weights=None).state_dict()
    torch.save(state_dict, path, _use_new_zipfile_serialization=not legacy_format)
    return Path(path)


def _peak_rss_mib() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024      # bytes on macOS, KiB on Linux


def measure_peak_memory(weights_path: str | Path, batch: int = 4, size: int = 128, device: str = "cpu",
                        full_network: bool = False) -> dict:
    """Peak memory of THIS process (run it in a fresh one): after imports, after building the loss from
    ``weights_path``, after one forward and backward pass on ``batch`` images of ``size``² pixels.

    ``full_network=True`` loads as the course did before: torchvision's whole vgg16 built and loaded,
    then cut at relu5_1 (for comparison)."""
    report = {"after_imports": _peak_rss_mib()}
    target = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    if full_network:
        import torchvision

        model = torchvision.models.vgg16(weights=None)
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        features = _freeze(model.features[: STYLE_LAYERS["relu5_1"] + 1])
        del model
        loss = VGGStyleLoss(target, features=features)
    else:
        loss = VGGStyleLoss(target, weights_path=weights_path)
    report["after_loading"] = _peak_rss_mib()
    report["parameters"] = sum(parameter.numel() for parameter in loss.parameters())
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    images.requires_grad_(True)
    loss(images).mean().backward()
    report["after_step"] = _peak_rss_mib()
    if device.startswith("cuda"):
        report["cuda_max_allocated"] = torch.cuda.max_memory_allocated() / 2**20
    return report


def _peak_memory_command(argv: list[str]) -> None:
    import argparse
    import json
    import subprocess
    import sys
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m helpers.losses --peak-memory",
                                     description="Peak memory of the VGG16 style loss: loading, then one "
                                                 "forward and backward pass. Each measurement runs in a "
                                                 "fresh process.")
    parser.add_argument("--peak-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help="a VGG16 state_dict file (default: the cached ImageNet weights if "
                                          "present, else a random full-size one made in a temporary folder)")
    parser.add_argument("--legacy-format", action="store_true",
                        help="make the random file in torch's legacy (non-zip) format, which cannot be mapped")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compare", action="store_true",
                        help="also measure the whole torchvision network built and loaded (the old way)")
    parser.add_argument("--child", choices=["used", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_peak_memory(args.weights, args.batch, args.size, args.device,
                                             full_network=args.child == "full")))
        return
    with tempfile.TemporaryDirectory() as scratch:
        weights = args.weights or (str(cached_weights_path()) if cached_weights_path().is_file() else None)
        origin = "given"
        if weights is None:
            weights = str(Path(scratch) / "vgg16_random.pth")
            subprocess.run([sys.executable, "-c", "import sys; from helpers.losses import random_vgg16_checkpoint; "
                            "random_vgg16_checkpoint(sys.argv[1], sys.argv[2] == '1')", weights,
                            "1" if args.legacy_format else "0"], check=True)
            origin = f"random weights, {'legacy' if args.legacy_format else 'zip'} format"
        print(f"VGG16 weights: {weights} ({Path(weights).stat().st_size / 2**20:.0f} MiB, {origin}); "
              f"step: {args.batch} x 3 x {args.size} x {args.size} on {args.device}")
        for child in (["used", "full"] if args.compare else ["used"]):
            done = subprocess.run([sys.executable, "-m", "helpers.losses", "--peak-memory", "--child", child,
                                   "--weights", weights, "--batch", str(args.batch), "--size", str(args.size),
                                   "--device", args.device], capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"the measurement failed:\n{done.stderr}")
            report = json.loads(done.stdout.strip().splitlines()[-1])
            name = "only the used layers (this loader)" if child == "used" else "whole vgg16 built, then cut"
            line = (f"{name}: {report['parameters'] / 1e6:.1f} M parameters; peak RSS {report['after_imports']:.0f}"
                    f" MiB after imports, {report['after_loading']:.0f} MiB after loading "
                    f"(+{report['after_loading'] - report['after_imports']:.0f}), {report['after_step']:.0f} MiB "
                    f"after one step (+{report['after_step'] - report['after_imports']:.0f})")
            if "cuda_max_allocated" in report:
                line += f"; CUDA max allocated {report['cuda_max_allocated']:.0f} MiB"
            print(line)


if __name__ == "__main__":
    import sys

    if "--peak-memory" in sys.argv:
        _peak_memory_command(sys.argv[1:])
    else:
        sys.exit("usage: python -m helpers.losses --peak-memory [--weights FILE] [--compare] [--help]")
