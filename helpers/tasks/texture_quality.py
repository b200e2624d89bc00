"""A texture check that can fail: does a grown image show THIS texture, or only some texture?

A single distance cannot tell: a model that grows diagonal bands in the checkerboard's two colours
has patch statistics almost as close to the checkerboard as the real thing. So the check asks
three questions, each with its own figures, and passes only if all three say yes:

1. **Patches** (``patch``): the multi-scale sliced Wasserstein distance between the patch
   distributions of the grown image and the target (``losses.SlicedWassersteinLoss`` with fixed
   directions) must be smaller than the distance from the target to EVERY other shipped texture.
   The other textures are real textures, so "closer than all of them" separates "grows this
   texture" from "grows a texture".
2. **Palette** (``palette``): the target's dominant colours (found by a simple leader clustering)
   must each cover a similar share of the grown image: within ``SHARE_TOLERANCE`` of the target's
   share, relative, or ``SHARE_FLOOR`` absolute, whichever is larger. Growing one kind of dot
   where the target has two colours of dots fails here.
3. **Structure** (``structure``): the power spectrum of the grown image must put its energy at the
   same orientations and the same scales as the target's: the total-variation distances between the
   orientation histograms and between the radial (scale) histograms must be at most
   ``STRUCTURE_TOLERANCE``. Bands along one diagonal where the target has squares (energy along
   both diagonals) fail here.

``check_shipped(images, name, size)`` (or ``check(images, target, distances)``) returns the
figures, ``passed`` and the ``reasons`` of a failure.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .. import data, losses, nca

#: Directions of the sliced Wasserstein distance (fixed by ``seed``, so the figure repeats).
PROJECTIONS = 256
#: A palette colour is a cluster of target pixels within this RGB distance (colours in [0, 1]).
PALETTE_RADIUS = 0.2
#: Colours covering less of the target than this are anti-aliasing, not palette.
PALETTE_MIN_SHARE = 0.03
#: A grown pixel counts as a palette colour when it lies within this RGB distance of it.
ASSIGN_RADIUS = 0.25
#: A colour's share of the grown image may differ from the target's by this fraction of it ...
SHARE_TOLERANCE = 0.5
#: ... or by this much absolute, whichever is larger.
SHARE_FLOOR = 0.04
#: Largest total-variation distance between orientation (and between scale) histograms of the spectra.
STRUCTURE_TOLERANCE = 0.3
ORIENTATION_BINS = 12       # 15 degrees each, over [0, 180)
SCALE_BINS = 8              # log-spaced bands of spatial frequency


# ------------------------------------------------------------------------------------ patches

def patch_distance(images: torch.Tensor, target: torch.Tensor, seed: int = 0, angles: int = 1) -> torch.Tensor:
    """Multi-scale patch distance of each image [B, 3, H, W] to ``target`` [3, h, w]: [B]. With
    ``angles`` > 1, the distance to the closest of that many turned copies of the target
    (``losses.RotationInvariantLoss``): for rules that cannot choose their pattern's orientation."""
    generator = torch.Generator().manual_seed(seed)
    if angles > 1:
        measure = losses.RotationInvariantLoss(target.float().cpu(), angles, projections=PROJECTIONS)
    else:
        measure = losses.SlicedWassersteinLoss(target.float().cpu(), projections=PROJECTIONS)
    return measure(images.float().cpu(), generator=generator)


# ------------------------------------------------------------------------------------ palette

