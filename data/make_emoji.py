"""Render the course's emoji targets from the Noto Color Emoji font into data/emoji/.

    python data/make_emoji.py                  # writes data/emoji/NAME.png (40 x 40 RGBA) for every EMOJI
    python data/make_emoji.py --size 32 --out /tmp/emoji32 lizard butterfly
    python data/make_emoji.py --many           # chapter 07's large set: data/emoji/many/NAME.png

The font is Debian's ``fonts-noto-color-emoji`` (``apt-get install fonts-noto-color-emoji``; SIL Open
Font License 1.1), a colour bitmap font: Pillow draws a glyph in colour at the font's bitmap size
(109 px) with ``embedded_color=True``. Each glyph is cropped to its visible pixels, centred on a
square, and shrunk so that its longer side is ``size`` pixels (Lanczos). The PNG holds straight
(not premultiplied) alpha; ``helpers.tasks.growing.load_emoji`` premultiplies and pads it.

``--many`` renders chapter 07's large set, several hundred emoji chosen by rule rather than by hand:
every single-character emoji the font holds in the blocks of ``MANY_BLOCKS`` (faces, animals, plants,
food, things), named after its Unicode name, except the ones that fill their square (scenes, keycaps,
signs: more than ``MAX_COVERAGE`` of the pixels opaque), whose shape says nothing.

On Colab the same script works after ``!apt-get install -y fonts-noto-color-emoji`` (or point
``--font`` at any copy of NotoColorEmoji.ttf).
"""
from __future__ import annotations

import argparse
import unicodedata
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
BITMAP_SIZE = 109            # the one size at which the font's colour bitmaps are stored
OUT_DIR = Path(__file__).resolve().parent / "emoji"

#: name -> emoji. The lizard first: it is the article's example; chapter 06 uses the first twelve.
EMOJI = {
    "lizard": "\N{LIZARD}",
    "butterfly": "\N{BUTTERFLY}",
    "mushroom": "\N{MUSHROOM}",
    "snowflake": "\N{SNOWFLAKE}",
    "fish": "\N{TROPICAL FISH}",
    "crab": "\N{CRAB}",
    "lady_beetle": "\N{LADY BEETLE}",
    "cactus": "\N{CACTUS}",
    "sunflower": "\N{SUNFLOWER}",
    "maple_leaf": "\N{MAPLE LEAF}",
    "smiling_face": "\N{SMILING FACE WITH SMILING EYES}",
    "octopus": "\N{OCTOPUS}",
    # chapter 07's many images (64 with the twelve above): faces, fruit, animals, plants, things
    "neutral_face": "\N{NEUTRAL FACE}",
    "grinning_face": "\N{GRINNING FACE}",
    "slightly_smiling_face": "\N{SLIGHTLY SMILING FACE}",
    "slightly_frowning_face": "\N{SLIGHTLY FROWNING FACE}",
    "winking_face": "\N{WINKING FACE}",
    "tears_of_joy": "\N{FACE WITH TEARS OF JOY}",
    "heart_eyes": "\N{SMILING FACE WITH HEART-SHAPED EYES}",
    "sleeping_face": "\N{SLEEPING FACE}",
    "angry_face": "\N{ANGRY FACE}",
    "crying_face": "\N{CRYING FACE}",
    "screaming_face": "\N{FACE SCREAMING IN FEAR}",
    "sunglasses_face": "\N{SMILING FACE WITH SUNGLASSES}",
    "apple": "\N{RED APPLE}",
    "banana": "\N{BANANA}",
    "cherries": "\N{CHERRIES}",
    "grapes": "\N{GRAPES}",
    "lemon": "\N{LEMON}",
    "strawberry": "\N{STRAWBERRY}",
    "watermelon": "\N{WATERMELON}",
    "peach": "\N{PEACH}",
    "tomato": "\N{TOMATO}",
    "carrot": "\N{CARROT}",
    "avocado": "\N{AVOCADO}",
    "cat_face": "\N{CAT FACE}",
    "dog_face": "\N{DOG FACE}",
    "frog_face": "\N{FROG FACE}",
    "pig_face": "\N{PIG FACE}",
    "panda_face": "\N{PANDA FACE}",
    "bear_face": "\N{BEAR FACE}",
    "mouse_face": "\N{MOUSE FACE}",
    "rabbit_face": "\N{RABBIT FACE}",
    "fox_face": "\N{FOX FACE}",
    "penguin": "\N{PENGUIN}",
    "turtle": "\N{TURTLE}",
    "snail": "\N{SNAIL}",
    "whale": "\N{SPOUTING WHALE}",
    "dolphin": "\N{DOLPHIN}",
    "owl": "\N{OWL}",
    "unicorn_face": "\N{UNICORN FACE}",
    "red_heart": "\N{HEAVY BLACK HEART}",
    "star": "\N{WHITE MEDIUM STAR}",
    "sun": "\N{BLACK SUN WITH RAYS}",
    "fire": "\N{FIRE}",
    "four_leaf_clover": "\N{FOUR LEAF CLOVER}",
    "cherry_blossom": "\N{CHERRY BLOSSOM}",
    "rose": "\N{ROSE}",
    "tulip": "\N{TULIP}",
    "deciduous_tree": "\N{DECIDUOUS TREE}",
    "evergreen_tree": "\N{EVERGREEN TREE}",
    "palm_tree": "\N{PALM TREE}",
    "rocket": "\N{ROCKET}",
    "soccer_ball": "\N{SOCCER BALL}",
}


