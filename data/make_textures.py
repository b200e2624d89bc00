"""Generate the course's texture images, deterministically, into data/textures/.

    python data/make_textures.py            # writes data/textures/*.png (128 x 128, RGB)

Every texture is periodic (it tiles without a seam), like the wraparound grid of the cellular
automata that learn them. Only NumPy and Pillow are used; the same command always writes the same
pixels (a test checks this against the shipped files).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 128
OUT_DIR = Path(__file__).resolve().parent / "textures"

PALETTE = {
    "red": (214, 40, 40), "blue": (29, 78, 216), "yellow": (250, 204, 21), "white": (245, 245, 240),
    "black": (20, 20, 24), "teal": (13, 148, 136), "orange": (249, 115, 22), "purple": (126, 34, 206),
    "pink": (236, 72, 153), "green": (34, 197, 94), "navy": (30, 41, 82), "cream": (254, 243, 199),
    "sand": (233, 196, 130), "brown": (60, 35, 20), "umber": (120, 72, 10),
}


def grid(size=SIZE):
    """Pixel-centre coordinates in [0, 1) for a size x size image, as (y, x)."""
    coords = (np.arange(size) + 0.5) / size
    return np.meshgrid(coords, coords, indexing="ij")


def periodic_distance(a, b):
    """Distance on the unit circle [0, 1): the shortest way round, for seamless tiling."""
    d = np.abs(a - b)
    return np.minimum(d, 1.0 - d)


def smooth_mask(signed_distance, softness=0.6 / SIZE):
    """1 inside (distance < 0), 0 outside, with a one-pixel anti-aliased edge."""
    return np.clip(0.5 - signed_distance / (2 * softness), 0.0, 1.0)


def paint(canvas, mask, colour):
    colour = np.asarray(PALETTE[colour] if isinstance(colour, str) else colour, np.float64)
    return canvas * (1 - mask[..., None]) + colour * mask[..., None]


def solid(colour):
    return np.ones((SIZE, SIZE, 3)) * np.asarray(PALETTE[colour], np.float64)


def mondrian():
    """Primary-coloured rectangles between thick black lines (lines at fixed, wrapping positions)."""
    canvas = solid("white")
    y, x = grid()
    cuts_x, cuts_y = [0.0, 0.31, 0.72], [0.0, 0.44, 0.83]
    fills = {(0, 1): "red", (1, 0): "blue", (2, 2): "yellow", (1, 2): "red", (2, 0): "yellow", (0, 2): "blue"}
    col = np.searchsorted(cuts_x, x, side="right") - 1
    row = np.searchsorted(cuts_y, y, side="right") - 1
    for (r, c), colour in fills.items():
        canvas = paint(canvas, ((row == r) & (col == c)).astype(float), colour)
    line = np.zeros_like(x)
    for cut in cuts_x:
        line = np.maximum(line, smooth_mask(periodic_distance(x, cut) - 0.022))
    for cut in cuts_y:
        line = np.maximum(line, smooth_mask(periodic_distance(y, cut) - 0.022))
    return paint(canvas, line, "black")


def polka_dots():
    """Two interleaved lattices of dots in two colours on cream."""
    canvas = solid("cream")
    y, x = grid()
    for offset, colour in [((0.0, 0.0), "red"), ((0.125, 0.125), "navy")]:
        cell = 0.25
        dy = periodic_distance((y - offset[0]) % cell / cell, 0.5) * cell
        dx = periodic_distance((x - offset[1]) % cell / cell, 0.5) * cell
        canvas = paint(canvas, smooth_mask(np.hypot(dy, dx) - 0.055), colour)
    return canvas


def stripes():
    """A diagonal grating of four colours (slope 1 so it tiles)."""
    y, x = grid()
    phase = ((x + y) * 4) % 1.0
    colours = ["teal", "yellow", "orange", "navy"]
    canvas = solid(colours[0])
    for index, colour in enumerate(colours[1:], start=1):
        canvas = paint(canvas, ((phase >= index / 4) & (phase < (index + 1) / 4)).astype(float), colour)
    return canvas


def checkerboard():
    """An 8 x 8 checkerboard in purple and pink."""
    y, x = grid()
    parity = (np.floor(x * 8) + np.floor(y * 8)) % 2
    return paint(solid("pink"), parity, "purple")


def bubbles(seed=3):
    """Overlapping rings of random sizes and colours on navy, wrapped around the edges."""
    rng = np.random.default_rng(seed)
    canvas = solid("navy")
    y, x = grid()
    colours = ["teal", "pink", "yellow", "white", "orange"]
    for _ in range(26):
        cy, cx, radius = rng.random(), rng.random(), rng.uniform(0.03, 0.11)
        distance = np.hypot(periodic_distance(y, cy), periodic_distance(x, cx))
        disc = smooth_mask(distance - radius)
        canvas = paint(canvas, disc, colours[rng.integers(len(colours))])
        canvas = paint(canvas, smooth_mask(np.abs(distance - radius) - 0.006), "white")
    return canvas


def voronoi(seed=7):
    """Voronoi cells of random sites (periodic distance), coloured, with dark borders."""
    rng = np.random.default_rng(seed)
    y, x = grid()
    sites = rng.random((24, 2))
    distances = np.stack([np.hypot(periodic_distance(y, sy), periodic_distance(x, sx)) for sy, sx in sites])
    order = np.sort(distances, axis=0)
    nearest = np.argmin(distances, axis=0)
    colours = np.asarray([PALETTE[c] for c in ["orange", "teal", "yellow", "pink", "green", "purple"]], float)
    canvas = colours[nearest % len(colours)]
    border = smooth_mask((order[1] - order[0]) - 0.012)
    return paint(canvas, border, "black")


def weave():
    """A basket weave: alternating blocks of horizontal and vertical threads."""
    y, x = grid()
    block = (np.floor(x * 4) + np.floor(y * 4)) % 2
    threads_h = (np.floor(y * 32) % 2)
    threads_v = (np.floor(x * 32) % 2)
    canvas = solid("cream")
    canvas = paint(canvas, block * threads_h, "blue")
    canvas = paint(canvas, (1 - block) * threads_v, "orange")
    shade = 1 - 0.25 * (block * (1 - threads_h) + (1 - block) * (1 - threads_v))
    return canvas * shade[..., None]


def zigzag():
    """Chevron bands: a triangle wave in x shifts colour bands in y."""
    y, x = grid()
    wave = np.abs(((x * 8) % 1.0) - 0.5) * 0.25  # triangle wave with 8 periods across
    phase = ((y + wave) * 6) % 1.0
    colours = ["red", "cream", "teal"]
    canvas = solid(colours[0])
    for index, colour in enumerate(colours[1:], start=1):
        canvas = paint(canvas, ((phase >= index / 3) & (phase < (index + 1) / 3)).astype(float), colour)
    return canvas


def plaid():
    """Tartan: overlapping translucent bands of two colours in both directions."""
    y, x = grid()
    canvas = solid("green") * 0.9
    for coordinate in (x, y):
        wide = ((coordinate * 4) % 1.0 < 0.35).astype(float)
        thin = (np.abs(((coordinate * 4) % 1.0) - 0.7) < 0.04).astype(float)
        canvas = paint(canvas, 0.55 * wide, "navy")
        canvas = paint(canvas, 0.8 * thin, "yellow")
    return canvas


def band_pass_noise(seed: int, period: float, size: int = SIZE) -> np.ndarray:
    """Periodic random field whose features are about ``period`` pixels across: white noise
    filtered in Fourier space to a ring of wavelengths around ``period`` (seamless by construction)."""
    rng = np.random.default_rng(seed)
    frequencies = np.fft.fftfreq(size)
    radius = np.hypot(*np.meshgrid(frequencies, frequencies, indexing="ij"))
    ring = np.exp(-((radius - 1 / period) * period * 2.5) ** 2)
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * ring).real
    return field / field.std()


def waves():
    """Wavy horizontal bands in teal, cream and purple (a sine displaces the bands; two waves per tile)."""
    y, x = grid()
    phase = (y * 6 + 0.08 * np.sin(2 * np.pi * 2 * x) * 6) % 1.0
    canvas = solid("cream")
    canvas = paint(canvas, smooth_mask((np.abs(phase - 0.25) - 0.14) / 6), "teal")
    return paint(canvas, smooth_mask((np.abs(phase - 0.72) - 0.1) / 6), "purple")


def camouflage(seed=6):
    """Green and brown patches over sand, as on a camouflage cloth (two independent band-pass noises)."""
    first, second = band_pass_noise(seed, period=30), band_pass_noise(seed + 100, period=30)
    canvas = paint(solid("sand"), smooth_mask(12 * (0.3 - first) / SIZE), "green")
    return paint(canvas, smooth_mask(12 * (0.6 - second) / SIZE), "brown")


TEXTURES = {
    "mondrian": mondrian, "polka_dots": polka_dots, "stripes": stripes, "checkerboard": checkerboard,
    "bubbles": bubbles, "voronoi": voronoi, "weave": weave, "zigzag": zigzag, "plaid": plaid,
    "waves": waves, "camouflage": camouflage,
}


# ------------------------------------------------------------------ held-out textures
# Never trained on while the texture recipe was chosen: they measure how the default recipe does on a
# texture nobody tuned it for (data/README.md). Written to data/textures_held_out/, not data/textures/,
# so that the texture check treats them as a learner's own image.

def maze(seed=5):
    """A labyrinth of teal worms on cream, as reaction-diffusion systems draw them (thresholded noise)."""
    field = band_pass_noise(seed, period=18)
    return paint(solid("cream"), smooth_mask(-4 * field / SIZE), "teal")   # about 1-pixel edges


def leopard(seed=9):
    """Irregular dark rosettes with orange centres on a sand ground."""
    field = band_pass_noise(seed, period=22)
    canvas = solid("sand")
    canvas = paint(canvas, smooth_mask(4 * (0.9 - field) / SIZE), "brown")
    return paint(canvas, smooth_mask(4 * (1.5 - field) / SIZE), "orange")


def honeycomb():
    """Yellow hexagons with dark borders (a hexagonal lattice that tiles the 128-pixel square)."""
    y, x = grid()
    columns, rows = 4, 4                       # cell centres on a lattice periodic in both directions
    distance = np.full(x.shape, np.inf)
    second = np.full(x.shape, np.inf)
    for row in range(rows):
        for column in range(columns):
            cy, cx = (row + 0.5) / rows, (column + 0.5 * (row % 2) + 0.25) / columns
            d = np.hypot(periodic_distance(y, cy), periodic_distance(x, cx) * 0.87)
            second = np.where(d < distance, distance, np.minimum(second, d))
            distance = np.minimum(distance, d)
    border = second - distance
    return paint(solid("yellow"), smooth_mask(border - 0.025), "umber")


HELD_OUT = {"maze": maze, "leopard": leopard, "honeycomb": honeycomb}
HELD_OUT_DIR = Path(__file__).resolve().parent / "textures_held_out"


#: The textures drawn from random numbers: ``render(name, seed)`` draws a new instance of them (other
#: bubble positions, other Voronoi sites); the shipped files use each function's default seed.
SEEDED = ("bubbles", "voronoi", "camouflage")


def render(name: str, seed: int | None = None) -> np.ndarray:
    """The texture ``name`` as uint8 RGB [SIZE, SIZE, 3]; ``seed``: a new instance of a texture in
    ``SEEDED`` (None: the shipped one)."""
    if seed is not None and name not in SEEDED:
        raise ValueError(f"{name} is drawn without random numbers; only {', '.join(SEEDED)} take a seed")
    drawn = TEXTURES[name]() if seed is None else TEXTURES[name](seed=seed)
    return np.clip(np.round(drawn), 0, 255).astype(np.uint8)


def main(held_out: bool = False) -> None:
    """Write the course textures (or, with ``held_out``, the held-out ones) as PNG files."""
    drawings, folder = (HELD_OUT, HELD_OUT_DIR) if held_out else (TEXTURES, OUT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    for name, draw in drawings.items():
        pixels = np.clip(np.round(draw()), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png", optimize=True)
        print("wrote", folder / f"{name}.png")


if __name__ == "__main__":
    import sys
    main(held_out="--held-out" in sys.argv[1:])
