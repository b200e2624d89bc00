"""A texture check that can fail: does a grown image show THIS texture, or only some texture?

A single distance cannot tell: a model that grows diagonal bands in the checkerboard's two colours
has patch statistics almost as close to the checkerboard as the real thing. So the check asks six
questions, each with its own figures, and passes only if all six say yes. It was validated on a
labelled set (tests/fixtures/textures: right and wrong images judged by eye, today's failures among
the wrong ones; tests/test_texture_check.py prints the confusion table and fails on any disagreement),
and every threshold below was chosen on that set:

1. **Patches** (``patch``): the multi-scale sliced Wasserstein distance between the patch
   distributions of the grown image and the target (``losses.SlicedWassersteinLoss`` with fixed
   directions) must be smaller than that of EVERY other course texture. (Not than the target
   blurred: a new instance of the bubbles or the Voronoi cells is often farther than that.) Your own
   image, which no course texture resembles, meets close wrong answers made from itself in parts 4
   and 5: its shuffled and blurred copies.
2. **Palette** (``palette``): the target's dominant colours (found by a simple leader clustering)
   must each cover a similar share of the grown image: within ``SHARE_TOLERANCE`` of the target's
   share, relative, ``SHARE_FLOOR`` absolute, or ``SHARE_SPREAD`` times the spread of that share
   over the target's own 32x32 windows, whichever is largest (a new instance of bubbles may have few
   orange discs; every window of a checkerboard has half of each colour). Growing one kind of dot
   where the target has two colours of dots fails here.
3. **Structure** (``structure``): the power spectrum of the grown image must put its energy at the
   same orientations and the same scales as the target's (histograms with soft bins: a frequency
   shares its energy between the two nearest bins, so a stripe period next to a bin edge counts
   the same for every seed): total-variation distances at most ``STRUCTURE_TOLERANCE``.
4. **Layout** (``layout``): what a person sees in each 32 x 32 window (squares in a board, blocks of
   a weave, evenly spaced dots): the smoothed power spectrum of every window of the grown image
   against the target's mean window spectrum. The median window's distance must stay below
   ``LAYOUT_TOLERANCE`` and below that of the target cut into blocks and shuffled (``shuffled``):
   right local pieces in the wrong arrangement. Merged squares, ragged weave blocks and a maze of
   bands fail here; a grating with one dislocation passes (most windows are right).
5. **Neighbours** (``neighbours``): which colours lie next to which, and at what offsets up to
   ``NEIGHBOUR_REACH`` pixels (the co-occurrence of the palette's colours): its distance to the
   target's must be below ``NEIGHBOUR_FRACTION`` of that of the target blurred. Dots half red half
   navy (red touches navy, never so in the target), streaks for discs, smears for cells fail here.
6. **Shapes** (``shapes``): each main colour's edge length per area, against the target's: round dots
   against crescents and slivers (the half red, half navy dots fail here). And for a texture made of
   separate blobs (discs, squares, cells: the target's blobs are compact, ``BLOB_TEXTURE_LIMIT``), how
   elongated the grown blobs are (``blob_elongation``): streaks where the target has discs fail here,
   and so do blobs that vanish into pixel noise.

``check_shipped(images, name, size)`` (or ``check(images, target, distances)``) returns the
figures, ``passed`` and the ``reasons`` of a failure.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

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
#: ... or by this much absolute, ...
SHARE_FLOOR = 0.04
#: ... or by this many standard deviations of the share over the target's 32x32 windows, whichever is
#: largest (labelled set: new instances of bubbles and Voronoi differ from the target by up to 1.9 of them).
SHARE_SPREAD = 2.5
#: Largest total-variation distance between the scale histograms of the spectra ...
STRUCTURE_TOLERANCE = 0.3
#: ... and between their orientation histograms: wider, since one dislocation in a grating spreads its
#: orientations (grown stripes with a dislocation loop: 0.50; the layout part judges the arrangement).
ORIENTATION_TOLERANCE = 0.55
ORIENTATION_BINS = 12       # 15 degrees each, over [0, 180)
SCALE_BINS = 8              # log-spaced bands of spatial frequency
#: Side of the windows the layout is judged in, their stride in the judged image and in the target,
#: and the smoothing (in frequency bins) of their spectra, so that a period a little off still meets
#: the target's.
WINDOW, WINDOW_STRIDE, REFERENCE_STRIDE, WINDOW_SMOOTHING = 32, 8, 2, 1.0
#: Largest median distance from a window's spectrum to its nearest in the target (labelled set: right
#: <= 0.21, grown stripes with a dislocation loop; the grown checkerboard >= 0.23) ...
LAYOUT_TOLERANCE = 0.22
#: ... and at most this fraction of the mean distance of LAYOUT_SHUFFLES shuffles of the target (right
#: <= 0.71 of it: the Voronoi instances; shuffled weave and plaid >= 0.85).
LAYOUT_FRACTION, LAYOUT_SHUFFLES = 0.8, 3
#: Offsets (pixels, each way) at which the neighbours of each colour are compared.
NEIGHBOUR_REACH = 4
#: The neighbours' distance may be this fraction of the blurred target's (labelled set: right <= 0.68,
#: new bubbles instances; grown bubbles >= 0.72: the narrowest margin of the check) ...
NEIGHBOUR_FRACTION = 0.7
#: ... or this much, for a target that blurring hardly changes (a smooth photograph).
NEIGHBOUR_FLOOR = 0.05
#: The references made from the target itself, at 64 pixels (scaled with its side): the Gaussian blur's
#: width and the shuffled blocks' side.
BLUR_PIXELS, SHUFFLE_BLOCK = 2.0, 8
#: The colours whose shapes are compared cover at least this share of the target; their edge length per
#: area may differ from the target's by a factor exp(SHAPE_TOLERANCE) (labelled set: right <= 0.72, a
#: new Voronoi instance; the grown Voronoi smears >= 1.09, the half red, half navy dots >= 1.25).
SHAPE_MIN_SHARE, SHAPE_TOLERANCE = 0.08, 0.85
#: Blobs: the mean elongation of the grown blobs may differ from the target's by a factor
#: exp(BLOB_TOLERANCE) (labelled set: right cases within 0.33, e.g. polka dots warped; the streaks
#: grown for the bubbles 0.54 to 0.72, the first grown bubbles 0.82 and more), for targets whose blobs
#: are compact (mean elongation below BLOB_TEXTURE_LIMIT; stripes and bands have none). Blobs
#: smaller than BLOB_MIN_AREA pixels (after erosion) are specks, not shapes.
BLOB_TOLERANCE, BLOB_TEXTURE_LIMIT, BLOB_MIN_AREA = 0.4, 3.0, 6
#: The parts of the check, in the order it reports them.
PARTS = ("patch", "palette", "structure", "layout", "neighbours", "shapes")


_TARGET_FIGURES: dict = {}


def _of_target(kind: str, target: torch.Tensor, options: tuple, compute):
    """``compute()``, a figure of the target alone, computed once per target image (by its pixels),
    ``kind`` and ``options``: judging many images against one target repeats none of its work."""
    pixels = target.float().cpu().contiguous()
    key = (kind, tuple(pixels.shape), hashlib.sha1(pixels.numpy().tobytes()).hexdigest(), options)
    if key not in _TARGET_FIGURES:
        if len(_TARGET_FIGURES) > 512:
            _TARGET_FIGURES.clear()
        _TARGET_FIGURES[key] = compute()
    return _TARGET_FIGURES[key]


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


def target_palette(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``palette(target)``, computed once per target."""
    return _of_target("palette", target, (), lambda: palette(target))


