"""Benchmarks (`make bench`): each prints JSON and compares against a baseline from the same run."""
