"""Benchmarks of the deepfake-detection framework: `python -m benchmarks.run [--quick]` (see README.md)."""