def share_spread(target: torch.Tensor, colours: torch.Tensor, window: int = 32) -> torch.Tensor:
    """The standard deviation of each colour's share over the target's ``window`` x ``window`` windows
    (wrapping, 8 pixels apart): [K]. Near 0 for a regular texture, large for a random one."""
    window = min(window, *target.shape[-2:])
    pieces = _wrapped(target.float().cpu(), window).unfold(1, window, 8).unfold(2, window, 8)
    pieces = rearrange(pieces, "c y x h w -> (y x) c h w")
    return torch.stack([colour_shares(piece[None], colours) for piece in pieces]).std(dim=0)


def palette_check(images: torch.Tensor, target: torch.Tensor) -> dict:
    colours, target_shares = target_palette(target)
    grown_shares = colour_shares(images, colours)
    spread = _of_target("share spread", target, (), lambda: share_spread(target, colours))
    allowed = torch.maximum(torch.clamp(SHARE_TOLERANCE * target_shares, min=SHARE_FLOOR), SHARE_SPREAD * spread)
    bad = (grown_shares - target_shares).abs() > allowed
    named = [_colour_name(c) for c in colours]
    reasons = [f"colour {name} covers {100 * g:.1f}% of the grown image, {100 * t:.1f}% of the target"
               for name, g, t, wrong in zip(named, grown_shares.tolist(), target_shares.tolist(), bad.tolist())
               if wrong]
    return {"colours": [[round(v, 3) for v in c.tolist()] for c in colours], "colour_names": named,
            "target_shares": [round(v, 4) for v in target_shares.tolist()],
            "grown_shares": [round(v, 4) for v in grown_shares.tolist()],
            "allowed_differences": [round(v, 4) for v in allowed.tolist()],
            "passed": not bad.any().item(), "reasons": reasons}


