"""Benchmarks: printed figures (tables), never asserted in the test suite. `python -m benchmarks [name ...]`."""
