"""Benchmark scripts: each prints a markdown table and writes JSON under benchmarks/results."""
