"""Activation checkpointing: run a block without keeping its activations; backward runs it again.

Training memory is dominated by what autograd keeps for backward inside the VSS / fusion blocks, the neck and
the denoiser layers (in `tiny` at batch 4, 256² crops: ≈ 1 GiB, of which their inputs are a few %). A
checkpointed block keeps only its inputs and recomputes the rest when its gradient is needed: one more
forward of the block per step, in exchange for holding one block's activations at a time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_block(block: nn.Module, checkpointed: bool, *inputs: Any) -> Any:
    """`block(*inputs)`; when `checkpointed` and autograd is recording in training, without keeping its activations.

    Non-reentrant `torch.utils.checkpoint` with the RNG state restored for the recomputation, so DropPath draws
    the same mask twice: gradients and outputs equal those of the plain call. In eval mode or under no_grad
    (validation, predict) the block is simply called.
    """
    if checkpointed and block.training and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)


__all__ = ["run_block"]
