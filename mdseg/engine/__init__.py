"""Engines that drive the model over data: scene prediction (and later training and evaluation)."""