def palette(target: torch.Tensor, radius: float = PALETTE_RADIUS,
            min_share: float = PALETTE_MIN_SHARE) -> tuple[torch.Tensor, torch.Tensor]:
    """The dominant colours of ``target`` [3, H, W] and the share of pixels each covers.

    Leader clustering, deterministic: the most common colour (on a 16-level grid) leads a cluster
    of every remaining pixel within ``radius``; its colour is their mean; repeat while a cluster
    covers at least ``min_share``. Returns colours [K, 3] and shares [K] (largest first)."""
    pixels = target.float().cpu().reshape(3, -1).T
    remaining = torch.ones(len(pixels), dtype=torch.bool)
    colours, shares = [], []
    while remaining.any():
        codes = (pixels[remaining] * 15).round()
        values, counts = codes.unique(dim=0, return_counts=True)
        leader = values[counts.argmax()] / 15
        members = remaining & ((pixels - leader).norm(dim=1) <= radius)
        share = members.float().mean().item()
        if share < min_share:
            break
        colours.append(pixels[members].mean(dim=0))
        shares.append(share)
        remaining &= ~members
    return torch.stack(colours), torch.tensor(shares)


def colour_shares(images: torch.Tensor, colours: torch.Tensor, radius: float = ASSIGN_RADIUS) -> torch.Tensor:
    """Share of the pixels of ``images`` [B, 3, H, W] nearest to each colour [K, 3] and within
    ``radius`` of it: [K] (the rest, 1 - sum, is "other")."""
    pixels = images.float().cpu().clamp(0, 1).permute(0, 2, 3, 1).reshape(-1, 3)
    distances = torch.cdist(pixels, colours.float())
    nearest = distances.argmin(dim=1)
    close = distances.min(dim=1).values <= radius
    return torch.stack([((nearest == k) & close).float().mean() for k in range(len(colours))])


def palette_check(images: torch.Tensor, target: torch.Tensor) -> dict:
    colours, target_shares = palette(target)
    grown_shares = colour_shares(images, colours)
    allowed = torch.clamp(SHARE_TOLERANCE * target_shares, min=SHARE_FLOOR)
    bad = (grown_shares - target_shares).abs() > allowed
    named = [_colour_name(c) for c in colours]
    reasons = [f"colour {name} covers {100 * g:.1f}% of the grown image, {100 * t:.1f}% of the target"
               for name, g, t, wrong in zip(named, grown_shares.tolist(), target_shares.tolist(), bad.tolist())
               if wrong]
    return {"colours": [[round(v, 3) for v in c.tolist()] for c in colours], "colour_names": named,
            "target_shares": [round(v, 4) for v in target_shares.tolist()],
            "grown_shares": [round(v, 4) for v in grown_shares.tolist()],
            "passed": not bad.any().item(), "reasons": reasons}


def _colour_name(colour: torch.Tensor) -> str:
    return "#" + "".join(f"{round(255 * v):02x}" for v in colour.clamp(0, 1).tolist())


# ---------------------------------------------------------------------------------- structure

