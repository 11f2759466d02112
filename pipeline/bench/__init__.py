"""Benchmarks (`foldwise bench ...`): ratios measured side by side in one run; never imported by stages."""
