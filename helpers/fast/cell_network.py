"""Fast rollouts of the per-cell-network rules of chapters 06 to 08, with the plain models' states
and gradients.

The rules: ``helpers.growing_nca.GrowingNCA`` (chapter 06), the conditioned rules of
``helpers.manifold_nca`` (chapter 07) and ``helpers.reaction_diffusion.ReactionDiffusionNCA``
(chapter 08). Each step is a fixed linear perception (identity and Sobel filters, or the
Laplacian), then the same small network in every cell (inputs -> hidden, ReLU -> channels).

Where the plain models' time goes (``python -m helpers.bench``), and what this module does instead:

* **Most cells change nothing.** In a growing rule a cell whose 3x3 neighbourhood has no alpha
  above the threshold ends the step at zero whatever the network says, and a cell that does not
  fire this step keeps its state. The plain step computes the network in every cell and multiplies
  by the masks; here it runs only in the cells that fire next to a living cell (their new alpha can
  keep a living neighbour alive): the ``sparse`` plan, a tenth of a 72x72 grid in which a 40-pixel
  emoji lives. This is the big win (8 to 9x for the growing rule on a CPU).
* **Autograd's bookkeeping.** A whole rollout is ONE ``torch.autograd.Function`` whose backward is
  written by hand (below). It keeps, per step, the chosen cells' perceptions and hidden layer (the
  plain graph keeps a dozen whole-grid tensors per step), in one memory arena reused between
  rollouts, so no step pays for fresh memory (on Linux, fresh large blocks cost page faults).
* **Perception as a gather.** The sparse plan keeps the state as rows of a zero-bordered grid: the
  chosen cells' neighbourhoods are one gather, their perception one product with the [3, 9]
  kernels, its adjoint one product and one scatter-add (``PaddedGrid``). The reaction-diffusion
  Laplacian is two 1D passes (``TorusLaplacian``).
* Measured and not kept (``python -m helpers.bench --candidates``): ``torch.compile`` of the plain
  step (slower, 20 s to compile), bfloat16 (fails the 1e-5 tolerance by far), and folding the
  perception into the first layer (one 3x3 convolution: three times that layer's multiply-adds,
  since the 48 perceived numbers are fewer than the 144 neighbourhood values).

The hand-written backward of one growing step (state ``x`` as rows of cells, ``keep`` = alive before
and after, ``fire`` the random mask, selected cells ``S``; ``p = P x`` the 48 perceptions,
``h = relu(W1 p + b1)``, ``d = W2 h + b2``; ``y = (x + fire * d) * keep``), given ``gy``:

    g       = keep * gy                    (also the gradient through the identity path)
    gd      = g[S]                         (only where the cell was updated)
    dW2    += gd^T h,  db2 += sum gd
    gh      = (gd W2) * [h > 0]            (PyTorch's rule for ReLU: NaN passes)
    dW1    += gh^T p,  db1 += sum gh
    gx      = g + P^T scatter_S(gh W1)     (P^T: the perception's adjoint)

**Same values, NaN included.** Skipping a cell is exact only while every change is finite (a dead
cell's change times zero is zero, but ``inf * 0`` is NaN in the plain model). So each step first
bounds every cell's change from the largest state value and the weights' norms; a step whose bound
could overflow (or a non-finite state) computes the whole grid in the plain order of operations
(``dense`` for that step). And a backward whose result holds a NaN or inf is redone by replaying the
plain model's steps under autograd from the saved first state and masks, so non-finite gradients are
the plain model's own. ``tests/test_fast_cell_network.py`` checks both.

On a CUDA GPU ``auto`` picks the ``dense`` plan (every cell, no data-dependent shapes: the selection
would synchronise the GPU every step), once a self-check on that device passed (``self_check``; on
a CPU ``sparse`` after its own). Usage::

    from helpers.fast import cell_network
    final = cell_network.growing_rollout(model, state, steps, generator)      # = model.rollout(...)
    final = cell_network.conditioned_rollout(rule, state, steps, codes, generator)
    final = cell_network.diffusion_rollout(model, state, steps)
    train_pool(..., rollout=cell_network.fast_rollout)   # what --engine fast (the default) trains with
    cell_network.release_memory()                        # free the arena kept between rollouts
"""
from __future__ import annotations

import contextlib
import math
import weakref

import torch
import torch.nn.functional as F
from einops import rearrange

from ..checks import check_speeds, check_steps
from ..growing_nca import ALPHA, GrowingNCA, alive_mask, perceive
from ..manifold_nca import ConditionedRule, ManifoldNCA, check_codes
from ..reaction_diffusion import ReactionDiffusionNCA, laplacian

PLANS = ("auto", "sparse", "dense", "plain")
#: A step's bound on any change below this cannot overflow float32 (3.4e38) in any order of summation.
SAFE_BOUND = 1e30
STATE_DTYPES = (torch.float32, torch.float64)


# ------------------------------------------------------------------------------ memory