def spectrum_histograms(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the power spectrum of ``images`` [B, 3, H, W] (mean removed, summed over colours and
    images) puts its energy: an orientation histogram over [0, 180) degrees and a histogram over
    log-spaced frequency bands from 1/64 to 0.71 cycles per pixel; each sums to 1."""
    images = images.float().cpu()
    height, width = images.shape[-2:]
    centred = images - images.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(centred).abs().square().sum(dim=(0, 1))           # [H, W]
    fy = torch.fft.fftfreq(height)[:, None].expand(height, width)
    fx = torch.fft.fftfreq(width)[None, :].expand(height, width)
    radius = torch.sqrt(fx ** 2 + fy ** 2)
    keep = radius > 0
    angle = torch.remainder(torch.atan2(fy, fx), math.pi)
    orientation_bin = (angle / math.pi * ORIENTATION_BINS).long().clamp(max=ORIENTATION_BINS - 1)
    edges = torch.logspace(math.log10(1 / 64), math.log10(0.5 * math.sqrt(2)), SCALE_BINS + 1)
    scale_bin = (torch.bucketize(radius, edges) - 1).clamp(0, SCALE_BINS - 1)
    total = power[keep].sum().clamp(min=1e-12)
    orientation = torch.zeros(ORIENTATION_BINS).index_add_(0, orientation_bin[keep], power[keep]) / total
    scale = torch.zeros(SCALE_BINS).index_add_(0, scale_bin[keep], power[keep]) / total
    return orientation, scale


def structure_check(images: torch.Tensor, target: torch.Tensor, angles: int = 1) -> dict:
    """The spectrum's orientation and scale histograms against the target's. ``angles`` > 1: the
    pattern may be turned, so the orientation histogram is compared with that of the target turned by
    each of ``angles`` angles (``losses.rotated``, as the patch distance does) at every circular shift,
    and the best match counts. (Shifts alone are not enough: a pattern whose energy lies on a bin's
    edge fills two bins upright and one bin turned.)"""
    grown_orientation, grown_scale = spectrum_histograms(images)
    target_orientation, target_scale = spectrum_histograms(target[None])
    turned = [target_orientation] + [spectrum_histograms(losses.rotated(target, 360 * k / angles)[None])[0]
                                     for k in range(1, angles)]
    shifts = range(ORIENTATION_BINS) if angles > 1 else [0]
    orientation = min(0.5 * (grown_orientation.roll(k) - histogram).abs().sum().item()
                      for histogram in turned for k in shifts)
    scale = 0.5 * (grown_scale - target_scale).abs().sum().item()
    reasons = []
    if orientation > STRUCTURE_TOLERANCE:
        reasons.append(f"the spectrum's orientations differ from the target's (distance {orientation:.2f} > "
                       f"{STRUCTURE_TOLERANCE}): strongest at {_peak_degrees(grown_orientation)} degrees, "
                       f"target at {_peak_degrees(target_orientation)}")
    if scale > STRUCTURE_TOLERANCE:
        reasons.append(f"the spectrum's scales differ from the target's (distance {scale:.2f} > {STRUCTURE_TOLERANCE})")
    return {"orientation_distance": round(orientation, 4), "scale_distance": round(scale, 4),
            "grown_orientations": [round(v, 3) for v in grown_orientation.tolist()],
            "target_orientations": [round(v, 3) for v in target_orientation.tolist()],
            "passed": not reasons, "reasons": reasons}


def _peak_degrees(histogram: torch.Tensor) -> int:
    return round((histogram.argmax().item() + 0.5) * 180 / ORIENTATION_BINS)


# --------------------------------------------------------------------------------- the check

def shipped_name(target) -> str | None:
    """The shipped texture ``target`` is (its name, or a path to its file), or None for your own image."""
    if isinstance(target, str) and target in data.list_textures():
        return target
    if isinstance(target, (str, Path)) and not data.is_url(str(target)) and Path(target).is_file():
        same = [name for name in data.list_textures() if data.texture_path(name).resolve() == Path(target).resolve()]
        return same[0] if same else None
    return None


def other_textures(target_name: str | None, size: int) -> dict[str, torch.Tensor]:
    """Every shipped texture except ``target_name`` (a name, or the path of your own image: then all
    of them unless it is a shipped file), at ``size`` [3, size, size]."""
    own = shipped_name(target_name) if target_name is not None else None
    return {name: data.load_texture(name, size) for name in data.list_textures() if name != own}


def other_distances(target: torch.Tensor, others: dict[str, torch.Tensor], seed: int = 0,
                    angles: int = 1) -> dict[str, float]:
    """The patch distance from each of ``others`` (name -> [3, h, w]) to ``target``: how close a
    model that grew the WRONG texture would come (at its best turn, with ``angles`` > 1)."""
    return {name: patch_distance(image[None], target, seed, angles).item() for name, image in others.items()}


_REFERENCES: dict = {}


def shipped_reference(target_name: str, size: int, seed: int = 0,
                      angles: int = 1) -> tuple[torch.Tensor, dict[str, float]]:
    """The texture ``target_name`` at ``size`` and the distances of the other shipped textures to it
    (computed once per target and size). ``target_name`` is a shipped name or, for your own texture,
    an image path or URL (``data.load_target``): it is then judged against every shipped texture."""
    key = (str(target_name), size, seed, angles)
    if key not in _REFERENCES:
        target = data.load_target(target_name, size)
        _REFERENCES[key] = (target, other_distances(target, other_textures(target_name, size), seed, angles))
    target, distances = _REFERENCES[key]
    return target.clone(), dict(distances)


def check(images: torch.Tensor, target: torch.Tensor, others: dict[str, float], seed: int = 0,
          angles: int = 1) -> dict:
    """Judge grown ``images`` [B, 3, H, W] (values in [0, 1]) against ``target`` [3, h, w].
    ``others``: name -> patch distance to the target of each texture a wrong model might have
    grown instead (``other_distances``).

    ``angles`` > 1: judge the pattern at any orientation (chapter 08's rules cannot choose theirs): the
    patch distance to the best of ``angles`` turned targets (``others`` must be measured alike) and
    the orientation histogram against the turned targets' at its best shift.

    Returns ``{"passed", "reasons", "patch": {...}, "palette": {...}, "structure": {...}}``."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be shaped [batch, 3, height, width], got {tuple(images.shape)}")
    if not others:
        raise ValueError("need at least one other texture to judge the patch distance against")
    grown = patch_distance(images, target, seed, angles).mean().item()
    nearest = min(others, key=others.get)
    patch = {"distance": round(grown, 5), "nearest_other": nearest, "nearest_other_distance": round(others[nearest], 5),
             "ratio": round(grown / others[nearest], 4), "other_distances": {k: round(v, 5) for k, v in others.items()},
             "passed": grown < others[nearest], "reasons": []}
    if not patch["passed"]:
        patch["reasons"].append(f"patch distance {grown:.4f} is not below that of the nearest other texture, "
                                f"{nearest} ({others[nearest]:.4f})")
    colours = palette_check(images, target)
    structure = structure_check(images, target, angles)
    reasons = patch["reasons"] + colours["reasons"] + structure["reasons"]
    return {"passed": not reasons, "reasons": reasons, "patch": patch, "palette": colours, "structure": structure}


def judge_state(state: torch.Tensor, target_name: str, size: int, seed: int = 0, angles: int = 1) -> dict:
    """``check_shipped`` of a grown state ``[B, C, H, W]`` (channels 0..2 plus 0.5 are its colour); a
    state that is not finite fails, with that reason first. Adds ``finite``, ``max_abs`` (the largest
    state value) and the ``state`` itself."""
    finite = bool(torch.isfinite(state).all())
    result = check_shipped(nca.to_rgb(torch.nan_to_num(state)), target_name, size, seed, angles)
    if not finite:
        result["passed"] = False
        result["reasons"].insert(0, "the state is not finite after the rollout")
    return {**result, "finite": finite, "max_abs": state.abs().max().item(), "state": state}


def check_shipped(images: torch.Tensor, target_name: str, size: int, seed: int = 0, angles: int = 1) -> dict:
    """``check`` against the shipped texture ``target_name`` at ``size``, judged against all the others."""
    target, others = shipped_reference(target_name, size, seed, angles)
    return check(images, target, others, seed, angles)


def summary(result: dict) -> str:
    """One line: PASS/FAIL, the three figures and the reasons of a failure."""
    patch, structure = result["patch"], result["structure"]
    line = (f"{'PASS' if result['passed'] else 'FAIL'}: patch distance {patch['distance']:.4f} vs nearest other "
            f"texture {patch['nearest_other']} {patch['nearest_other_distance']:.4f}; colour shares "
            f"{[round(100 * s) for s in result['palette']['grown_shares']]}% vs target "
            f"{[round(100 * s) for s in result['palette']['target_shares']]}%; spectrum distances orientation "
            f"{structure['orientation_distance']:.2f}, scale {structure['scale_distance']:.2f}")
    return line + ("" if result["passed"] else " -- " + "; ".join(result["reasons"]))
