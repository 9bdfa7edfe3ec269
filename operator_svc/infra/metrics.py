"""The operator's metrics: jobs by status (the queue length is the QUEUED count), read from the
database at scrape time so that they are right whoever changed the jobs, and status changes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from c2d_common.status import JobStatus
from operator_svc.infra.job_store import JobStore

STATUS_CHANGES = Counter("c2d_job_status_changes_total", "Status changes recorded, by new status", ["status"])


class JobCountCollector(Collector):
    def __init__(self) -> None:
        self.stores: list[JobStore] = []

    def attach(self, store: JobStore) -> None:
        self.stores.append(store)

    def detach(self, store: JobStore) -> None:
        if store in self.stores:
            self.stores.remove(store)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("c2d_jobs", "Jobs by status", labels=["status"])
        totals = {status: 0 for status in JobStatus}
        for store in list(self.stores):
            for status, count in store.count_by_status().items():
                totals[JobStatus(status)] += count
        for status, count in totals.items():
            gauge.add_metric([status.name], count)
        yield gauge


JOB_COUNTS = JobCountCollector()
REGISTRY.register(JOB_COUNTS)
