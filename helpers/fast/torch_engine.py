"""The PyTorch backend of ``helpers.fast`` (``backend="torch"``): one NCA step as a dozen PyTorch
operations on buffers allocated once per rollout. It runs anywhere PyTorch runs (GPUs, float64).

* **no fresh memory inside the loop** (``out=`` arguments): on a virtual machine every fresh page
  costs a page fault, and the plain version makes about twenty new multi-megabyte tensors per step;
* **padding for free**: each new state is written straight into the middle of a grid one cell
  larger on every side; only the four thin borders are copied to wrap around (or set to 0 for
  ``padding="zeros"``);
* **no concatenations**: ``relu(f)`` and ``min(f, 0)`` (equal to ``-relu(-f)``) are written
  straight into the quarters of one 48-channel buffer, plus a channel of ones, so that one matrix
  product per image, ``[C, 48 + 1] @ [48 + 1, H*W]``, applies weights *and* bias, and its
  transpose gives both gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import nca
from .masks import TorchRandMasks, mask_shape


class TorchWorkspace:
    """One rollout's constants (rule, filters, parameters) and the buffers it reuses.

    A state lives inside a *padded* grid ``[B, C, H + 2, W + 2]``: its interior is the state and
    its one-cell border repeats the opposite edge (circular padding) or holds zeros (zero padding).
    Writing each new state straight into the interior of such a grid means padding costs only the
    four thin borders.
    """

    def __init__(self, rule: nca.Rule, filters: torch.Tensor, shape, dtype, device,
                 generator: torch.Generator | None, masks: str):
        batch, channels, height, width = shape
        self.rule, self.shape, self.generator, self.masks = rule, shape, generator, masks
        self.dtype, self.device = dtype, device
        self.padded_shape = (batch, channels, height + 2, width + 2)

        def new(*size, dtype=dtype):
            return torch.empty(size, dtype=dtype, device=device)

        # The 3x3 filters, and the same filters rotated by 180 degrees for the backward pass.
        self.filters = filters.to(device=device, dtype=dtype)
        self.filters_flipped = torch.flip(self.filters, dims=(2, 3))
        # The inputs of the 1x1 layer plus a row of ones, so that one matrix product
        # [C, 48 + 1] @ [48 + 1, H*W] adds the bias too (and its transpose gives the bias gradient).
        inputs = rule.inputs
        self.features = new(batch, inputs + 1, height, width)
        self.features[:, inputs].fill_(1.0)
        self.delta = new(batch, channels, height, width)       # the proposed change of every value
        # backward-pass buffers
        self.grad_delta = new(batch, channels, height, width)
        self.grad_features = new(batch, inputs, height, width)
        self.grad_padded = new(batch, channels, height + 2, width + 2)
        self.slopes = new(batch, inputs, height, width)
        # The masks, in the plain version's shape so that the same generator gives the same masks.
        self.mask_shape = mask_shape(rule, shape)
        self.mask = new(*self.mask_shape)                       # this step's mask as 0.0 / 1.0
        if masks == "exact":
            self.exact_masks = TorchRandMasks(rule, shape, generator, device)
        else:
            self.random_bytes = new(self.mask.numel() // 8 + 1, dtype=torch.uint8)
            self.bit_shifts = torch.arange(8, dtype=torch.uint8, device=device)
        self.weight_bias = None

    def load_parameters(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """The 1x1 layer for this rollout as ``[C, inputs + 1]``: the weights with the bias as the last column."""
        self.weight_bias = torch.cat([weight.reshape(self.rule.channels, -1), bias[:, None]], dim=1)

    # -- the buffers a rollout keeps its states in (here: padded grids) ----------------

    @property
    def state_shape(self):
        return self.padded_shape

    def new_state(self) -> torch.Tensor:
        return torch.empty(self.padded_shape, dtype=self.dtype, device=self.device)

    def set_state(self, buffer: torch.Tensor, state: torch.Tensor) -> None:
        buffer[..., 1:-1, 1:-1] = state
        self.fill_border(buffer)

    @staticmethod
    def interior(buffer: torch.Tensor) -> torch.Tensor:
        return buffer[..., 1:-1, 1:-1]

    # -- masks ---------------------------------------------------------------------

    def draw_mask(self, keep: torch.Tensor | None) -> torch.Tensor:
        """This step's update mask as 0.0 / 1.0 (``self.mask``); a copy goes into ``keep``
        (bool, 1 byte per value) when the backward pass will need it."""
        if self.masks == "exact":
            self.exact_masks.draw(out=self.mask)          # what helpers.nca.update_mask draws
        else:
            # One random byte gives eight fair bits: (byte >> i) & 1 for i = 0..7.
            self.random_bytes.random_(0, 256, generator=self.generator)
            bits = (self.random_bytes[:, None] >> self.bit_shifts) & 1
            self.mask.copy_(bits.view(-1)[:self.mask.numel()].view(self.mask_shape))
        if keep is not None:
            keep.copy_(self.mask)
        return self.mask

    # -- the forward step ---------------------------------------------------------------

    def fill_border(self, padded: torch.Tensor) -> torch.Tensor:
        """The one-cell border of a padded grid, as the rule's padding says: wrapped or zeros.

        Zero padding's adjoint is zero padding too, so the backward pass (which pads the
        perception's gradient the same way) gets ``P^T`` right for both."""
        if self.rule.padding == "zeros":
            return self.zero_border(padded)
        return self.wrap(padded)

    @staticmethod
    def zero_border(padded: torch.Tensor) -> torch.Tensor:
        """Set the border of a padded grid to 0 (the cells beyond the edge of a flat world)."""
        padded[..., 0, :] = 0.0
        padded[..., -1, :] = 0.0
        padded[..., :, 0] = 0.0
        padded[..., :, -1] = 0.0
        return padded

    @staticmethod
    def wrap(padded: torch.Tensor) -> torch.Tensor:
        """Fill the border of a padded grid from the opposite edges of its interior."""
        padded[..., 0, 1:-1] = padded[..., -2, 1:-1]        # above the top row: the bottom row
        padded[..., -1, 1:-1] = padded[..., 1, 1:-1]        # below the bottom row: the top row
        padded[..., :, 0] = padded[..., :, -2]              # columns last, so the corners wrap too
        padded[..., :, -1] = padded[..., :, 1]
        return padded

    def fill_features(self, padded: torch.Tensor) -> None:
        """The input of the 1x1 layer, written into ``self.features``:
        ``[relu(x), relu(p), min(x, 0), min(p, 0)]`` with ``split_relu``, ``[x, p]`` without."""
        channels = self.rule.channels
        state = padded[..., 1:-1, 1:-1]
        perception = F.conv2d(padded, self.filters, groups=channels)    # p = P x
        features = self.features
        if self.rule.split_relu:
            torch.clamp(state, min=0.0, out=features[:, 0:channels])
            torch.clamp(perception, min=0.0, out=features[:, channels:2 * channels])
            torch.clamp(state, max=0.0, out=features[:, 2 * channels:3 * channels])
            torch.clamp(perception, max=0.0, out=features[:, 3 * channels:4 * channels])
        else:
            features[:, :channels] = state
            features[:, channels:2 * channels] = perception

    def step(self, padded: torch.Tensor, mask: torch.Tensor, out_padded: torch.Tensor) -> torch.Tensor:
        """One CA step: read the padded state, write the next state into ``out_padded``."""
        batch, channels, height, width = self.shape
        self.fill_features(padded)
        # The 1x1 convolution as one matrix product per image: [C, 48 + 1] @ [48 + 1, H*W].
        torch.matmul(self.weight_bias, self.features.view(batch, -1, height * width),
                     out=self.delta.view(batch, channels, height * width))
        # The stochastic update in one pass: next = state + delta * mask.
        torch.addcmul(padded[..., 1:-1, 1:-1], self.delta, mask, out=out_padded[..., 1:-1, 1:-1])
        return self.fill_border(out_padded)

    # -- the backward step --------------------------------------------------------------

    def step_backward(self, padded: torch.Tensor, mask: torch.Tensor, grad_out: torch.Tensor,
                      grad_weight_bias: torch.Tensor, grad_in: torch.Tensor) -> torch.Tensor:
        """Given dL/d(next state) ``grad_out`` [B, C, H, W], add this step's gradient of the
        weights and bias into ``grad_weight_bias`` [C, inputs + 1] and write dL/d(state) into ``grad_in``."""
        batch, channels, height, width = self.shape
        cells, inputs = height * width, self.rule.inputs
        self.fill_features(padded)                                  # recompute s (cheap)
        grad_delta = torch.mul(grad_out, mask, out=self.grad_delta)  # g = m * gy
        g = grad_delta.view(batch, channels, cells)
        s = self.features.view(batch, -1, cells)
        grad_weight_bias.add_(torch.bmm(g, s.transpose(1, 2)).sum(dim=0))   # [dW, db] += g [s, 1]^T
        torch.matmul(self.weight_bias[:, :inputs].t(), g, out=self.grad_features.view(batch, inputs, cells))
        grad_features = self.grad_features                          # gs = W^T g
        if self.rule.split_relu:
            # relu(f) passes gradient where f > 0, min(f, 0) = -relu(-f) where f < 0, neither at
            # f = 0, and both where f is NaN (PyTorch's relu passes it where its result is not
            # <= 0): these slopes are [relu(f) != 0] and [min(f, 0) != 0] (1 or 0; NaN != 0).
            torch.ne(self.features[:, :inputs], 0.0, out=self.slopes)
            grad_features.mul_(self.slopes)
            grad_f = torch.add(grad_features[:, :2 * channels], grad_features[:, 2 * channels:],
                               out=self.slopes[:, :2 * channels])  # [B, 2C, H, W]: state, perception
        else:
            grad_f = grad_features
        # gx = gy + gf_state + P^T gf_perception (P^T: the same convolution, filters rotated)
        grad_padded = self.grad_padded
        grad_padded[..., 1:-1, 1:-1] = grad_f[:, channels:]
        back = F.conv2d(self.fill_border(grad_padded), self.filters_flipped, groups=channels)
        torch.add(grad_out, grad_f[:, :channels], out=grad_in)
        return grad_in.add_(back)
