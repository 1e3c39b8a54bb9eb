"""Benchmarks of teaclave-ma: `python -m benchmarks` (see benchmarks/README.md)."""
