"""Losses for growing textures with a neural cellular automaton (chapter 03).

* ``VGGStyleLoss``      the style loss of Gatys et al.: Gram matrices of VGG16 features
                        (relu1_1 ... relu5_1) of the output against those of the target image.
* ``SlicedWassersteinLoss`` a VGG-free texture loss: the sliced Wasserstein distance between the
                        distributions of small image patches of the output and of the target, at
                        several scales. It needs no downloaded weights.
* ``overflow_loss``     keeps every state value inside [-1, 1].

The VGG16 weights are the course's one download. ``load_vgg16_features`` takes them, in order, from
a local file (argument or the environment variable ``DSOS_VGG16_WEIGHTS``: a ``state_dict`` saved from
``torchvision.models.vgg16``), from torchvision's cache, or from the internet through torchvision.
When none works it raises ``VGGUnavailable`` saying why and how to provide them; chapters catch
exactly that and switch to the VGG-free loss.
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

def _vgg16_module():
    try:
        from torchvision.models import vgg16
    except ImportError as error:  # torchvision is optional for the rest of the course
        raise VGGUnavailable("torchvision is not installed, so VGG16 cannot be built; "
                             "pip install torchvision, or use the VGG-free loss") from error
    return vgg16


def _truncate(features: nn.Sequential) -> nn.Sequential:
    """VGG16's convolutional part up to and including relu5_1, frozen and in eval mode."""
    truncated = features[: STYLE_LAYERS["relu5_1"] + 1]
    truncated.eval()
    for parameter in truncated.parameters():
        parameter.requires_grad_(False)
    return truncated


def _features_from_state_dict(state_dict: dict, source: str) -> nn.Sequential:
    """Build vgg16().features and load the 'features.*' entries of a torchvision vgg16 state_dict."""
    vgg16 = _vgg16_module()
    model = vgg16(weights=None)
    if not isinstance(state_dict, dict):
        raise VGGUnavailable(f"{source} does not hold a state_dict (got {type(state_dict).__name__}); "
                             "save one with torch.save(torchvision.models.vgg16(weights=...).state_dict(), path)")
    features = {key.removeprefix("features."): value for key, value in state_dict.items()
                if key.startswith("features.") or key.split(".")[0].isdigit()}
    try:
        model.features.load_state_dict(features)
    except RuntimeError as error:
        raise VGGUnavailable(f"{source} is not a VGG16 state_dict of torchvision's format: {error}") from error
    return model.features


def _imagenet_weights():
    from torchvision.models import VGG16_Weights

    return VGG16_Weights.IMAGENET1K_V1


def cached_weights_path() -> Path:
    """Where torchvision keeps the downloaded VGG16 weights (torch.hub's checkpoint folder)."""
    filename = os.path.basename(urlparse(_imagenet_weights().url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _can_reach(url: str, timeout: float = 3.0) -> bool:
    """A quick check that the weights' server answers, so an offline machine fails in seconds."""
    host = urlparse(url).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


HOW_TO_PROVIDE = (f"To use the VGG style loss, run once where there is internet (e.g. Colab), or download "
                  f"torchvision's vgg16 ImageNet weights (vgg16-397923af.pth) and pass their path as "
                  f"weights_path= or set the environment variable {VGG_WEIGHTS_ENV}=/path/to/file.pth. "
                  f"Otherwise use the VGG-free loss (SlicedWassersteinLoss).")


def load_vgg16_features(weights_path: str | Path | None = None, download: bool = True) -> nn.Sequential:
    """VGG16's features (ImageNet weights) up to relu5_1, frozen and in eval mode.

    Tries, in order: ``weights_path`` (or ``$DSOS_VGG16_WEIGHTS``), torchvision's cache, a download
    (only when ``download`` and the server answers within seconds). Raises ``VGGUnavailable``
    with the reason and what to do when none of them works.
    """
    weights_path = weights_path or os.environ.get(VGG_WEIGHTS_ENV) or None
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise VGGUnavailable(f"the VGG16 weights file {path} does not exist. {HOW_TO_PROVIDE}")
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a corrupt or foreign file: say so, keep the cause attached
            raise VGGUnavailable(f"could not read {path} as a torch state_dict ({error}). {HOW_TO_PROVIDE}") from error
        return _truncate(_features_from_state_dict(state_dict, str(path)))

    _vgg16_module()
    cached = cached_weights_path()
    if cached.is_file():
        state_dict = torch.load(cached, map_location="cpu", weights_only=True)
        return _truncate(_features_from_state_dict(state_dict, str(cached)))
    url = _imagenet_weights().url
    if not download:
        raise VGGUnavailable(f"no cached VGG16 weights at {cached} and downloading is switched off. {HOW_TO_PROVIDE}")
    if not _can_reach(url):
        raise VGGUnavailable(f"no cached VGG16 weights at {cached}, and {urlparse(url).hostname} cannot be "
                             f"reached (offline?). {HOW_TO_PROVIDE}")
    try:
        model = _vgg16_module()(weights=_imagenet_weights(), progress=False)
    except Exception as error:  # a failed download has many exception types (URLError, OSError, hash ...)
        raise VGGUnavailable(f"downloading the VGG16 weights from {url} failed: {error}. {HOW_TO_PROVIDE}") from error
    return _truncate(model.features)


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
        if scales < 1 or patch < 1 or patch % 2 == 0 or projections < 1 or not colour_weight >= 0:
            raise ValueError(f"need scales >= 1, an odd patch size, projections >= 1 and colour_weight >= 0, "
                             f"got scales={scales}, patch={patch}, projections={projections}, "
                             f"colour_weight={colour_weight}")
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