class Arena:
    """Storage for a rollout's saved tensors, kept between rollouts: ``take`` hands out views of one
    large buffer, so a training loop touches the same memory every iteration. ``reset`` starts a new
    rollout; it reuses the buffer only when the rollout that last used it is gone or has finished its
    backward pass (its ``records`` are None), else that rollout keeps the old buffer and a new one is
    made. When a rollout needs more room, the rest of it gets fresh tensors and the next rollout a
    larger buffer."""

    def __init__(self):
        self.buffer: torch.Tensor | None = None
        self.used = 0
        self.wanted = 0
        self.owner = None                   # a weak reference to the rollout whose tensors are in the buffer

    def reset(self, owner, dtype: torch.dtype, device: torch.device) -> None:
        previous = self.owner() if self.owner is not None else None
        in_use = previous is not None and previous.records is not None
        if in_use or (self.buffer is not None and (self.buffer.dtype != dtype or self.buffer.device != device)):
            self.buffer = None
        if self.buffer is None or self.buffer.numel() < self.wanted:
            self.buffer = torch.empty(self.wanted, dtype=dtype, device=device) if self.wanted else None
        self.used, self.wanted = 0, 0
        self.owner = weakref.ref(owner)

    def take(self, *shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        count = math.prod(shape)
        self.wanted += count
        if self.buffer is None or self.buffer.dtype != dtype or self.used + count > self.buffer.numel():
            return torch.empty(*shape, dtype=dtype, device=device)     # this rollout only; next time it fits
        view = self.buffer[self.used:self.used + count].view(*shape)
        self.used += count
        return view

    def release(self) -> None:
        self.buffer, self.used, self.wanted, self.owner = None, 0, 0, None


_arenas: dict[tuple, Arena] = {}


def arena_for(device: torch.device) -> Arena:
    return _arenas.setdefault((device.type, device.index), Arena())


def release_memory() -> None:
    """Free the arenas kept between rollouts (they hold the last rollout's saved tensors' room)."""
    for arena in _arenas.values():
        arena.release()


# ------------------------------------------------------------------------------ checks

def check_plan(plan: str) -> None:
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {PLANS}, got {plan!r}")


def check_dtypes(state: torch.Tensor, *weights: torch.Tensor) -> None:
    if state.dtype not in STATE_DTYPES:
        raise TypeError(f"the fast rollout runs float32 or float64 states, got {state.dtype}; "
                        "use model.rollout for other dtypes")
    for weight in weights:
        if weight.dtype != state.dtype or weight.device != state.device:
            raise TypeError(f"the model's weights ({weight.dtype}, {weight.device}) must have the state's dtype "
                            f"and device ({state.dtype}, {state.device}): move the model (model.to(...)) or the state")


# ------------------------------------------------------------------------------ the growing step

class GrowingPlan:
    """What one growing rollout needs besides its tensors: the rule's constants, the generator, how
    cells are chosen (``sparse`` or ``dense``), and what the forward pass kept for the backward."""

    def __init__(self, filters: torch.Tensor, fire_rate: float, threshold: float, generator, mode: str,
                 fires: list | None = None):
        self.filters, self.fire_rate, self.threshold = filters, fire_rate, threshold
        self.generator, self.mode = generator, mode
        self.given_fires = fires          # masks to use instead of drawing (tests, the plain replay)
        # |perception| <= (largest sum of |filter|) * max|x|: the first factor of the change's bound
        self.filter_gain = filters.detach().abs().flatten(1).sum(1).max().item()
        self.records: list[dict] = []
        self.fires: list[torch.Tensor] = []
        self.start: torch.Tensor | None = None

    def draw_fire(self, batch: int, height: int, width: int, device, step: int) -> torch.Tensor:
        """``[B, 1, H, W]`` booleans, drawn exactly as ``GrowingNCA.step`` draws them."""
        if self.given_fires is not None:
            return self.given_fires[step]
        return torch.rand(batch, 1, height, width, generator=self.generator, device=device) < self.fire_rate


def weight_gains(weights: tuple) -> tuple[float, ...]:
    """The weights' largest absolute row sums and biases: how much each layer can multiply a bound."""
    return tuple(w.abs().sum(-1).amax().item() if w.dim() > 1 and w.shape[-1] > 1 else w.abs().amax().item()
                 for w in weights)


def change_bound(state: torch.Tensor, gain: float, gains: tuple) -> float:
    """An upper bound on |change| of every cell this step, from max |state| and the weights' gains."""
    smallest, largest = torch.aminmax(state)
    largest = max(-smallest.item(), largest.item())
    if not math.isfinite(largest):
        return math.inf
    w1, b1, w2, b2 = gains
    return w2 * (w1 * gain * largest + b1) + b2


def network_forward(perceived: torch.Tensor, weights: tuple, layout, arena: Arena) -> tuple:
    """``h = relu(W1 p + b1)`` and ``d = W2 h + b2`` for rows of perceptions; with per-image weights
    (``[B, ...]``, ``layout`` "batched") the rows are B equal blocks, one per image."""
    w1, b1, w2, b2 = weights
    hidden = arena.take(perceived.shape[0], w1.shape[-2], dtype=perceived.dtype, device=perceived.device)
    if w1.dim() == 2:
        torch.addmm(b1, perceived, w1.T, out=hidden)
        hidden.relu_()
        return hidden, torch.addmm(b2, hidden, w2.T)
    if layout == "batched":
        batch = w1.shape[0]
        per_image = hidden.view(batch, -1, w1.shape[-2])
        torch.baddbmm(b1[:, None, :], perceived.view(batch, -1, perceived.shape[1]), w1.transpose(1, 2),
                      out=per_image)
        per_image.relu_()
        change = torch.baddbmm(b2[:, None, :], per_image, w2.transpose(1, 2))
        return hidden, change.view(-1, w2.shape[-2])
    raise ValueError(f"per-image weights need the batched layout, got {layout!r}")


def network_backward(g_change: torch.Tensor, record: dict, weights: tuple, grads: list, layout) -> torch.Tensor:
    """The gradient with respect to the rows' perceptions, given that of their change; adds the
    parameter gradients (per image when the weights are: ``layout`` "batched") to ``grads``."""
    w1, b1, w2, b2 = weights
    dw1, db1, dw2, db2 = grads
    hidden, perceived = record["hidden"], record["perceived"]
    g_perceived = perceived.new_empty(perceived.shape)
    if w1.dim() == 2:
        dw2.addmm_(g_change.T, hidden)
        db2.add_(g_change.sum(0))
        gh = torch.ops.aten.threshold_backward(g_change @ w2, hidden, 0)    # ReLU's backward, PyTorch's own
        dw1.addmm_(gh.T, perceived)
        db1.add_(gh.sum(0))
        return torch.mm(gh, w1, out=g_perceived)
    batch = w1.shape[0]
    gd, h = g_change.reshape(batch, -1, g_change.shape[1]), hidden.view(batch, -1, hidden.shape[1])
    dw2.baddbmm_(gd.transpose(1, 2), h)
    db2.add_(gd.sum(1))
    gh = torch.ops.aten.threshold_backward(torch.bmm(gd, w2), h, 0)
    dw1.baddbmm_(gh.transpose(1, 2), perceived.view(batch, -1, perceived.shape[1]))
    db1.add_(gh.sum(1))
    torch.bmm(gh, w1, out=g_perceived.view(batch, -1, perceived.shape[1]))
    return g_perceived


# --- the dense plan: every cell, the plain model's operations (what a GPU runs)

def dense_step(state: torch.Tensor, weights: tuple, plan: GrowingPlan, step: int, arena: Arena,
               keep_record: bool) -> torch.Tensor:
    """One step of ``GrowingNCA.step`` on a ``[B, C, H, W]`` channels-last state; returns the next."""
    batch, channels, height, width = state.shape
    before = alive_mask(state, plan.threshold)
    fire = plan.draw_fire(batch, height, width, state.device, step)
    perceived = rearrange(perceive(state, plan.filters), "b c h w -> (b h w) c")
    chosen = arena.take(*perceived.shape, dtype=state.dtype, device=state.device)
    chosen.copy_(perceived)
    hidden, change = network_forward(chosen, weights, "batched", arena)
    fire_rows = rearrange(fire, "b 1 h w -> (b h w) 1").to(state.dtype)
    updated = rearrange(state, "b c h w -> (b h w) c") + change * fire_rows
    updated = rearrange(updated, "(b h w) c -> b c h w", b=batch, h=height)
    keep = before & alive_mask(updated, plan.threshold)
    if keep_record:
        plan.fires.append(fire)
        plan.records.append(dict(perceived=chosen, hidden=hidden, keep=keep, fire=fire))
    return updated * keep.to(state.dtype)


def dense_step_backward(grad: torch.Tensor, weights: tuple, grads: list, plan: GrowingPlan,
                        record: dict) -> torch.Tensor:
    """The gradient with respect to the step's input state (``grad``: with respect to its output)."""
    batch, channels, height, width = grad.shape
    g = grad * record["keep"].to(grad.dtype)                           # [B, C, H, W]
    g_change = rearrange(g, "b c h w -> (b h w) c") * rearrange(record["fire"], "b 1 h w -> (b h w) 1").to(grad.dtype)
    g_perceived = network_backward(g_change, record, weights, grads, "batched")
    scattered = rearrange(g_perceived, "(b h w) c -> b c h w", b=batch, h=height)
    return g + F.conv_transpose2d(scattered, plan.filters.to(grad.dtype), padding=1, groups=channels)


# --- the sparse plan: the state as rows of a zero-bordered grid, the network only where it matters

def neighbourhood_max(padded: torch.Tensor) -> torch.Tensor:
    """``[B, H + 2, W + 2] -> [B, H, W]``: the largest value of every 3x3 neighbourhood (NaN wins)."""
    rows = torch.maximum(torch.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    return torch.maximum(torch.maximum(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])


class PaddedGrid:
    """A ``[B, C, H, W]`` grid kept as rows ``[B * (H + 2) * (W + 2), C]`` with a border of zeros, so
    a cell's 3x3 neighbourhood is nine rows at fixed offsets. The perception of N chosen cells is
    then one gather of their neighbourhoods, ``[9, N, C]`` (neighbour-major), and one small product
    with the ``[3, 9]`` kernels; its adjoint is the transposed product and one scatter-add. Much
    cheaper than a depthwise convolution of the whole grid when few cells are chosen.

    The perceptions come out kernel-major, ``[N, (k c)]``, where ``perceive`` orders them channel-major
    ``(c k)``: the rollout runs with the first layer's columns reordered to match (``to_kernel_major``)."""

    def __init__(self, shape, filters: torch.Tensor, dtype, device):
        batch, channels, height, width = shape
        self.shape, self.padded = shape, (batch, height + 2, width + 2, channels)
        row = width + 2
        self.block = (height + 2) * row          # padded rows of one image
        self.offsets = torch.tensor([dy * row + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], device=device)
        cell = torch.arange(batch * height * width, device=device)
        image, inside = cell // (height * width), cell % (height * width)
        self.row_of_cell = image * self.block + (inside // width + 1) * row + inside % width + 1
        self.kernels = filters.reshape(channels, 3, 9).to(dtype)                 # [C, k, s]
        # every channel with the same three kernels (the course's filters): one [3, 9] product
        self.shared = bool((self.kernels == self.kernels[:1]).all())

    def new(self, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(*self.padded)

    def load(self, grid: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        grid[:, 1:-1, 1:-1] = rearrange(state, "b c h w -> b h w c")
        return grid

    def interior(self, grid: torch.Tensor) -> torch.Tensor:
        """The ``[B, C, H, W]`` view of the cells (channels-last memory order)."""
        return rearrange(grid[:, 1:-1, 1:-1], "b h w c -> b c h w")

    def alive(self, grid: torch.Tensor, threshold: float) -> torch.Tensor:
        """``alive_mask`` of the interior, ``[B, H, W]``: the 3x3 maximum of alpha (NaN wins, as in
        ``max_pool2d``; the zero border gives the same answer as its -inf padding for threshold >= 0)."""
        return neighbourhood_max(grid[..., ALPHA].contiguous()) > threshold

    def near(self, mask: torch.Tensor) -> torch.Tensor:
        """``[B, H, W]``: the cells with some cell of ``mask`` in their 3x3 neighbourhood."""
        padded = mask.new_zeros(mask.shape[0], mask.shape[1] + 2, mask.shape[2] + 2, dtype=torch.uint8)
        padded[:, 1:-1, 1:-1] = mask
        return neighbourhood_max(padded).bool()

    def neighbourhoods(self, rows: torch.Tensor) -> torch.Tensor:
        """The padded rows of the nine neighbours of the given padded rows, neighbour-major ``[9 N]``."""
        return (self.offsets[:, None] + rows[None, :]).reshape(-1)

    def perceive(self, grid_rows: torch.Tensor, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The perceptions ``[N, (k c)]`` of the cells at padded ``rows``, written to ``out``."""
        channels, count = grid_rows.shape[1], rows.numel()
        around = grid_rows.index_select(0, self.neighbourhoods(rows)).view(9, count, channels)
        if self.shared:
            mixed = (self.kernels[0] @ around.view(9, -1)).view(3, count, channels)
        else:
            mixed = torch.einsum("cks,snc->knc", self.kernels, around)
        out.view(count, 3, channels).copy_(mixed.transpose(0, 1))
        return out

    def perceive_adjoint(self, g_perceived: torch.Tensor, rows: torch.Tensor, g_rows: torch.Tensor) -> None:
        """Add the adjoint of ``perceive`` applied to ``g_perceived`` ``[N, (k c)]`` to ``g_rows``."""
        channels, count = g_rows.shape[1], rows.numel()
        by_kernel = g_perceived.view(count, 3, channels).transpose(0, 1).reshape(3, -1)
        if self.shared:
            spread = self.kernels[0].T @ by_kernel                                # [9, N C]
        else:
            spread = torch.einsum("cks,knc->snc", self.kernels, by_kernel.view(3, count, channels))
        g_rows.index_add_(0, self.neighbourhoods(rows), spread.reshape(-1, channels))

    def batched_rows(self, chosen_cells: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For per-image weights: the chosen rows laid out as ``[B, M]`` (M: the most any image has), so
        that the network runs as batched products. Each image's empty slots READ the neighbourhood of
        its first cell and WRITE to its border corner (cleared after the step): they change nothing,
        and their gradient, read from that border, is zero. Returns (rows read, rows written)."""
        batch, _, height, width = self.shape
        image = chosen_cells // (height * width)
        counts = torch.bincount(image, minlength=batch)
        most = int(counts.max()) if chosen_cells.numel() else 0
        slot = image * most + torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[image]
        corners = torch.arange(batch, device=rows.device) * self.block
        read = self.row_of_cell[corners // self.block * height * width].repeat_interleave(most)
        written = corners.repeat_interleave(most)
        read[slot], written[slot] = rows, rows
        return read, written


def to_kernel_major(weight: torch.Tensor) -> torch.Tensor:
    """First-layer weights ``[..., hidden, (c k)]`` (``perceive``'s order) -> ``[..., hidden, (k c)]``."""
    return rearrange(weight, "... h (c k) -> ... h (k c)", k=3)


def to_channel_major(weight: torch.Tensor) -> torch.Tensor:
    return rearrange(weight, "... h (k c) -> ... h (c k)", k=3)


def sparse_step(grid: torch.Tensor, weights: tuple, plan: GrowingPlan, step: int, arena: Arena,
                keep_record: bool, geometry: PaddedGrid) -> torch.Tensor:
    """One step of ``GrowingNCA.step`` on a padded grid ``[B, H + 2, W + 2, C]``; returns the next.
    ``weights``: the first layer's columns in kernel-major order (``to_kernel_major``)."""
    batch, channels, height, width = geometry.shape
    cells = grid.view(-1, channels)
    before = geometry.alive(grid, plan.threshold)
    fire = plan.draw_fire(batch, height, width, grid.device, step)
    fire_cells = fire.view(batch, height, width)
    if change_bound(cells, plan.filter_gain, plan.gains) < SAFE_BOUND:
        # The cells that fire next to a living one: only their new alpha can keep a living cell alive
        # (``alive after``); every other change is multiplied by zero or by a mask of zeros.
        chosen_cells = (geometry.near(before) & fire_cells).view(-1).nonzero().squeeze(1)
        scale = None
    else:      # a change might overflow: compute every cell, and multiply by the mask as the plain model does
        chosen_cells = torch.arange(batch * height * width, device=grid.device)
        scale = fire_cells.reshape(-1, 1).to(grid.dtype)
    per_image = weights[0].dim() == 3
    read = written = geometry.row_of_cell[chosen_cells]
    if per_image:
        read, written = geometry.batched_rows(chosen_cells, read)
    perceived = arena.take(read.numel(), 3 * channels, dtype=grid.dtype, device=grid.device)
    geometry.perceive(cells, read, perceived)
    hidden, change = network_forward(perceived, weights, "batched" if per_image else None, arena)
    updated = grid                        # in place: the backward pass needs none of the old state
    updated.view(-1, channels).index_add_(0, written, change if scale is None else change * scale)
    if per_image:
        updated[:, 0, 0] = 0.0            # the empty slots' changes landed in the border corners
    keep = before & geometry.alive(updated, plan.threshold)
    updated[:, 1:-1, 1:-1] *= keep[..., None].to(grid.dtype)
    if keep_record:
        plan.fires.append(fire)
        plan.records.append(dict(read=read, written=written, perceived=perceived, hidden=hidden, keep=keep,
                                 scale=scale))
    return updated


def sparse_step_backward(grad: torch.Tensor, weights: tuple, grads: list, plan: GrowingPlan, record: dict,
                         geometry: PaddedGrid) -> torch.Tensor:
    """The gradient with respect to the step's input grid (``grad``: padded, zero border)."""
    channels = geometry.shape[1]
    g = grad                              # in place: the caller's buffer is this rollout's own
    g[:, 1:-1, 1:-1] *= record["keep"][..., None].to(grad.dtype)
    g_rows = g.view(-1, channels)
    g_change = g_rows.index_select(0, record["written"])
    if record["scale"] is not None:
        g_change = g_change * record["scale"]
    per_image = weights[0].dim() == 3
    g_perceived = network_backward(g_change, record, weights, grads, "batched" if per_image else None)
    geometry.perceive_adjoint(g_perceived, record["read"], g_rows)
    for border in (g[:, 0], g[:, -1], g[:, :, 0], g[:, :, -1]):
        border.zero_()                    # the zero padding's adjoint: what reaches the border is dropped
    return g


class GrowingRollout(torch.autograd.Function):
    """``steps`` growing steps as one autograd node; inputs: the state and the rule's four tensors
    (shared ``[out, in]`` / ``[out]``, or per image ``[B, out, in]`` / ``[B, out]``)."""

    @staticmethod
    def forward(ctx, state, w1, b1, w2, b2, plan: GrowingPlan, steps: int, need_grad: bool):
        weights = tuple(t.detach() for t in (w1, b1, w2, b2))
        plan.gains = weight_gains(weights)
        arena = arena_for(state.device) if need_grad else Arena()     # inference: per-step temporaries
        arena.reset(plan, state.dtype, state.device)
        current = state.detach().contiguous(memory_format=torch.channels_last)
        plan.start = current
        if plan.mode == "sparse":
            geometry = PaddedGrid(state.shape, plan.filters, state.dtype, state.device)
            grid = geometry.load(geometry.new(current), current)
            reordered = (to_kernel_major(weights[0]), *weights[1:])
            for step in range(steps):
                grid = sparse_step(grid, reordered, plan, step, arena, need_grad, geometry)
            current = geometry.interior(grid).contiguous(memory_format=torch.channels_last)
            plan.geometry = geometry
        else:
            for step in range(steps):
                current = dense_step(current, weights, plan, step, arena, need_grad)
        if need_grad:
            ctx.plan, ctx.weights = plan, weights
        return current

    @staticmethod
    def backward(ctx, grad_output):
        plan, weights = ctx.plan, ctx.weights
        if plan.records is None:
            raise RuntimeError("this fast rollout was already backpropagated once (its saved tensors are freed)")
        grads = [torch.zeros_like(w) for w in weights]
        if plan.mode == "sparse":
            geometry = plan.geometry
            grad = geometry.load(geometry.new(grad_output), grad_output)
            reordered = (to_kernel_major(weights[0]), *weights[1:])
            for record in reversed(plan.records):
                grad = sparse_step_backward(grad, reordered, grads, plan, record, geometry)
            grad = geometry.interior(grad).contiguous(memory_format=torch.channels_last)
            grads[0] = to_channel_major(grads[0]).contiguous()
        else:
            grad = grad_output.contiguous(memory_format=torch.channels_last)
            for record in reversed(plan.records):
                grad = dense_step_backward(grad, weights, grads, plan, record)
        plan.records = None
        if not all(bool(torch.isfinite(t).all()) for t in (grad, *grads)):
            # a NaN or inf somewhere: the plain model's own operations decide where (see the module doc)
            grad, *grads = replay_growing(plan, weights, grad_output)
        return (grad if ctx.needs_input_grad[0] else None, *grads, None, None, None)


def reference_step(state: torch.Tensor, weights: tuple, filters: torch.Tensor, fire: torch.Tensor,
                   threshold: float) -> torch.Tensor:
    """The plain model's step (``GrowingNCA.step``, ``ConditionedRule.step``) for given weights and
    mask, in its own operations: what a non-finite gradient is recomputed with."""
    w1, b1, w2, b2 = weights
    before = alive_mask(state, threshold)
    cells = rearrange(perceive(state, filters), "b c h w -> b (h w) c")
    if w1.dim() == 2:
        change = F.linear(F.relu(F.linear(cells, w1, b1)), w2, b2)
    else:
        hidden = F.relu(torch.baddbmm(b1[:, None, :], cells, w1.transpose(1, 2)))
        change = torch.baddbmm(b2[:, None, :], hidden, w2.transpose(1, 2))
    change = rearrange(change, "b (h w) c -> b c h w", h=state.shape[2])
    state = state + change * fire.to(state.dtype)
    return state * (before & alive_mask(state, threshold)).to(state.dtype)


def replay_growing(plan: GrowingPlan, weights: tuple, grad_output: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of the rollout by autograd through ``reference_step`` with the recorded masks."""
    with torch.enable_grad():
        start = plan.start.detach().requires_grad_(True)
        params = [w.detach().requires_grad_(True) for w in weights]
        state = start
        for fire in plan.fires:
            state = reference_step(state, params, plan.filters, fire, plan.threshold)
        return list(torch.autograd.grad(state, [start, *params], grad_output, allow_unused=True))


# ------------------------------------------------------------------------------ choosing a plan

_checked: dict[tuple, str | None] = {}


def self_check(device, plan: str) -> str | None:
    """Compare one small growing rollout and its gradients with the plain model on ``device`` (once
    per process and plan). None when they agree; otherwise why not, and ``auto`` then runs plain."""
    device = torch.device(device)
    key = (device.type, device.index, plan)
    if key not in _checked:
        with checking_conditions():
            _checked[key] = run_self_check(device, plan)
    return _checked[key]


@contextlib.contextmanager
def checking_conditions():
    """What a self-check runs under: gradients on (it compares them), torch's global generator left
    where it was (making the check's small models draws from it), and true float32 on a GPU
    (PyTorch lets cuDNN's convolutions use TF32 by default, 1e-3 relative, in the plain model as in
    this one: the check compares the arithmetic, not two TF32 roundings)."""
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with torch.random.fork_rng(devices=[]), torch.enable_grad():     # (a first call may come under no_grad)
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32


def run_self_check(device: torch.device, plan: str) -> str | None:
    generator = torch.Generator().manual_seed(0)
    model = GrowingNCA(hidden=16)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model = model.to(device)
    state = torch.zeros(2, 16, 12, 12)
    state[:, :, 3:9, 3:9] = torch.rand(2, 16, 6, 6, generator=generator)
    state = state.to(device).requires_grad_(True)
    results = []
    for run in ("plain", plan):
        rng = torch.Generator(device).manual_seed(1)
        final = model.rollout(state, 6, rng) if run == "plain" else growing_rollout(model, state, 6, rng, plan)
        loss = (final * torch.linspace(-1, 1, final.numel(), device=device).view_as(final)).sum()
        results.append([final.detach(), *torch.autograd.grad(loss, [state, *model.parameters()])])
    for name, reference, fast in zip(("state", "state gradient", "sense weight", "sense bias", "act weight",
                                      "act bias"), *results):
        error = (fast - reference).abs().max().item() / max(reference.abs().max().item(), 1e-6)
        if not error < 1e-4:
            return f"the {plan} plan's {name} differs from the plain model's by {error:.2e} (relative) on {device}"
    return None


def choose(plan: str, device: torch.device) -> str:
    """``auto``: ``sparse`` on a CPU, ``dense`` on other devices, each after its self-check passed on
    that device (else ``plain``)."""
    check_plan(plan)
    if plan != "auto":
        return plan
    wanted = "sparse" if device.type == "cpu" else "dense"
    return wanted if self_check(device, wanted) is None else "plain"


# ------------------------------------------------------------------------------ public API: growing

def growing_weights(model: GrowingNCA) -> tuple[torch.Tensor, ...]:
    return (model.sense.weight.flatten(1), model.sense.bias, model.act.weight.flatten(1), model.act.bias)


def run_growing(weights: tuple, filters: torch.Tensor, fire_rate: float, threshold: float,
                state: torch.Tensor, steps: int, generator=None, plan: str = "sparse",
                fires: list | None = None) -> torch.Tensor:
    """A growing rollout from the rule's tensors: shared ``(W1 [hidden, 3C], b1, W2 [C, hidden], b2)``
    or per image (``[B, ...]`` each). ``fires``: the masks to use instead of drawing them."""
    steps = check_steps(steps)
    check_dtypes(state, *weights)
    if steps == 0:
        return state
    if plan == "sparse" and threshold < 0:
        plan = "dense"            # the zero border of the sparse plan's grid stands for max_pool2d's -inf only above 0
    need_grad = torch.is_grad_enabled() and (state.requires_grad or any(w.requires_grad for w in weights))
    work = GrowingPlan(filters.detach().to(state.dtype), fire_rate, threshold, generator, plan, fires)
    return GrowingRollout.apply(state, *weights, work, steps, need_grad)


def growing_rollout(model: GrowingNCA, state: torch.Tensor, steps: int, generator=None,
                    plan: str = "auto", filters: torch.Tensor | None = None) -> torch.Tensor:
    """The same as ``model.rollout(state, steps, generator, filters)``, faster; differentiable."""
    if not isinstance(model, GrowingNCA):
        raise TypeError(f"growing_rollout runs a helpers.growing_nca.GrowingNCA, got {type(model).__name__}")
    from ..growing_nca import check_state
    check_state(state, model.channels)
    chosen = choose(plan, state.device)
    if chosen == "plain":
        return model.rollout(state, steps, generator, filters=filters)
    return run_growing(growing_weights(model), model.filters if filters is None else filters, model.fire_rate,
                       model.alive_threshold, state, steps, generator, chosen)


# ------------------------------------------------------------------------------ public API: manifold

def conditioned_weights(rule: ConditionedRule, codes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rule's tensors for these codes (differentiable): shared for ``stamp``, per image for
    ``hyper`` (each image's rule) and ``broadcast`` (the code enters the first layer's bias)."""
    if rule.method == "stamp":
        return (rule.sense.weight.flatten(1), rule.sense.bias, rule.act.weight.flatten(1), rule.act.bias)
    sense_w, sense_b, act_w, act_b = rule.rule_weights(codes)
    if rule.method == "broadcast":
        code_w = rule.sense.weight.flatten(1)[:, 3 * rule.channels:]
        sense_b = sense_b + codes @ code_w.T
    return sense_w, sense_b, act_w, act_b


def conditioned_rollout(rule: ConditionedRule, state: torch.Tensor, steps: int, codes: torch.Tensor,
                        generator=None, plan: str = "auto") -> torch.Tensor:
    """The same as ``rule.rollout(state, steps, codes, generator)``, faster; differentiable."""
    if isinstance(rule, ManifoldNCA):
        rule = rule.rule
    if not isinstance(rule, ConditionedRule):
        raise TypeError(f"conditioned_rollout runs a helpers.manifold_nca.ConditionedRule, got {type(rule).__name__}")
    from ..growing_nca import check_state
    check_state(state, rule.channels)
    check_codes(codes, state.shape[0], rule.code_size)
    chosen = choose(plan, state.device)
    if chosen == "plain":
        return rule.rollout(state, steps, codes, generator)
    return run_growing(conditioned_weights(rule, codes), rule.filters, rule.fire_rate, rule.alive_threshold,
                       state, steps, generator, chosen)


# ------------------------------------------------------------------------------ reaction-diffusion

class SavedSteps:
    """A reaction-diffusion rollout's saved (cells, hidden) per step; ``records`` is None once used."""

    def __init__(self):
        self.records: list = []


class TorusLaplacian:
    """``reaction_diffusion.laplacian`` (the isotropic 9-point stencil on a grid that wraps around) for
    channels-last ``[B, H, W, C]`` grids, into buffers made once per rollout. The stencil separates:
    ``[[1, 4, 1], [4, -20, 4], [1, 4, 1]] / 6 = ([1, 4, 1] x [1, 4, 1] - 36 * centre) / 6``, so it is
    two 1D passes over one padded buffer: about three times faster on a CPU than the circular pad and
    the depthwise convolution, which make fresh tensors every step (fresh memory costs page faults).
    The stencil is symmetric and the grid a torus, so the same operator is its own adjoint."""

    def __init__(self, shape, dtype, device):
        batch, height, width, channels = shape
        self.padded = torch.empty(batch, height + 2, width + 2, channels, dtype=dtype, device=device)
        self.rows = torch.empty(batch, height + 2, width, channels, dtype=dtype, device=device)

    def __call__(self, grid: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        p, rows = self.padded, self.rows
        p[:, 1:-1, 1:-1] = grid
        p[:, 0, 1:-1], p[:, -1, 1:-1] = grid[:, -1], grid[:, 0]          # rows wrap around
        p[:, :, 0], p[:, :, -1] = p[:, :, -2], p[:, :, 1]                 # then columns, corners included
        torch.add(p[:, :, :-2], p[:, :, 2:], out=rows).add_(p[:, :, 1:-1], alpha=4)     # [1, 4, 1] along x
        torch.add(rows[:, :-2], rows[:, 2:], out=out).add_(rows[:, 1:-1], alpha=4)      # then along y
        return out.add_(grid, alpha=-36).div_(6)


class DiffusionRollout(torch.autograd.Function):
    """``steps`` reaction-diffusion steps as one autograd node; inputs: the state and W1, b1, W2.

    One step: ``y = x + a * rates * L x + r * W2 relu(W1 x + b1)``. Its backward, given ``gy``:
    ``gd = r gy``; ``dW2 += gd^T h``; ``gh = (gd W2) [h > 0]``; ``dW1 += gh^T x``, ``db1 += sum gh``;
    ``gx = gy + L (a * rates * gy) + gh W1`` (the isotropic stencil on a torus is its own adjoint).
    Every state and hidden layer lives in the arena; the temporaries in buffers made once."""

    @staticmethod
    def forward(ctx, state, w1, b1, w2, speeds: tuple, steps: int, need_grad: bool):
        diffusion, diffusion_speed, reaction_speed = speeds
        batch, channels, height, width = state.shape
        w1, b1, w2 = w1.detach(), b1.detach(), w2.detach()
        rates = diffusion_speed * diffusion.to(state)                    # [C], broadcast over the rows
        holder = SavedSteps()
        arena = arena_for(state.device) if need_grad else Arena()
        arena.reset(holder, state.dtype, state.device)
        shape = (batch, height, width, channels)
        laplacian_of = TorusLaplacian(shape, state.dtype, state.device)
        diffused, reaction = state.new_empty(shape), state.new_empty(batch * height * width, channels)
        current = state.new_empty(shape)
        current.copy_(rearrange(state.detach(), "b c h w -> b h w c"))
        for _ in range(steps):
            cells = current.view(-1, channels)
            hidden = arena.take(cells.shape[0], w1.shape[0], dtype=state.dtype, device=state.device)
            torch.addmm(b1, cells, w1.T, out=hidden)
            hidden.relu_()
            torch.mm(hidden, w2.T, out=reaction)
            if need_grad:
                holder.records.append((cells, hidden))
            laplacian_of(current, diffused).mul_(rates)
            following = (arena.take(*shape, dtype=state.dtype, device=state.device) if need_grad
                         else state.new_empty(shape))
            torch.add(current, diffused, out=following).add_(reaction.view(shape), alpha=reaction_speed)
            current = following
        if need_grad:
            ctx.saved, ctx.weights, ctx.rates, ctx.reaction_speed = holder, (w1, b1, w2), rates, reaction_speed
        return rearrange(current, "b h w c -> b c h w")

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.saved.records is None:
            raise RuntimeError("this fast rollout was already backpropagated once (its saved tensors are freed)")
        w1, b1, w2 = ctx.weights
        grads = [torch.zeros_like(w) for w in (w1, b1, w2)]
        batch, channels, height, width = grad_output.shape
        shape = (batch, height, width, channels)
        laplacian_of = TorusLaplacian(shape, grad_output.dtype, grad_output.device)
        grad, spare = grad_output.new_empty(shape), grad_output.new_empty(shape)
        grad.copy_(rearrange(grad_output, "b c h w -> b h w c"))
        scaled, diffused = grad_output.new_empty(shape), grad_output.new_empty(shape)
        g_hidden = grad_output.new_empty(batch * height * width, w1.shape[0])
        through = grad_output.new_empty(batch * height * width, channels)
        for cells, hidden in reversed(ctx.saved.records):
            g_rows = grad.view(-1, channels)
            gd = g_rows if ctx.reaction_speed == 1 else torch.mul(g_rows, ctx.reaction_speed)
            grads[2].addmm_(gd.T, hidden)
            torch.mm(gd, w2, out=g_hidden)
            torch.ops.aten.threshold_backward.grad_input(g_hidden, hidden, 0, grad_input=g_hidden)
            grads[0].addmm_(g_hidden.T, cells)
            grads[1].add_(g_hidden.sum(0))
            torch.mm(g_hidden, w1, out=through)
            laplacian_of(torch.mul(grad, ctx.rates, out=scaled), diffused)
            torch.add(grad, diffused, out=spare).add_(through.view(shape))
            grad, spare = spare, grad
        ctx.saved.records = None
        grad = rearrange(grad, "b h w c -> b c h w") if ctx.needs_input_grad[0] else None
        return (grad, *grads, None, None, None)


def diffusion_rollout(model: ReactionDiffusionNCA, state: torch.Tensor, steps: int, laplacian_of=laplacian,
                      diffusion_speed: float = 1.0, reaction_speed: float = 1.0, generator=None,
                      plan: str = "auto") -> torch.Tensor:
    """The same as ``model.rollout(state, steps, laplacian_of, ...)``, faster on a 2D grid that wraps
    around; other spaces (a volume, a mesh) and a rule that clamps its state run ``model.rollout`` itself."""
    if not isinstance(model, ReactionDiffusionNCA):
        raise TypeError(f"diffusion_rollout runs a ReactionDiffusionNCA, got {type(model).__name__}")
    check_plan(plan)
    steps = check_steps(steps)
    check_speeds(diffusion_speed, reaction_speed, float(model.diffusion.max()), laplacian_of, state)
    plain = (plan == "plain" or laplacian_of is not laplacian or state.dim() != 4 or model.clamp_state
             or (plan == "auto" and diffusion_self_check(state.device) is not None))
    if plain:
        return model.rollout(state, steps, laplacian_of, diffusion_speed, reaction_speed)
    if state.shape[1] != model.channels:
        raise ValueError(f"the state must be [batch, {model.channels}, *space], got {tuple(state.shape)}")
    weights = (model.reaction_in.weight, model.reaction_in.bias, model.reaction_out.weight)
    check_dtypes(state, *weights)
    if steps == 0:
        return state
    need_grad = torch.is_grad_enabled() and (state.requires_grad or any(w.requires_grad for w in weights))
    speeds = (model.diffusion, diffusion_speed, reaction_speed)
    return DiffusionRollout.apply(state, *weights, speeds, steps, need_grad)


def diffusion_self_check(device) -> str | None:
    """As ``self_check``, for the reaction-diffusion rollout."""
    device = torch.device(device)
    key = (device.type, device.index, "diffusion")
    if key not in _checked:
        with checking_conditions():
            _checked[key] = run_diffusion_self_check(device)
    return _checked[key]


def run_diffusion_self_check(device: torch.device) -> str | None:
    generator = torch.Generator().manual_seed(0)
    model = ReactionDiffusionNCA(8, 16)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model = model.to(device)
    state = (torch.rand(2, 8, 10, 10, generator=generator) - 0.5).to(device).requires_grad_(True)
    results = []
    for run in ("plain", "dense"):
        final = model.rollout(state, 5) if run == "plain" else diffusion_rollout(model, state, 5, plan="dense")
        loss = (final * torch.linspace(-1, 1, final.numel(), device=device).view_as(final)).sum()
        results.append([final.detach(), *torch.autograd.grad(loss, [state, *model.parameters()])])
    for reference, fast in zip(*results):
        error = (fast - reference).abs().max().item() / max(reference.abs().max().item(), 1e-6)
        if not error < 1e-4:
            return f"the fast reaction-diffusion rollout differs by {error:.2e} (relative) on {device}"
    return None


# ------------------------------------------------------------------------------ for the pool loop

def fast_rollout(model, states: torch.Tensor, steps: int, *condition) -> torch.Tensor:
    """``train.plain_rollout``'s call, ``rollout(model, states, steps[, codes])``, through the fast path
    of the model's rule (``plan="auto"``: the plain model where the check on this device failed)."""
    if isinstance(model, GrowingNCA) and not condition:
        return growing_rollout(model, states, steps)
    if isinstance(model, (ManifoldNCA, ConditionedRule)) and len(condition) == 1:
        return conditioned_rollout(model, states, steps, condition[0])
    if isinstance(model, ReactionDiffusionNCA) and not condition:
        return diffusion_rollout(model, states, steps)
    return model.rollout(states, steps, *condition)       # a rule this module does not know