#: chapter 07's large set (--many): Unicode blocks of single-character emoji, first and last code point
MANY_BLOCKS = ((0x1F330, 0x1F4FF),       # plants, food, animals, things (Miscellaneous Symbols and Pictographs)
               (0x1F600, 0x1F64F),       # faces (Emoticons)
               (0x1F910, 0x1F9FF))       # more faces, animals, food (Supplemental Symbols and Pictographs)
SKIN_TONES = range(0x1F3FB, 0x1F400)     # modifiers, not pictures
MAX_COVERAGE = 0.8                       # an emoji whose square is more opaque than this is a tile, not a shape
MANY_DIR = OUT_DIR / "many"
MANY_SIZE = 32                           # chapter 07 trains at 16 px: 32 px PNGs keep the set near 1.5 MB


def many_emoji(font_path: Path = FONT) -> dict[str, str]:
    """name -> emoji for the large set: every code point of ``MANY_BLOCKS`` that the font holds."""
    from fontTools.ttLib import TTFont  # the font's table of characters (fontTools comes with matplotlib)

    held = TTFont(str(font_path)).getBestCmap()
    chosen = {}
    for first, last in MANY_BLOCKS:
        for point in range(first, last + 1):
            if point in held and point not in SKIN_TONES:
                name = unicodedata.name(chr(point), f"u{point:x}").lower().replace(" ", "_").replace("-", "_")
                chosen[name] = chr(point)
    return chosen


def coverage(image: Image.Image) -> float:
    """The fraction of pixels that are at least half opaque."""
    alpha = image.getchannel("A")
    return sum(alpha.histogram()[128:]) / (alpha.width * alpha.height)


def render(emoji: str, size: int = 40, font_path: Path = FONT) -> Image.Image:
    """One emoji as a ``size`` x ``size`` RGBA image (straight alpha), its longer side filling it."""
    if not font_path.is_file():
        raise FileNotFoundError(f"no emoji font at {font_path}: install it with "
                                "`apt-get install fonts-noto-color-emoji`, or pass --font PATH")
    font = ImageFont.truetype(str(font_path), BITMAP_SIZE)
    canvas = Image.new("RGBA", (2 * BITMAP_SIZE, 2 * BITMAP_SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((BITMAP_SIZE // 4, BITMAP_SIZE // 4), emoji, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise ValueError(f"the font drew nothing for {emoji!r} (U+{ord(emoji[0]):04X}): not an emoji it holds")
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return premultiplied_resize(square, size)


def premultiplied_resize(image: Image.Image, size: int) -> Image.Image:
    """Resize RGBA without dark fringes: filter premultiplied colour, then divide the alpha out again."""
    premultiplied = image.convert("RGBa").resize((size, size), Image.LANCZOS)
    return premultiplied.convert("RGBA")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"which emoji (default: all of {', '.join(EMOJI)})")
    parser.add_argument("--size", type=int, default=None,
                        help=f"side of each PNG in pixels (default 40; {MANY_SIZE} with --many)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"folder (default {OUT_DIR})")
    parser.add_argument("--font", type=Path, default=FONT, help=f"NotoColorEmoji.ttf (default {FONT})")
    parser.add_argument("--many", action="store_true", help=f"chapter 07's large set into {MANY_DIR} (see above)")
    args = parser.parse_args(argv)
    if args.many:
        write_many(args.size or MANY_SIZE, MANY_DIR if args.out == OUT_DIR else args.out, args.font)
        return
    unknown = sorted(set(args.names) - set(EMOJI))
    if unknown:
        parser.error(f"unknown emoji {unknown}; known: {', '.join(EMOJI)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or EMOJI:
        path = args.out / f"{name}.png"
        render(EMOJI[name], args.size or 40, args.font).save(path)
        print(f"wrote {path}")


def write_many(size: int, out: Path, font_path: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    kept = skipped = 0
    for name, emoji in many_emoji(font_path).items():
        image = render(emoji, size, font_path)
        if coverage(image) > MAX_COVERAGE:
            skipped += 1
            continue
        image.save(out / f"{name}.png", optimize=True)
        kept += 1
    print(f"wrote {kept} emoji to {out} ({skipped} that fill their square skipped)")


if __name__ == "__main__":
    main()
