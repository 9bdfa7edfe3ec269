"""EventHub: fan-out of job events to Watch and log streams, and what happens to a slow reader."""

from __future__ import annotations

import asyncio

from operator_svc.domain.hub import EventHub, Subscription

JOB = ("job", "a" * 32)
OTHER_JOB = ("job", "b" * 32)
LOG = ("log", "a" * 32)


def drain(subscription: Subscription) -> list[object]:
    items = []
    while not subscription.queue.empty():
        items.append(subscription.queue.get_nowait())
    return items


async def test_every_subscriber_of_a_topic_gets_every_item_in_order() -> None:
    hub = EventHub()
    with hub.subscribe(JOB) as first, hub.subscribe(JOB) as second:
        for item in range(5):
            hub.publish(JOB, item)
        assert [await first.get() for _ in range(5)] == [0, 1, 2, 3, 4]
        assert [await second.get() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_items_go_only_to_their_topic() -> None:
    hub = EventHub()
    with hub.subscribe(JOB) as job, hub.subscribe(OTHER_JOB) as other, hub.subscribe(LOG) as log:
        hub.publish(JOB, "status")
        hub.publish(LOG, "log piece")
        assert drain(job) == ["status"]
        assert drain(other) == []
        assert drain(log) == ["log piece"]


async def test_a_waiting_reader_wakes_on_publish() -> None:
    hub = EventHub()
    with hub.subscribe(JOB) as subscription:
        reader = asyncio.create_task(subscription.get())
        await asyncio.sleep(0)
        assert not reader.done()
        hub.publish(JOB, "event")
        assert await asyncio.wait_for(reader, 5) == "event"


async def test_publishing_without_subscribers_is_harmless() -> None:
    hub = EventHub()
    hub.publish(JOB, "nobody listens")
    assert hub.subscriber_count() == 0


async def test_leaving_the_with_block_unsubscribes_and_forgets_the_topic() -> None:
    hub = EventHub()
    with hub.subscribe(JOB) as first:
        second = hub.subscribe(JOB)
        assert hub.subscriber_count() == 2
    assert hub.subscriber_count() == 1
    hub.publish(JOB, "after")
    assert drain(first) == []
    assert drain(second) == ["after"]
    second.close()
    second.close()  # twice is harmless
    assert hub.subscriber_count() == 0
    assert JOB not in hub._subscribers  # no empty sets left behind for finished jobs


async def test_a_slow_reader_is_marked_lagged_and_memory_stays_bounded() -> None:
    hub = EventHub(capacity=3)
    with hub.subscribe(JOB) as slow:
        for item in range(100):
            hub.publish(JOB, item)
            assert slow.queue.qsize() <= 3
        assert slow.lagged
        items = drain(slow)
        # The oldest item made room for the wake-up marker; what came after the lag was dropped
        # (the reader reloads it from the database).
        assert items == [1, 2, None]


async def test_a_lagged_reader_wakes_up_with_the_marker() -> None:
    hub = EventHub(capacity=2)
    with hub.subscribe(JOB) as slow:
        for item in range(3):
            hub.publish(JOB, item)
        received = [await slow.get() for _ in range(2)]
        assert received[-1] is None
        assert slow.lagged


async def test_reset_after_lag_empties_the_queue_and_delivers_again() -> None:
    hub = EventHub(capacity=2)
    with hub.subscribe(JOB) as slow:
        for item in range(5):
            hub.publish(JOB, item)
        assert slow.lagged
        slow.reset_after_lag()
        assert not slow.lagged
        assert slow.queue.empty()
        hub.publish(JOB, "fresh")
        assert await slow.get() == "fresh"


async def test_one_slow_reader_does_not_hold_back_the_others() -> None:
    hub = EventHub(capacity=4)
    with hub.subscribe(JOB) as slow, hub.subscribe(JOB) as fast:
        received = []
        for item in range(50):
            hub.publish(JOB, item)
            received.append(await fast.get())
        assert received == list(range(50))
        assert not fast.lagged
        assert slow.lagged
        assert slow.queue.qsize() <= 4


async def test_a_reader_at_exactly_capacity_is_not_lagged() -> None:
    hub = EventHub(capacity=3)
    with hub.subscribe(JOB) as subscription:
        for item in range(3):
            hub.publish(JOB, item)
        assert not subscription.lagged
        assert drain(subscription) == [0, 1, 2]
