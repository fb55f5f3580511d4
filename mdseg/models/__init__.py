"""The Mamba-diffusion segmentation network: fused encoders, neck, diffusion head, full model."""

from mdseg.models.segmentor import MambaDiffusionSeg, build_model

__all__ = ["MambaDiffusionSeg", "build_model"]
