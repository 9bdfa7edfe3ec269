from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC.
        moment = moment.replace(tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts
