"""A whole fast rollout as ONE autograd node, with the backward walk written by hand.

The forward pass records nothing in autograd's graph. It keeps, for the backward pass, every
step's mask (1 byte per value) and the state at the start of every block of ``checkpoint_every``
steps (every state when it is None). The backward pass walks the blocks from the last to the
first: it recomputes a block's states from its saved first state (with the saved masks), then
steps backwards through them with the workspace's ``step_backward``.

A workspace (``torch_engine.TorchWorkspace`` or ``kernel_engine.KernelWorkspace``) holds one
rollout's rule, filters, parameters and buffers; both offer the same methods.
"""
from __future__ import annotations

import torch


class Rollout(torch.autograd.Function):
    """``steps`` CA steps of the workspace's rule as one autograd node (inputs: state, weight, bias)."""

    @staticmethod
    def forward(ctx, state, weight, bias, work, steps: int, checkpoint_every: int | None, need_grad: bool):
        work.load_parameters(weight.detach(), bias.detach())
        every = checkpoint_every or 1
        blocks = -(-steps // every)                                   # ceil(steps / every)
        # Saved for the backward pass, in two tensors allocated once.
        if need_grad:
            kept_masks = torch.empty(steps, *work.mask_shape, dtype=torch.bool, device=state.device)
            kept_states = torch.empty(blocks, *work.state_shape, dtype=state.dtype, device=state.device)
        current, spare = work.new_state(), work.new_state()
        work.set_state(current, state.detach())
        for step in range(steps):
            if need_grad and step % every == 0:
                kept_states[step // every].copy_(current)
            mask = work.draw_mask(kept_masks[step] if need_grad else None)
            work.step(current, mask, spare)
            current, spare = spare, current                           # ping-pong two buffers
        if need_grad:
            ctx.work, ctx.steps, ctx.every = work, steps, every
            ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
            ctx.kept_states, ctx.masks = kept_states, kept_masks
        return work.interior(current).contiguous()

    @staticmethod
    def backward(ctx, grad_output):
        work, steps, every = ctx.work, ctx.steps, ctx.every
        if ctx.kept_states is None:
            raise RuntimeError("this fast rollout was already backpropagated once (its saved states are freed)")
        # [dW, db] as one [C, inputs + 1] matrix, the bias gradient in the last column.
        grad_weight_bias = torch.zeros(work.rule.channels, work.rule.inputs + 1, dtype=ctx.weight_dtype,
                                       device=grad_output.device)
        grad = grad_output.contiguous().clone()
        spare = torch.empty_like(grad)
        # The states of one block, recomputed from its saved first state (one buffer, reused).
        if every > 1:
            block_states = torch.empty(every, *work.state_shape, dtype=grad.dtype, device=grad.device)
        for block in reversed(range(ctx.kept_states.shape[0])):
            start = block * every
            stop = min(start + every, steps)
            if every == 1:
                block_states = ctx.kept_states[block:block + 1]         # every state was kept
            else:
                block_states[0].copy_(ctx.kept_states[block])
            for step in range(start, stop - 1):
                work.step(block_states[step - start], ctx.masks[step], block_states[step - start + 1])
            for step in reversed(range(start, stop)):
                work.step_backward(block_states[step - start], ctx.masks[step], grad, grad_weight_bias, spare)
                grad, spare = spare, grad
        ctx.kept_states = ctx.masks = None                            # free the memory now
        grad_state = grad if ctx.needs_input_grad[0] else None
        grad_weight = grad_weight_bias[:, :-1].reshape(ctx.weight_shape)
        grad_bias = grad_weight_bias[:, -1].clone()
        return grad_state, grad_weight, grad_bias, None, None, None, None
