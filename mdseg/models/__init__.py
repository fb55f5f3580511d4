"""The Mamba-diffusion segmentation network: fused encoders, neck, diffusion head, full model."""