def _colour_name(colour: torch.Tensor) -> str:
    return "#" + "".join(f"{round(255 * v):02x}" for v in colour.clamp(0, 1).tolist())


# ---------------------------------------------------------------------------------- structure

def spectrum_histograms(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the power spectrum of ``images`` [B, 3, H, W] (mean removed, summed over colours and
    images) puts its energy: an orientation histogram over [0, 180) degrees and a histogram over
    log-spaced frequency bands from 1/64 to 0.71 cycles per pixel; each sums to 1. Soft bins: a
    frequency's energy is shared between the two bins whose centres it lies between, in proportion to
    its nearness (so a period just across a bin edge moves the histogram a little, not a whole bin)."""
    images = images.float().cpu()
    height, width = images.shape[-2:]
    centred = images - images.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(centred).abs().square().sum(dim=(0, 1))           # [H, W]
    fy = torch.fft.fftfreq(height)[:, None].expand(height, width)
    fx = torch.fft.fftfreq(width)[None, :].expand(height, width)
    radius = torch.sqrt(fx ** 2 + fy ** 2)
    keep = radius > 0
    power, radius = power[keep], radius[keep]
    angle = torch.remainder(torch.atan2(fy, fx), math.pi)[keep]
    low, high = math.log(1 / 64), math.log(0.5 * math.sqrt(2))
    scale_position = (torch.log(radius) - low) / (high - low) * SCALE_BINS
    total = power.sum().clamp(min=1e-12)
    orientation = _soft_histogram(angle / math.pi * ORIENTATION_BINS, power, ORIENTATION_BINS, circular=True)
    scale = _soft_histogram(scale_position, power, SCALE_BINS, circular=False)
    return orientation / total, scale / total


def orientation_bias(image: torch.Tensor) -> float:
    """How much the power spectrum of ``image`` [3, H, W] prefers some orientations: the total-variation
    distance of its orientation histogram (``spectrum_histograms``) from a flat one. 0: none preferred
    (spots, worms); near 1: all energy at one angle (a grating)."""
    orientation, _ = spectrum_histograms(image[None])
    return 0.5 * float((orientation - 1 / ORIENTATION_BINS).abs().sum())


def _soft_histogram(position: torch.Tensor, weight: torch.Tensor, bins: int, circular: bool) -> torch.Tensor:
    """``weight`` at ``position`` (in bin widths, bin i spans [i, i + 1)) shared linearly between the
    two nearest bin centres; around the circle if ``circular``, else clamped to the end bins."""
    centred = position - 0.5
    lower = centred.floor()
    upper_share = centred - lower
    lower, upper = lower.long(), lower.long() + 1
    if circular:
        lower, upper = lower % bins, upper % bins
    else:
        lower, upper = lower.clamp(0, bins - 1), upper.clamp(0, bins - 1)
    histogram = torch.zeros(bins).index_add_(0, lower, weight * (1 - upper_share))
    return histogram.index_add_(0, upper, weight * upper_share)


def structure_check(images: torch.Tensor, target: torch.Tensor, angles: int = 1) -> dict:
    """The spectrum's orientation and scale histograms against the target's. ``angles`` > 1: the
    pattern may be turned, so the orientation histogram is compared with that of the target turned by
    each of ``angles`` angles (``losses.rotated``, as the patch distance does) at every circular shift,
    and the best match counts. (Shifts alone are not enough: a pattern whose energy lies on a bin's
    edge fills two bins upright and one bin turned.)"""
    grown_orientation, grown_scale = spectrum_histograms(images)
    target_orientation, target_scale = _of_target("spectrum", target, (), lambda: spectrum_histograms(target[None]))
    turned = [target_orientation] + _of_target("turned orientations", target, (angles,), lambda: [
        spectrum_histograms(losses.rotated(target, 360 * k / angles)[None])[0] for k in range(1, angles)])
    shifts = range(ORIENTATION_BINS) if angles > 1 else [0]
    orientation = min(0.5 * (grown_orientation.roll(k) - histogram).abs().sum().item()
                      for histogram in turned for k in shifts)
    scale = 0.5 * (grown_scale - target_scale).abs().sum().item()
    reasons = []
    if orientation > ORIENTATION_TOLERANCE:
        reasons.append(f"the spectrum's orientations differ from the target's (distance {orientation:.2f} > "
                       f"{ORIENTATION_TOLERANCE}): strongest at {_peak_degrees(grown_orientation)} degrees, "
                       f"target at {_peak_degrees(target_orientation)}")
    if scale > STRUCTURE_TOLERANCE:
        reasons.append(f"the spectrum's scales differ from the target's (distance {scale:.2f} > {STRUCTURE_TOLERANCE})")
    return {"orientation_distance": round(orientation, 4), "scale_distance": round(scale, 4),
            "grown_orientations": [round(v, 3) for v in grown_orientation.tolist()],
            "target_orientations": [round(v, 3) for v in target_orientation.tolist()],
            "passed": not reasons, "reasons": reasons}


def _peak_degrees(histogram: torch.Tensor) -> int:
    return round((histogram.argmax().item() + 0.5) * 180 / ORIENTATION_BINS)


# ------------------------------------------------------ wrong answers made from the target itself

def blurred(image: torch.Tensor, pixels: float | None = None) -> torch.Tensor:
    """``image`` [3, H, W] blurred by a Gaussian ``pixels`` wide (default ``BLUR_PIXELS`` at 64 pixels,
    scaled with the side), wrapping around the edges: the colours right, every edge smeared."""
    pixels = pixels or BLUR_PIXELS * image.shape[-1] / 64
    radius = max(1, int(3 * pixels))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / pixels) ** 2)
    kernel = (kernel / kernel.sum()).to(image)
    padded = F.pad(image[None].float(), (radius,) * 4, mode="circular")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]


def shuffled(image: torch.Tensor, block: int | None = None, seed: int = 0) -> torch.Tensor:
    """``image`` [3, H, W] cut into ``block`` x ``block`` tiles (default ``SHUFFLE_BLOCK`` at 64 pixels,
    scaled) and put back in a random order: every local piece right, their arrangement wrong."""
    block = block or max(2, SHUFFLE_BLOCK * image.shape[-1] // 64)
    # moved first by a little under and over half a block, so the cuts go through the shapes of a
    # texture drawn on a grid of blocks (aligned cuts would move whole dots and whole squares)
    image = torch.roll(image, shifts=(block // 2 - 1, block // 2 + 1), dims=(-2, -1))
    rows, columns = image.shape[-2] // block, image.shape[-1] // block
    tiles = rearrange(image[:, :rows * block, :columns * block], "c (r h) (q w) -> (r q) c h w", h=block, w=block)
    order = torch.randperm(len(tiles), generator=torch.Generator().manual_seed(seed))
    return rearrange(tiles[order], "(r q) c h w -> c (r h) (q w)", r=rows)


def _turned(target: torch.Tensor, angles: int) -> list[torch.Tensor]:
    """The target and its copies turned by each of ``angles`` even steps of a full turn."""
    return [target] + [losses.rotated(target, 360 * k / angles) for k in range(1, angles)]


# ------------------------------------------------------------------------------------- layout

def window_spectra(image: torch.Tensor, window: int = WINDOW, stride: int = WINDOW_STRIDE) -> torch.Tensor:
    """The power spectrum of every ``window`` x ``window`` window of ``image`` [3, H, W], ``stride``
    apart (Hann-tapered, mean removed, summed over colours, smoothed by a Gaussian of
    ``WINDOW_SMOOTHING`` frequency bins, normalized to sum 1): [windows, window, window]."""
    pieces = image.float().cpu().unfold(1, window, stride).unfold(2, window, stride)
    pieces = rearrange(pieces, "c y x h w -> (y x) c h w")
    taper = torch.hann_window(window, periodic=False)
    pieces = (pieces - pieces.mean(dim=(-2, -1), keepdim=True)) * (taper[:, None] * taper[None, :])
    power = torch.fft.fftshift(torch.fft.fft2(pieces).abs().square().sum(dim=1), dim=(-2, -1))
    radius = max(1, int(3 * WINDOW_SMOOTHING))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / WINDOW_SMOOTHING) ** 2)
    kernel = kernel / kernel.sum()
    power = F.conv2d(F.pad(power[:, None], (radius,) * 4, mode="circular"), kernel.view(1, 1, 1, -1))
    power = F.conv2d(power, kernel.view(1, 1, -1, 1))[:, 0]
    return power / power.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-12)


def layout_distance(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """For each image [B, 3, H, W]: the median over its windows of the total-variation distance from the
    window's spectrum to the NEAREST of the target's window spectra ``references`` [M, w, w] (windows
    at every phase of the target, and of each turn of it with ``angles``): [B]. A right window has a
    twin in the target wherever it was cut; a window of merged squares has none."""
    window = references.shape[-1]
    distances = []
    for image in images:
        spectra = window_spectra(image, window)
        nearest = torch.cdist(spectra.flatten(1), references.flatten(1), p=1).min(dim=1).values
        distances.append(0.5 * nearest.median())
    return torch.stack(distances)


def layout_check(images: torch.Tensor, target: torch.Tensor, angles: int = 1) -> dict:
    """The windows of ``images`` against the target's (every turn, with ``angles`` > 1), beside the target
    cut into blocks and shuffled (``LAYOUT_SHUFFLES`` shuffles): the grown layout's distance must stay
    below ``LAYOUT_FRACTION`` of the shuffles' mean and below ``LAYOUT_TOLERANCE``."""
    target = target.float().cpu()
    window = min(WINDOW, *images.shape[-2:], *target.shape[-2:]) // 2 * 2
    references, own_shuffle = _of_target("layout", target, (angles, window), lambda: _layout_reference(target, angles,
                                                                                                      window))
    grown = layout_distance(images, references).mean().item()
    limit = min(LAYOUT_TOLERANCE, LAYOUT_FRACTION * own_shuffle)
    reasons = [] if grown < limit else [
        f"the layout in {window}x{window} windows differs from the target's (median distance {grown:.2f}, "
        f"allowed below {limit:.2f}; the target shuffled in blocks scores {own_shuffle:.2f})"]
    return {"distance": round(grown, 4), "shuffled_target_distance": round(own_shuffle, 4),
            "limit": round(limit, 4), "passed": not reasons, "reasons": reasons}


def _layout_reference(target: torch.Tensor, angles: int, window: int) -> tuple[torch.Tensor, float]:
    """The target's window spectra (every turn) and the mean layout distance of its shuffles."""
    references = torch.cat([window_spectra(_wrapped(turned, window), window, REFERENCE_STRIDE)
                            for turned in _turned(target, angles)])
    shuffles = torch.stack([shuffled(target, seed=seed) for seed in range(LAYOUT_SHUFFLES)])
    return references, layout_distance(shuffles, references).mean().item()


def _wrapped(image: torch.Tensor, window: int) -> torch.Tensor:
    """``image`` [3, H, W] extended by wrapping around, so that a ``window`` starts at every
    ``REFERENCE_STRIDE``-th position of it (the grid the rules grow on wraps around too)."""
    height, width = image.shape[-2:]
    return image.repeat(1, 2, 2)[:, :height + window - REFERENCE_STRIDE, :width + window - REFERENCE_STRIDE]


# --------------------------------------------------------------------------------- neighbours

def colour_maps(images: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Soft membership of each pixel of ``images`` [B, 3, H, W] in each palette colour [K, 3], plus one
    map for "none of them" (a pixel farther than ``ASSIGN_RADIUS`` from every colour): [B, K + 1, H, W]."""
    width = 0.1                    # RGB distance over which membership passes from one colour to the next
    squared = (rearrange(images.float().cpu(), "b c h w -> b h w 1 c") - colours.float()).square().sum(-1)
    other = torch.full_like(squared[..., :1], ASSIGN_RADIUS ** 2)
    memberships = torch.softmax(-torch.cat([squared, other], dim=-1) / (2 * width ** 2), dim=-1)
    return rearrange(memberships, "b h w k -> b k h w")


def neighbours(maps: torch.Tensor, reach: int = NEIGHBOUR_REACH) -> torch.Tensor:
    """How often colour k at a pixel has colour l at offset (dy, dx), |dy|, |dx| <= ``reach``, for each
    image's ``maps`` [B, K, H, W] (no wrapping: each offset over the pixel pairs inside the image):
    [B, K, K, 2 reach + 1, 2 reach + 1]; at each offset the K x K table sums to 1."""
    height, width = maps.shape[-2:]
    padded = F.pad(maps, (0, reach, 0, reach))
    spectrum = torch.fft.rfft2(padded)
    correlation = torch.fft.irfft2(spectrum.conj()[:, :, None] * spectrum[:, None], s=padded.shape[-2:])
    offsets = torch.arange(-reach, reach + 1)
    table = correlation[..., offsets % (height + reach), :][..., offsets % (width + reach)]
    pairs = (height - offsets.abs())[:, None] * (width - offsets.abs())[None, :]
    return table / pairs


def neighbour_distance(images: torch.Tensor, references: list[torch.Tensor], colours: torch.Tensor) -> torch.Tensor:
    """For each image: the mean over offsets of the total-variation distance between its neighbour
    table and a reference's (``neighbours`` of the target), at the best of the ``references``: [B]."""
    tables = neighbours(colour_maps(images, colours))
    return torch.stack([min(0.5 * (table - reference).abs().sum(dim=(0, 1)).mean() for reference in references)
                        for table in tables])


def neighbour_check(images: torch.Tensor, target: torch.Tensor, angles: int = 1) -> dict:
    """Which colours lie next to which, in ``images`` and in the target (at its best turn), against the
    target blurred: see the module's doc."""
    colours, _ = target_palette(target)
    references, own_blur = _of_target("neighbours", target, (angles,), lambda: _neighbour_reference(target, angles))
    grown = neighbour_distance(images, references, colours).mean().item()
    limit = max(NEIGHBOUR_FRACTION * own_blur, NEIGHBOUR_FLOOR)
    reasons = [] if grown < limit else [
        f"the colours' neighbours differ from the target's (distance {grown:.2f}, allowed below {limit:.2f}: "
        f"{NEIGHBOUR_FRACTION} of the blurred target's {own_blur:.2f})"]
    return {"distance": round(grown, 4), "blurred_target_distance": round(own_blur, 4), "limit": round(limit, 4),
            "passed": not reasons, "reasons": reasons}


def _neighbour_reference(target: torch.Tensor, angles: int) -> tuple[list[torch.Tensor], float]:
    """The target's neighbour tables (every turn) and the neighbour distance of the target blurred."""
    colours, _ = target_palette(target)
    target = target.float().cpu()
    references = [neighbours(colour_maps(turned[None], colours))[0] for turned in _turned(target, angles)]
    return references, neighbour_distance(blurred(target)[None], references, colours).item()


# ------------------------------------------------------------------------------------- shapes

def edge_per_area(images: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """For each palette colour [K, 3]: the length of its edges per pixel it covers in ``images``
    [B, 3, H, W] (mean absolute step of its soft membership map, across and down, over its mean): [K].
    Round dots have short edges for their area; crescents, slivers and cut pieces have long ones."""
    maps = colour_maps(images, colours)[:, :-1]
    steps = (maps[..., 1:, :] - maps[..., :-1, :]).abs().mean(dim=(0, 2, 3)) + \
        (maps[..., :, 1:] - maps[..., :, :-1]).abs().mean(dim=(0, 2, 3))
    return steps / maps.mean(dim=(0, 2, 3)).clamp(min=1e-6)


def components(mask: torch.Tensor) -> torch.Tensor:
    """Label the 4-connected pieces of a boolean mask [H, W] on a grid that wraps around: [H, W]
    integers, 0 outside the mask, one number per piece. Every pixel starts with a label of its own and
    takes the largest label among itself and its neighbours until nothing changes."""
    height, width = mask.shape
    labels = torch.where(mask, torch.arange(1, height * width + 1, dtype=torch.float32).view(height, width), 0.0)
    while True:
        padded = F.pad(labels[None, None], (1, 1, 1, 1), mode="circular")[0, 0]
        around = torch.stack([padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2],
                              padded[1:-1, 2:]])
        spread = torch.where(mask, around.max(dim=0).values, labels)
        if torch.equal(spread, labels):
            return labels.long()
        labels = spread


def eroded(mask: torch.Tensor) -> torch.Tensor:
    """The mask [H, W] without its border pixels (a pixel stays if its four neighbours are in the mask,
    wrapping): pieces that touch at a corner or by a thread come apart, specks vanish."""
    padded = F.pad(mask[None, None].float(), (1, 1, 1, 1), mode="circular")[0, 0]
    return (padded[1:-1, 1:-1] * padded[:-2, 1:-1] * padded[2:, 1:-1] * padded[1:-1, :-2] * padded[1:-1, 2:]) > 0


def piece_elongations(mask: torch.Tensor) -> list[tuple[int, float]]:
    """``(area, elongation)`` of each piece of the eroded ``mask`` [H, W] of at least ``BLOB_MIN_AREA``
    pixels: the square root of the ratio of the principal variances of its pixel positions (1 for a
    disc or a square, large for a streak). A piece that runs across the whole (wrapping) grid, as a
    stripe does, counts as elongation 10."""
    labels = components(eroded(mask))
    height, width = mask.shape
    pieces = []
    for label in labels.unique()[1:]:
        rows, columns = (coordinate.float() for coordinate in torch.nonzero(labels == label, as_tuple=True))
        if len(rows) < BLOB_MIN_AREA:
            continue
        for coordinate, side in ((rows, height), (columns, width)):
            if coordinate.max() - coordinate.min() > side / 2:      # it wraps: bring its far side over
                coordinate[coordinate < side / 2] += side
        variances = torch.linalg.eigvalsh(torch.cov(torch.stack([rows, columns])))
        across_the_grid = variances[1] > (min(height, width) / 3) ** 2
        pieces.append((len(rows), 10.0 if across_the_grid else math.sqrt(variances[1] / variances[0].clamp(min=0.05))))
    return pieces


def blob_elongation(images: torch.Tensor, colours: torch.Tensor) -> float:
    """The area-weighted mean elongation of the blobs of every palette colour but the first (the most
    common, the ground) in ``images`` [B, 3, H, W], each pixel given its nearest colour; 0 if none."""
    nearest = colour_maps(images, colours).argmax(dim=1)
    pieces = [piece for image in nearest for k in range(1, len(colours)) for piece in piece_elongations(image == k)]
    area = sum(size for size, _ in pieces)
    return sum(size * elongation for size, elongation in pieces) / area if area else 0.0


def shape_check(images: torch.Tensor, target: torch.Tensor) -> dict:
    """Each main colour of the target (a share of at least ``SHAPE_MIN_SHARE``) must have about the
    target's edge length per area in ``images``: within a factor exp(``SHAPE_TOLERANCE``); and where the
    target is made of compact blobs, the grown blobs must be about as elongated as the target's: within
    a factor exp(``BLOB_TOLERANCE``) (``blob_elongation``). The same for every turn, so it needs no
    ``angles``."""
    colours, shares = target_palette(target)
    main = shares >= SHAPE_MIN_SHARE
    wanted = _of_target("shapes", target, (), lambda: edge_per_area(target[None], colours[main]))
    grown = edge_per_area(images, colours[main])
    deviations = torch.log(grown.clamp(min=1e-6) / wanted.clamp(min=1e-6)).abs()
    reasons = [f"colour {_colour_name(colour)} has {g:.2f} pixels of edge per pixel of area, the target {w:.2f}"
               for colour, g, w, d in zip(colours[main], grown.tolist(), wanted.tolist(), deviations.tolist())
               if d > SHAPE_TOLERANCE]
    target_blobs = _of_target("blobs", target, (), lambda: blob_elongation(target[None], colours))
    blobs = {}
    if 0 < target_blobs < BLOB_TEXTURE_LIMIT:
        grown_blobs = blob_elongation(images, colours)
        deviation = abs(math.log(max(grown_blobs, 1e-3) / target_blobs))
        blobs = {"grown_blob_elongation": round(grown_blobs, 3), "target_blob_elongation": round(target_blobs, 3),
                 "blob_log_ratio": round(deviation, 4)}
        if deviation > BLOB_TOLERANCE:
            grown_text = ("no blobs grew, only specks" if grown_blobs == 0 else
                          f"the blobs are {grown_blobs:.2f} times as long as wide")
            reasons.append(f"{grown_text}, the target's {target_blobs:.2f} (allowed within a factor "
                           f"{math.exp(BLOB_TOLERANCE):.2f}): streaks or specks where the target has compact shapes")
    return {"grown_edge_per_area": [round(v, 3) for v in grown.tolist()],
            "target_edge_per_area": [round(v, 3) for v in wanted.tolist()],
            "largest_log_ratio": round(deviations.max().item(), 4) if len(deviations) else 0.0, **blobs,
            "passed": not reasons, "reasons": reasons}


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
    patch distance to the best of ``angles`` turned targets (``others`` must be measured alike), the
    orientation histogram against the turned targets' at its best shift, and the layout and the
    neighbours at each image's best turn.

    Returns ``{"passed", "reasons", "patch", "palette", "structure", "layout", "neighbours", "shapes"}`` (each
    part with its figures, ``passed`` and ``reasons``)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be shaped [batch, 3, height, width], got {tuple(images.shape)}")
    if not others:
        raise ValueError("need at least one other texture to judge the patch distance against")
    images = images.float().cpu().clamp(0, 1)
    references = others
    grown = patch_distance(images, target, seed, angles).mean().item()
    nearest = min(references, key=references.get)
    patch = {"distance": round(grown, 5), "nearest_other": nearest,
             "nearest_other_distance": round(references[nearest], 5), "ratio": round(grown / references[nearest], 4),
             "other_distances": {k: round(v, 5) for k, v in others.items()},
             "passed": grown < references[nearest], "reasons": []}
    if not patch["passed"]:
        patch["reasons"].append(f"patch distance {grown:.4f} is not below that of the nearest wrong texture, "
                                f"{nearest} ({references[nearest]:.4f})")
    parts = {"patch": patch, "palette": palette_check(images, target),
             "structure": structure_check(images, target, angles), "layout": layout_check(images, target, angles),
             "neighbours": neighbour_check(images, target, angles), "shapes": shape_check(images, target)}
    reasons = [reason for part in parts.values() for reason in part["reasons"]]
    return {"passed": not reasons, "reasons": reasons, **parts}


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
    """One line: PASS/FAIL, the six parts' figures and the reasons of a failure."""
    patch, structure = result["patch"], result["structure"]
    line = (f"{'PASS' if result['passed'] else 'FAIL'}: patch distance {patch['distance']:.4f} vs nearest wrong "
            f"texture {patch['nearest_other']} {patch['nearest_other_distance']:.4f}; colour shares "
            f"{[round(100 * s) for s in result['palette']['grown_shares']]}% vs target "
            f"{[round(100 * s) for s in result['palette']['target_shares']]}%; spectrum distances orientation "
            f"{structure['orientation_distance']:.2f}, scale {structure['scale_distance']:.2f}")
    if "layout" in result:           # results stored before the layout and neighbour parts have neither
        line += (f"; layout {result['layout']['distance']:.2f} (limit {result['layout']['limit']:.2f}); "
                 f"neighbours {result['neighbours']['distance']:.2f} (limit {result['neighbours']['limit']:.2f}); "
                 f"shapes {result['shapes']['largest_log_ratio']:.2f} (limit {SHAPE_TOLERANCE})")
    return line + ("" if result["passed"] else " -- " + "; ".join(result["reasons"]))


def verdicts(result: dict) -> str:
    """One line per part of the check: PASS or FAIL and its reasons (what ``evaluate texture`` prints)."""
    lines = []
    for part in PARTS:
        if part in result:
            lines.append(f"  {part:10} {'PASS' if result[part]['passed'] else 'FAIL'}"
                         + ("" if result[part]["passed"] else ": " + "; ".join(result[part]["reasons"])))
    return "\n".join(lines)
