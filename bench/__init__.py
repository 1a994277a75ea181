"""Benchmarks: not tests. `scripts/bench` runs them and prints ratios measured in the same run."""
