"""Benchmarks: scripts run by `make bench` that print their figures and record them in BENCHMARKS.md."""
