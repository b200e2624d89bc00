"""The rule as ShaderToy GLSL, and the frame-buffer layout those shaders read and write.

The texts are ``templates/buffer.glsl`` (one NCA step per frame) and ``templates/image.glsl``.
"""
from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from ..nca import CHANNELS
from . import template
from .quantize import INPUTS, QuantizedRule, check_state_bits, float32_literal, require_rule

TILES = CHANNELS // 4  # the frame buffer holds the 12 channels as 3 RGBA tiles


def _mat4_blocks(rule: QuantizedRule) -> list[str]:
    """36 ``mat4(...)`` literals: block (tile k, input group j) = weight_codes[4k:4k+4, 4j:4j+4].

    GLSL fills a mat4 column by column, so the 16 codes of a block written row by row make its
    *columns* the rows of the block; ``x * M`` (row vector times matrix) then gives, for output
    channel r of the tile, the sum over c of block[r, c] * x[c]: exactly the 1x1 convolution.
    """
    blocks = []
    for tile in range(TILES):
        for group in range(INPUTS // 4):
            codes = rule.weight_codes[4 * tile:4 * tile + 4, 4 * group:4 * group + 4].reshape(-1)
            blocks.append("mat4(" + ",".join(str(int(c)) for c in codes) + ")")
    return blocks


def glsl_buffer_shader(rule: QuantizedRule, state_bits: int = 32) -> str:
    """A ShaderToy buffer shader (Buffer A, with iChannel0 = Buffer A) that runs one NCA step per frame.

    Frame buffer layout: for a grid of W x H cells the buffer is 3W x H pixels; the pixel (k*W + x, y)
    holds channels 4k..4k+3 of cell (x, y) in its RGBA. Each pixel reads the 3x3 neighbourhood of
    its cell in all three tiles (27 fetches, wrapping around), computes the 12 perception values,
    and writes the 4 new channels of its own tile. Pixel row y is grid row y (as in PyTorch).

    ``state_bits=8`` keeps the state in 8 bits (an RGBA8 buffer): the byte b of a value holds its
    code b - 127, the value is (b - 127) / 127, and every new value is rounded to those 255 levels.
    """
    require_rule(rule, "glsl_buffer_shader")
    check_state_bits(state_bits)
    per_cell = rule.update_per == "cell"  # one draw for all 12 values of a cell, or one per value
    return template.fill(
        "buffer.glsl", STATE_BITS=state_bits,
        PARAMETERS=rule.parameter_count, BITS=rule.bits, UPDATE_RATE=rule.update_rate,
        WEIGHT_SCALE=float32_literal(rule.weight_scale), BIAS_SCALE=float32_literal(rule.bias_scale),
        WEIGHTS=",\n  ".join(", ".join(row) for row in np.array_split(_mat4_blocks(rule), 12)),  # 3 per line
        BIASES=",".join("vec4(" + ",".join(str(int(c)) for c in rule.bias_codes[4 * k:4 * k + 4]) + ")"
                        for k in range(TILES)),
        MASK_COMMENT="every cell (all its channels together)" if per_cell else "every channel of every cell",
        MASK_CHANNEL="0" if per_cell else "4 * k + c",
    )


def glsl_image_shader(state_bits: int = 32) -> str:
    """The ShaderToy image pass (iChannel0 = Buffer A): the RGB channels, the grid repeated across the width
    (``state_bits=8``: decoding the 8-bit state of ``glsl_buffer_shader(rule, 8)``)."""
    check_state_bits(state_bits)
    text = template.read("image.glsl")
    return text if state_bits == 32 else f"#define STATE_BITS {state_bits}\n{text}"


def to_framebuffer(state: torch.Tensor) -> np.ndarray:
    """A state [1, 12, H, W] as the shader's frame buffer: float32 [H, 3W, 4] (three RGBA tiles)."""
    if not isinstance(state, torch.Tensor) or state.ndim != 4 or state.shape[:2] != (1, CHANNELS):
        raise ValueError(f"expected one state shaped [1, 12, H, W], got "
                         f"{tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__}")
    return rearrange(state[0].detach().cpu().float(), "(tile rgba) h w -> h (tile w) rgba",
                     tile=TILES).contiguous().numpy()


def from_framebuffer(pixels: np.ndarray) -> torch.Tensor:
    """The inverse of ``to_framebuffer``: [H, 3W, 4] pixels back to a state [1, 12, H, W]."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] != 4 or pixels.shape[1] % TILES:
        raise ValueError(f"expected frame-buffer pixels shaped [H, 3W, 4], got {pixels.shape}")
    return rearrange(torch.from_numpy(pixels.copy()), "h (tile w) rgba -> 1 (tile rgba) h w", tile=TILES)
