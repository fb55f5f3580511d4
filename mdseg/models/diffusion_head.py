"""DDP-style diffusion head: class-map embedding, noise schedule, time-conditioned denoiser, DDIM sampler.

The head denoises an embedding of the class map at stride 4, conditioned on the neck feature. Training noises
the embedded ground truth at a random time; inference starts from Gaussian noise and runs a few DDIM steps,
each predicting class logits, re-embedding their argmax and stepping the latent towards it. Every formula
here follows the release (`ddp.py`, `deformable_head_with_time.py`) in its float32 operation order; the
auxiliary FCN head that regularises the neck in training lives here too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdseg.config import ModelConfig
from mdseg.errors import MdsegError
from mdseg.models.checkpointing import run_block
from mdseg.models.deformable_attention import DeformableAttention, reference_points

IGNORE_INDEX = 255
# training draws t ~ U(0, T_MAX), as the release's sample_range
T_MAX = 0.999


def log_snr(t: Tensor) -> Tensor:
    """Continuous cosine log-SNR λ(t), float32, in the release's operation order.

    t: (B,) in [0, 1]. λ(1) is ill-conditioned in float32 (the cosine's argument sits next to π/2), so the
    order of operations decides its value (−18.907475); keep it as is to match the trained weights.
    """
    t = t.float()
    return -torch.log(torch.clamp(torch.cos((t + 0.0002) / (1 + 0.00025) * math.pi * 0.5) ** -2 - 1, min=1e-5))


def alpha_sigma(snr: Tensor) -> tuple[Tensor, Tensor]:
    """Signal and noise scales for a log-SNR: α = √sigmoid(λ), σ = √sigmoid(−λ)."""
    return torch.sqrt(torch.sigmoid(snr)), torch.sqrt(torch.sigmoid(-snr))


def ddim_times(steps: int) -> list[tuple[float, float]]:
    """(t_now, t_next) per DDIM step, as the release: t_now = 1 − i/S, t_next = max(1 − (i + 2)/S, 0).

    The release's time difference of 1 makes each step aim one step further than the next one starts,
    e.g. S = 3 gives (1, 1/3), (2/3, 0), (1/3, 0).
    """
    if steps < 1:
        raise MdsegError(f"the number of sampling steps must be at least 1, got {steps}")
    return [(1 - i / steps, max(1 - (i + 2) / steps, 0.0)) for i in range(steps)]


def _per_sample(scale: Tensor) -> Tensor:
    """(B,) → (B, 1, 1, 1), to scale NCHW maps per sample."""
    return scale.view(-1, 1, 1, 1)


class TimeEmbedding(nn.Module):
    """Learned sinusoidal features of the log-SNR, then an MLP: (B,) → (B, 4C)."""

    def __init__(self, sinusoidal_dim: int, out_dim: int) -> None:
        super().__init__()
        self.freqs = nn.Parameter(torch.randn(sinusoidal_dim // 2))
        self.fc1 = nn.Linear(sinusoidal_dim + 1, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, snr: Tensor) -> Tensor:
        snr = snr[:, None]
        phase = snr * self.freqs[None] * 2 * math.pi
        features = torch.cat([snr, phase.sin(), phase.cos()], dim=-1)  # raw λ first, as the release
        return self.fc2(F.gelu(self.fc1(features)))


def sine_position_encoding(height: int, width: int, channels: int, device: torch.device | None = None) -> Tensor:
    """Normalised sine encoding of pixel positions: (height·width, channels), y features first, then x.

    Positions (i + 0.5)/size·2π per axis; per axis channels alternate sin/cos over frequencies
    10000^(2⌊k/2⌋/(channels/2)) (the release's SinePositionalEncoding, offset −0.5).
    """
    feats = channels // 2
    eps, scale = 1e-6, 2 * math.pi
    y = (torch.arange(1, height + 1, dtype=torch.float32, device=device) - 0.5) / (height + eps) * scale
    x = (torch.arange(1, width + 1, dtype=torch.float32, device=device) - 0.5) / (width + eps) * scale
    dim_t = torch.arange(feats, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * (dim_t // 2) / feats)

    def encode(p: Tensor) -> Tensor:  # (n,) → (n, feats), interleaved sin/cos
        p = p[:, None] / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, feats)
    pos_x = encode(x)[None, :, :].expand(height, width, feats)
    return torch.cat((pos_y, pos_x), dim=-1).reshape(height * width, channels)


class DenoiserLayer(nn.Module):
    """Post-norm deformable-attention encoder layer with time modulation x·(1 + scale) + shift."""

    def __init__(self, channels: int, heads: int, points: int, ffn: int, time_dim: int) -> None:
        super().__init__()
        self.attn = DeformableAttention(channels, heads, points)
        self.norm1 = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, ffn), nn.GELU(), nn.Linear(ffn, channels))
        self.norm2 = nn.LayerNorm(channels)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * channels))

    def forward(self, x: Tensor, pos: Tensor, reference: Tensor, size: tuple[int, int], time: Tensor) -> Tensor:
        """x: (B, N, C) tokens; pos: (N, C); reference: (N, 2); time: (B, time_dim) → (B, N, C)."""
        x = self.norm1(x + self.attn(x + pos, x, reference, size))
        x = self.norm2(x + self.ffn(x))
        scale, shift = self.modulation(time)[:, None].chunk(2, dim=-1)
        return x * (scale + 1) + shift


class Denoiser(nn.Module):
    """Time-conditioned deformable-attention encoder on the stride-4 map, then a 1×1 classifier.

    With `checkpoint_activations` set, training recomputes each layer's activations in backward instead of
    keeping them (see `mdseg.models.checkpointing`).
    """

    checkpoint_activations = False

    def __init__(self, config: ModelConfig, time_dim: int) -> None:
        super().__init__()
        channels = config.neck_channels
        self.layers = nn.ModuleList(
            DenoiserLayer(channels, config.head_heads, config.head_points, config.head_ffn, time_dim)
            for _ in range(config.head_layers)
        )
        self.classifier = nn.Conv2d(channels, config.num_classes, 1)
        # the release's head init: Xavier for every matrix, then each attention's own init
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for layer in self.layers:
            layer.attn.reset_parameters()

    @staticmethod
    def positions(x: Tensor) -> tuple[Tensor, Tensor]:
        """Sine position encoding (h·w, C) and reference points (h·w, 2) for maps shaped like x (B, C, h, w)."""
        _, channels, height, width = x.shape
        pos = sine_position_encoding(height, width, channels, x.device).to(x.dtype)
        return pos, reference_points(height, width, x.device).to(x.dtype)

    def forward(self, x: Tensor, time: Tensor, positions: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x: (B, C, h, w) input map; time: (B, 4C); `positions` from `positions(x)`, computed here when not
        given (the sampler passes them so its steps share one) → logits (B, num_classes, h, w)."""
        batch, _, height, width = x.shape
        pos, reference = self.positions(x) if positions is None else positions
        tokens = x.flatten(2).transpose(1, 2)  # (B, h·w, C), row-major
        for layer in self.layers:
            tokens = run_block(layer, self.checkpoint_activations, tokens, pos, reference, (height, width), time)
        # the 1×1 classifier as a product on the tokens: the small (B, h·w, K) result is what gets transposed
        logits = F.linear(tokens, self.classifier.weight.flatten(1), self.classifier.bias)
        return logits.transpose(1, 2).reshape(batch, -1, height, width)


class StepOutput(NamedTuple):
    """One DDIM step: logits (B, K, h, w), predicted clean embedding x̂, predicted noise ε, next latent z."""

    logits: Tensor
    mask_pred: Tensor
    pred_noise: Tensor
    latent: Tensor


class DiffusionHead(nn.Module):
    """Denoises the class-map embedding at stride 4, conditioned on the neck feature."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels = config.neck_channels
        time_dim = 4 * channels
        self.num_classes = config.num_classes
        self.bit_scale = config.bit_scale
        # one extra row for ignored pixels (label 255), reachable only in training
        self.class_embedding = nn.Embedding(config.num_classes + 1, channels)
        self.time_embed = TimeEmbedding(config.learned_sinusoidal_dim, time_dim)
        self.input_proj = nn.Conv2d(2 * channels, channels, 1)
        nn.init.kaiming_normal_(self.input_proj.weight, mode="fan_out", nonlinearity="relu")  # mmcv ConvModule
        nn.init.zeros_(self.input_proj.bias)
        self.denoiser = Denoiser(config, time_dim)

    def embed(self, classes: Tensor) -> Tensor:
        """Class map (B, h, w) int64 in 0..K (K = ignored) → embedding (B, C, h, w) in ±bit_scale."""
        e = self.class_embedding(classes).permute(0, 3, 1, 2)
        return (torch.sigmoid(e) * 2 - 1) * self.bit_scale

    def denoise(
        self, feature: Tensor, latent: Tensor, snr: Tensor, positions: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """Logits (B, K, h, w) for neck feature (B, C, h, w), noisy latent (B, C, h, w), log-SNR (B,)."""
        x = self.input_proj(torch.cat([feature, latent], dim=1))  # feature first, as the release
        return self.denoiser(x, self.time_embed(snr), positions)

    def ddim_step(
        self,
        feature: Tensor,
        latent: Tensor,
        t_now: float,
        t_next: float,
        positions: tuple[Tensor, Tensor] | None = None,
    ) -> StepOutput:
        """One deterministic DDIM step (η = 0) of latent (B, C, h, w) from time t_now to t_next."""
        batch = feature.shape[0]
        snr = log_snr(torch.full((batch,), t_now, device=feature.device))
        snr_next = log_snr(torch.full((batch,), t_next, device=feature.device))
        alpha, sigma = (_per_sample(s) for s in alpha_sigma(snr))
        alpha_next, sigma_next = (_per_sample(s) for s in alpha_sigma(snr_next))
        logits = self.denoise(feature, latent, snr, positions)
        mask_pred = self.embed(logits.argmax(dim=1))
        pred_noise = (latent - alpha * mask_pred) / sigma.clamp(min=1e-8)
        return StepOutput(logits, mask_pred, pred_noise, mask_pred * alpha_next + pred_noise * sigma_next)

    def sample(self, feature: Tensor, latent: Tensor, steps: int) -> Tensor:
        """DDIM from latent (B, C, h, w) with the given number of steps → the last step's logits (B, K, h, w)."""
        logits = None
        positions = self.denoiser.positions(feature)  # the same for every step
        for t_now, t_next in ddim_times(steps):
            logits, _, _, latent = self.ddim_step(feature, latent, t_now, t_next, positions)
        return logits

    def train_logits(self, feature: Tensor, label: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Denoiser logits (B, K, h, w) for the ground truth noised at times t.

        feature: (B, C, h, w); label: (B, H, W) int64, 255 = ignore, H ≤ 4h and W ≤ 4w (the rest counts as
        ignored); t: (B,); noise: (B, C, h, w).
        """
        height, width = feature.shape[-2:]
        label = F.pad(label, (0, 4 * width - label.shape[-1], 0, 4 * height - label.shape[-2]), value=IGNORE_INDEX)
        classes = label[:, ::4, ::4]  # nearest downsampling to stride 4 picks pixel (4i, 4j)
        classes = torch.where(classes == IGNORE_INDEX, self.num_classes, classes)
        snr = log_snr(t)
        alpha, sigma = (_per_sample(s) for s in alpha_sigma(snr))
        noised = alpha * self.embed(classes) + sigma * noise
        return self.denoise(feature, noised, snr)


class AuxHead(nn.Module):
    """FCN auxiliary head on the clean neck feature (training only): 3×3 conv + BN + ReLU, dropout, 1×1."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels = config.neck_channels
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout2d(config.aux_dropout)
        self.classifier = nn.Conv2d(channels, config.num_classes, 1)
        # the release's init: mmcv ConvModule for the conv, N(0, 0.01²) for the classifier
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, feature: Tensor) -> Tensor:
        """(B, C, h, w) → logits (B, num_classes, h, w)."""
        return self.classifier(self.dropout(F.relu(self.bn(self.conv(feature)))))


def segmentation_loss(logits: Tensor, label: Tensor) -> Tensor:
    """Cross-entropy of logits (B, K, H, W) against label (B, H, W) int64, 255 = ignore.

    Ignored pixels contribute 0 but count in the denominator, as the release's `avg_non_ignore=False`.
    """
    return F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="sum") / label.numel()


def pixel_accuracy(logits: Tensor, label: Tensor) -> Tensor:
    """Percentage of non-ignored pixels whose argmax over logits (B, K, H, W) equals label (B, H, W)."""
    valid = label != IGNORE_INDEX
    return (logits.argmax(dim=1) == label)[valid].float().sum() * 100 / valid.sum().clamp(min=1)


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Stride-4 logits (B, K, h, w) → (B, K, H, W): bilinear to (4h, 4w), then cropped to (H, W)."""
    height, width = logits.shape[-2:]
    full = F.interpolate(logits, size=(4 * height, 4 * width), mode="bilinear", align_corners=False)
    return full[..., : size[0], : size[1]]
