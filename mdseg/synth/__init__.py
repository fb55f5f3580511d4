"""Synthetic WHU-style scenes: optical + SAR + label GeoTIFFs drawn by a seeded generator (see `files`)."""

from mdseg.synth.files import SceneFiles, SyntheticDataset, generate_scene, synthesize_dataset, synthesize_scene

__all__ = ["SceneFiles", "SyntheticDataset", "generate_scene", "synthesize_dataset", "synthesize_scene"]
