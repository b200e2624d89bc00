"""The Triton kernels of ``helpers.fast``'s CUDA backend (``backend="triton"``): one NCA step forward,
and its backward in two passes. ``triton_engine`` loads this module on first use (never at import
time: ``triton.jit`` decides *when it decorates* whether the kernels are compiled for a GPU or run by
Triton's interpreter, ``TRITON_INTERPRET=1``, which runs them on CPU tensors for the tests).

Layout: a state is a plain contiguous ``[B, C, H, W]`` float32 grid. One program handles ``BLOCK``
consecutive cells of one image (``program_id(0)`` the image, ``program_id(1)`` the block) as tiles
``[CP, BLOCK]``: every channel of every cell of the block, the channels padded to ``CP``, a power
of two of at least 16 (what ``tl.dot`` needs), with rows of zeros. The perception is nine shifted
tile loads, each times one tap of every channel's filter; the 1x1 layer is four (split) or two
matrix products ``[CP, CP] @ [CP, BLOCK]``, one per group of C features. The features never leave
the program: a step reads the state once and writes the next state once.

The parameters arrive padded by ``triton_engine`` (so that no load of them needs a mask): the
weights as ``[groups, CP, CP]`` (group q, output channel o, input channel i is ``W[o, q*C + i]``),
the bias as ``[CP]``, the filters as ``[CP, 9]``, all zero beyond C. The backward pass writes its
per-block share of the parameters' gradient as ``[C, inputs + 1]`` (the bias's in the last column),
the layout ``helpers.fast.autograd`` accumulates, so that a step's share is one sum and one add.

Every ``tl.dot`` is ``input_precision="ieee"``: Triton's default for float32 on a GPU is TF32
(10-bit mantissas), which would miss the 1e-5 agreement with the plain model. The interpreter
ignores this argument (it multiplies with NumPy), so ``tests/test_fast_triton.py`` checks the
source for it, and the GPU measurement script checks the result on the GPU.

Non-finite values follow the plain model (``helpers.nca.NCA``) operation for operation:

* every product is computed, even with a zero factor (a filter's zero tap times an infinite
  neighbour, a zero mask times an infinite change): ``0 * inf`` is NaN there too;
* the sign split is written with ``where`` on a comparison that is false for NaN, so that
  ``relu(NaN)`` and ``min(NaN, 0)`` are NaN (``maximum``/``minimum`` would return 0 on a GPU);
* the split's backward *selects* (as PyTorch's ``threshold_backward`` does) instead of multiplying
  by a 0/1 slope, so that a NaN gradient of a feature whose relu is closed stays out.

Padding rows (channels past C) and lanes past the last cell (the final block of an image sticks out)
load zeros everywhere (state, neighbours, masks, gradients), and are never stored, so they add
nothing, not even a NaN, to what is.

Helper functions are few on purpose: Triton's interpreter re-patches its language module at every
call of one, which is most of the interpreted tests' time. The kernels use only Triton's built-in
operations, none of ``triton.language.standard``'s ``triton.jit`` functions (``tl.zeros``,
``tl.sum``, ...): those are decorated when triton is imported, so in a process that imported triton
before ``TRITON_INTERPRET=1`` was set they cannot run interpreted. The bias gradient's sum over cells
is therefore a product with a tile of ones.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _stencil(rows_ptr, filter_ptr, channels, channel_ok, cells, row, col, height, width, valid,
             CP: tl.constexpr, BLOCK: tl.constexpr, ZERO_PAD: tl.constexpr):
    """Every channel convolved with its own 3x3 filter, [CP, BLOCK]: nine shifted loads, each times
    that tap of every channel's filter (all nine multiplied, zeros included, as conv2d does).
    ``rows_ptr`` [CP, 1] points at each channel of the image. Beyond the border the grid wraps
    around, or reads 0 with ``ZERO_PAD``."""
    HW = height * width
    # the offsets of the rows above and below and of the columns left and right, per cell
    if ZERO_PAD:
        up = -width
        down = width
        left = -1
        right = 1
        up_ok, down_ok = valid & (row > 0), valid & (row < height - 1)
        left_ok, right_ok = col > 0, col < width - 1
    else:
        up = tl.where(row == 0, HW - width, -width)
        down = tl.where(row == height - 1, width - HW, width)
        left = tl.where(col == 0, width - 1, -1)
        right = tl.where(col == width - 1, 1 - width, 1)
    total = tl.full((CP, BLOCK), 0.0, tl.float32)
    for tap in tl.static_range(9):
        # tap = 3 * (dy + 1) + (dx + 1): constexpr branches, resolved when the kernel is built
        if tap // 3 == 0:
            line = cells + up
        elif tap // 3 == 1:
            line = cells
        else:
            line = cells + down
        if tap % 3 == 0:
            at = line + left
        elif tap % 3 == 1:
            at = line
        else:
            at = line + right
        if ZERO_PAD:
            if tap // 3 == 0:
                inside = up_ok
            elif tap // 3 == 1:
                inside = valid
            else:
                inside = down_ok
            if tap % 3 == 0:
                inside = inside & left_ok
            elif tap % 3 == 2:
                inside = inside & right_ok
        else:
            inside = valid
        neighbours = tl.load(rows_ptr + at[None, :], mask=channel_ok[:, None] & inside[None, :], other=0.0)
        total += tl.load(filter_ptr + channels * 9 + tap)[:, None] * neighbours
    return total


@triton.jit
def step_kernel(state_ptr, mask_ptr, out_ptr, weight_ptr, bias_ptr, filter_ptr, height, width,
                C: tl.constexpr, CP: tl.constexpr, BLOCK: tl.constexpr, SPLIT: tl.constexpr,
                PER_CHANNEL: tl.constexpr, ZERO_PAD: tl.constexpr):
    """out = x + m * (W s + b), s = [relu(x), relu(Px), min(x, 0), min(Px, 0)] (or [x, Px])."""
    batch = tl.program_id(0)
    HW = height * width
    cells = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = cells < HW
    row = cells // width
    col = cells - row * width
    channels = tl.arange(0, CP)
    channel_ok = channels < C
    tile_ok = channel_ok[:, None] & valid[None, :]
    offsets = batch * C * HW + (channels * HW)[:, None]               # [CP, 1]: each channel of this image
    rows = state_ptr + offsets
    state = tl.load(rows + cells[None, :], mask=tile_ok, other=0.0)
    perception = _stencil(rows, filter_ptr, channels, channel_ok, cells, row, col, height, width, valid,
                          CP, BLOCK, ZERO_PAD)
    square = channels[:, None] * CP + channels[None, :]               # a [CP, CP] group of the weights
    delta = tl.full((CP, BLOCK), 0.0, tl.float32) + tl.load(bias_ptr + channels)[:, None]
    # delta += W_group @ features_group, in IEEE float32 (never TF32: see the module docstring);
    # relu(v) = where(v < 0, 0, v) and min(v, 0) = where(v > 0, 0, v) keep NaN
    if SPLIT:
        delta = tl.dot(tl.load(weight_ptr + square), tl.where(state < 0.0, 0.0, state), delta,
                       input_precision="ieee")
        delta = tl.dot(tl.load(weight_ptr + CP * CP + square), tl.where(perception < 0.0, 0.0, perception), delta,
                       input_precision="ieee")
        delta = tl.dot(tl.load(weight_ptr + 2 * CP * CP + square), tl.where(state > 0.0, 0.0, state), delta,
                       input_precision="ieee")
        delta = tl.dot(tl.load(weight_ptr + 3 * CP * CP + square), tl.where(perception > 0.0, 0.0, perception),
                       delta, input_precision="ieee")
    else:
        delta = tl.dot(tl.load(weight_ptr + square), state, delta, input_precision="ieee")
        delta = tl.dot(tl.load(weight_ptr + CP * CP + square), perception, delta, input_precision="ieee")
    if PER_CHANNEL:
        update = tl.load(mask_ptr + offsets + cells[None, :], mask=tile_ok, other=0).to(tl.float32)
    else:
        update = tl.load(mask_ptr + batch * HW + cells, mask=valid, other=0).to(tl.float32)[None, :]
    # x + delta * m, never where(m, x + delta, x): a masked NaN or inf change is NaN, as in the plain model
    tl.store(out_ptr + offsets + cells[None, :], state + delta * update, mask=tile_ok)


@triton.jit
def _group_backward(feature, g, weight_ptr, square, partial_ptr, at, square_ok):
    """One group of C features s: store this block's share of dW_group = g s^T (summed over the
    block's cells) at ``partial_ptr + at`` and return the group's gradient gs = W_group^T g, [CP, BLOCK]."""
    tl.store(partial_ptr + at, tl.dot(g, tl.trans(feature), input_precision="ieee"), mask=square_ok)
    return tl.dot(tl.trans(tl.load(weight_ptr + square)), g, input_precision="ieee")


@triton.jit
def backward_kernel(state_ptr, mask_ptr, grad_out_ptr, grad_in_ptr, grad_perception_ptr, partial_ptr,
                    weight_ptr, filter_ptr, height, width, C: tl.constexpr, CP: tl.constexpr,
                    BLOCK: tl.constexpr, SPLIT: tl.constexpr, PER_CHANNEL: tl.constexpr, ZERO_PAD: tl.constexpr):
    """The first pass of a step's backward: g = m * gy; this block's [dW, db] into its own slot of
    ``partial``, ``[C, inputs + 1]`` (summed afterwards, so the result does not depend on the order
    programs run in); grad_in = gy + gf_state, and gf_perception into its buffer for the second pass."""
    INPUTS: tl.constexpr = 4 * C if SPLIT else 2 * C
    batch = tl.program_id(0)
    program = batch * tl.num_programs(1) + tl.program_id(1)
    HW = height * width
    cells = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = cells < HW
    row = cells // width
    col = cells - row * width
    channels = tl.arange(0, CP)
    channel_ok = channels < C
    tile_ok = channel_ok[:, None] & valid[None, :]
    offsets = batch * C * HW + (channels * HW)[:, None]               # [CP, 1]: each channel of this image
    grad_out = tl.load(grad_out_ptr + offsets + cells[None, :], mask=tile_ok, other=0.0)
    if PER_CHANNEL:
        update = tl.load(mask_ptr + offsets + cells[None, :], mask=tile_ok, other=0).to(tl.float32)
    else:
        update = tl.load(mask_ptr + batch * HW + cells, mask=valid, other=0).to(tl.float32)[None, :]
    g = grad_out * update                                              # [CP, BLOCK]
    square = channels[:, None] * CP + channels[None, :]                # a [CP, CP] group of the weights
    # this block's slot [C, INPUTS + 1]: output channel o, input i of a group at o * (INPUTS + 1) + i
    partial = partial_ptr + program * C * (INPUTS + 1)
    at = channels[:, None] * (INPUTS + 1) + channels[None, :]
    square_ok = channel_ok[:, None] & channel_ok[None, :]
    # db, the sum of g over the block's cells, as a product with ones: every column of it is that
    # sum; column 0 goes into the slot's last column
    sums = tl.dot(g, tl.full((BLOCK, CP), 1.0, tl.float32), input_precision="ieee")
    tl.store(partial + at + (INPUTS - channels[None, :]), sums, mask=square_ok & (channels[None, :] == 0))
    state = tl.load(state_ptr + offsets + cells[None, :], mask=tile_ok, other=0.0)
    perception = _stencil(state_ptr + offsets, filter_ptr, channels, channel_ok, cells, row, col, height, width,
                          valid, CP, BLOCK, ZERO_PAD)
    if SPLIT:
        x_pos = tl.where(state < 0.0, 0.0, state)
        p_pos = tl.where(perception < 0.0, 0.0, perception)
        x_neg = tl.where(state > 0.0, 0.0, state)
        p_neg = tl.where(perception > 0.0, 0.0, perception)
        g_x_pos = _group_backward(x_pos, g, weight_ptr, square, partial, at, square_ok)
        g_p_pos = _group_backward(p_pos, g, weight_ptr + CP * CP, square, partial + C, at, square_ok)
        g_x_neg = _group_backward(x_neg, g, weight_ptr + 2 * CP * CP, square, partial + 2 * C, at, square_ok)
        g_p_neg = _group_backward(p_neg, g, weight_ptr + 3 * CP * CP, square, partial + 3 * C, at, square_ok)
        # relu passes its gradient where its result is not <= 0 (v > 0, or NaN), min(v, 0) where
        # v < 0 or NaN: selected, not multiplied, as PyTorch's threshold_backward does
        g_x = tl.where(x_pos <= 0.0, 0.0, g_x_pos) + tl.where(x_neg >= 0.0, 0.0, g_x_neg)
        g_p = tl.where(p_pos <= 0.0, 0.0, g_p_pos) + tl.where(p_neg >= 0.0, 0.0, g_p_neg)
    else:
        g_x = _group_backward(state, g, weight_ptr, square, partial, at, square_ok)
        g_p = _group_backward(perception, g, weight_ptr + CP * CP, square, partial + C, at, square_ok)
    tl.store(grad_in_ptr + offsets + cells[None, :], grad_out + g_x, mask=tile_ok)
    tl.store(grad_perception_ptr + offsets + cells[None, :], g_p, mask=tile_ok)


@triton.jit
def adjoint_kernel(grad_perception_ptr, grad_in_ptr, flipped_ptr, height, width, C: tl.constexpr,
                   CP: tl.constexpr, BLOCK: tl.constexpr, ZERO_PAD: tl.constexpr):
    """The second pass: grad_in += P^T gf_perception, the perception's convolution with every filter
    rotated by 180 degrees and the same padding (the adjoint of zero padding pads with zeros too)."""
    batch = tl.program_id(0)
    HW = height * width
    cells = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = cells < HW
    row = cells // width
    col = cells - row * width
    channels = tl.arange(0, CP)
    channel_ok = channels < C
    tile_ok = channel_ok[:, None] & valid[None, :]
    offsets = batch * C * HW + (channels * HW)[:, None]
    back = _stencil(grad_perception_ptr + offsets, flipped_ptr, channels, channel_ok, cells, row, col, height, width,
                    valid, CP, BLOCK, ZERO_PAD)
    here = grad_in_ptr + offsets + cells[None, :]
    tl.store(here, tl.load(here, mask=tile_ok, other=0.0) + back, mask=tile_ok)
