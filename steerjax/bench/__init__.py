"""Benchmarks, one module each; run with `python -m steerjax.bench NAME`."""
