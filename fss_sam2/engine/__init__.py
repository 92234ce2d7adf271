"""Evaluation (and later training) loops of the official protocol."""
