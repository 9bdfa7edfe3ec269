"""In-process fan-out of job events and log pieces to the streams that watch them.

Push all the way: a subscriber's queue gets each item as it is recorded. A subscriber that falls
more than `capacity` items behind is marked lagged and catches up from the database instead of
holding unbounded memory.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any


class Subscription:
    def __init__(self, hub: EventHub, topic: tuple[str, str], capacity: int):
        self.hub = hub
        self.topic = topic
        self.queue: asyncio.Queue[Any] = asyncio.Queue(capacity)
        self.lagged = False

    def offer(self, item: Any) -> None:
        if self.lagged:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.lagged = True
            # Wake the reader so it notices and reloads from the database.
            self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def get(self) -> Any:
        return await self.queue.get()

    def reset_after_lag(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.lagged = False

    def close(self) -> None:
        self.hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class EventHub:
    def __init__(self, capacity: int = 1024):
        self.capacity = capacity
        self._subscribers: defaultdict[tuple[str, str], set[Subscription]] = defaultdict(set)

    def subscribe(self, topic: tuple[str, str]) -> Subscription:
        subscription = Subscription(self, topic, self.capacity)
        self._subscribers[topic].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.topic)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.topic]

    def publish(self, topic: tuple[str, str], item: Any) -> None:
        for subscription in list(self._subscribers.get(topic, ())):
            subscription.offer(item)

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
