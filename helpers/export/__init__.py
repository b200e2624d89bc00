"""The texture NCA outside PyTorch: quantized weights, a GLSL shader, a C program, a WebGL page.

Chapter 04 explains every piece; this package holds the generators so later chapters (and the
tests) can reuse them. One job per module:

* ``quantize``  which models can be exported (``check_exportable``), and ``quantize(model, bits=8)``: the
  588 parameters as integers and two scales, a ``QuantizedRule`` (``.model()`` is the PyTorch reference);
  the 8-bit state (``quantize_state``, ``state_codes``: 255 levels in [-1, 1]) and ``rollout(model, state,
  steps, state_bits=32|8)``, the PyTorch run every export is compared with
* ``glsl``      ``glsl_buffer_shader(rule)``: one ShaderToy buffer pass, perception and update in one rule;
  ``glsl_image_shader()``: the pass that shows the RGB channels; ``to_framebuffer`` / ``from_framebuffer``:
  the 12 channels as three RGBA tiles side by side, the layout those shaders read and write
* ``c``         ``c_source(rule, state_bits)``: a self-contained C99 program with the parameters embedded;
  ``find_c_compiler``, ``compile_c`` and ``run_c``: build it with the system compiler and run it on a state
* ``webgl``     ``webgl_page(rule, ..., state_bits)``: a standalone HTML page (WebGL2, no network; float32
  textures, or RGBA8 textures for the 8-bit state) that runs the rule
  live; ``show_page(html)`` shows it in a notebook; ``find_chromium`` and ``browser_rollout(rule, ...)``
  run it in headless Chromium and read the state back
* ``parity``    ``parity_tolerance(...)``: how far two correct float32 implementations may drift apart;
  ``eight_bit_tolerance(...)`` and ``code_differences(...)``: the same for the 8-bit state (near ties)
* ``circuit``   ``draw_circuit(rule)``: the rule drawn as a circuit of registers, filters and adders
* ``template``  reads the long texts (``templates/buffer.glsl``, ``image.glsl``, ``rule.c``, ``page.html``)
  and fills their ``__PLACEHOLDERS__``

Only the 12-channel architecture of the course is exported (Laplacian/Sobel perception, the
relu split, a 1x1 convolution 48 -> 12 with bias); anything else raises a ``ValueError``.
"""
from .c import c_source, compile_c, find_c_compiler, run_c
from .circuit import draw_circuit
from .glsl import TILES, from_framebuffer, glsl_buffer_shader, glsl_image_shader, to_framebuffer
from .parity import code_differences, eight_bit_tolerance, parity_tolerance
from .quantize import (
    INPUTS,
    STATE_BITS,
    STATE_CODE,
    QuantizedRule,
    check_exportable,
    quantize,
    quantize_state,
    rollout,
    state_codes,
)
from .webgl import CHROMIUM_FLAGS, browser_rollout, find_chromium, show_page, webgl_page

__all__ = [
    "CHROMIUM_FLAGS", "INPUTS", "TILES", "QuantizedRule", "browser_rollout", "c_source", "check_exportable",
    "code_differences", "eight_bit_tolerance",
    "compile_c", "draw_circuit", "find_c_compiler", "find_chromium", "from_framebuffer", "glsl_buffer_shader",
    "glsl_image_shader", "parity_tolerance", "quantize", "quantize_state", "rollout", "run_c", "show_page",
    "STATE_BITS", "STATE_CODE", "state_codes", "to_framebuffer", "webgl_page",
]
