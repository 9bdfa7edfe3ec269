"""The engine's metrics: how long each phase takes, and how many jobs run or wait for a slot."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

PHASE_SECONDS = Histogram(
    "c2d_engine_phase_seconds",
    "Duration of a job's phases on this engine",
    ["phase"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
RUNNING_JOBS = Gauge("c2d_engine_running_jobs", "Jobs holding a slot on this engine")
WAITING_JOBS = Gauge("c2d_engine_waiting_jobs", "Jobs waiting for a slot on this engine")
