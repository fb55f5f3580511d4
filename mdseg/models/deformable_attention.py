"""Deformable attention over one feature map (the release's multi-scale deformable attention, one level).

Each query predicts, per head, `points` sampling offsets around its reference point and a softmax weight per
point; the head's value map is sampled bilinearly there (zero outside the map) and the weighted samples summed.
Same parameter layout and arithmetic as mmcv 1.7.2's `MultiScaleDeformableAttention` with `num_levels=1`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def reference_points(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """Pixel centres of an (height, width) map, normalised to [0, 1]: (height·width, 2) in (x, y), row-major."""
    ys = torch.linspace(0.5, height - 0.5, height, device=device) / height
    xs = torch.linspace(0.5, width - 0.5, width, device=device) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1)


class DeformableAttention(nn.Module):
    """Single-level deformable attention with `heads` heads of `points` sampling points each."""

    def __init__(self, channels: int, heads: int, points: int) -> None:
        super().__init__()
        self.heads, self.points = heads, points
        self.sampling_offsets = nn.Linear(channels, heads * points * 2)
        self.attention_weights = nn.Linear(channels, heads * points)
        self.value_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmcv's init: head h's point k starts k + 1 pixels out along direction 2πh/heads, uniform weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        direction = torch.stack([theta.cos(), theta.sin()], dim=-1)
        direction = direction / direction.abs().max(dim=-1, keepdim=True).values  # onto the unit square
        distance = torch.arange(1, self.points + 1, dtype=torch.float32)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_((direction[:, None, :] * distance[None, :, None]).flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: Tensor, value: Tensor, reference: Tensor, size: tuple[int, int]) -> Tensor:
        """Attend from each query to its map.

        query: (B, N, C) with positional encoding added; value: (B, N, C), the map flattened row-major with
        N = height·width; reference: (N, 2) normalised (x, y); size: (height, width). Returns (B, N, C),
        without residual.
        """
        batch, num, channels = value.shape
        height, width = size
        heads, points = self.heads, self.points
        head_dim = channels // heads

        values = self.value_proj(value).view(batch, num, heads, head_dim)
        # (B·heads, head_dim, H, W): each head samples its own slice of the channels
        values = values.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, height, width)

        offsets = self.sampling_offsets(query).view(batch, -1, heads, points, 2)
        weights = self.attention_weights(query).view(batch, -1, heads, points).softmax(-1)
        # offsets are in pixels of the map: (x, y) divided by (width, height)
        normaliser = torch.tensor([width, height], device=query.device)
        locations = reference[None, :, None, None, :] + offsets / normaliser

        # grid_sample's [-1, 1] grid with align_corners False puts pixel centres at (i + 0.5)/size
        grid = (2 * locations - 1).transpose(1, 2).flatten(0, 1)  # (B·heads, Nq, points, 2)
        sampled = F.grid_sample(values, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        weights = weights.transpose(1, 2).reshape(batch * heads, 1, -1, points)
        out = (sampled * weights).sum(-1)  # (B·heads, head_dim, Nq)
        out = out.view(batch, heads * head_dim, -1).transpose(1, 2)
        return self.output_proj(out)
