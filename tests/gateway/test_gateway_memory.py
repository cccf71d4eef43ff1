"""What the gateway holds in memory stays bounded: who sent windows, scraped or not (mod player
names are anyone's to make up), and the events waiting for a stalled socket (the newest kept)."""

import time

from metabgm_gateway import deps


def services() -> deps.Services:
    return deps.Services(*(None,) * 8)  # only `seen` and `live_collectors` are used here


def test_senders_are_counted_by_kind_and_forgotten_after_a_minute():
    svc = services()
    svc.seen("collector:ops")
    svc.seen("mod:alex")
    svc.seen("mod:steve")
    svc.collectors_seen["mod:gone"] = time.time() - deps.SEEN_FOR_S - 1
    live = svc.live_collectors()
    assert (live["mod"], live["collector"]) == (2, 1)


def test_made_up_names_never_grow_the_memory_past_its_bound():
    svc = services()
    for i in range(3 * deps.SEEN_MAX):
        svc.seen(f"mod:player{i}")
    assert len(svc.collectors_seen) <= deps.SEEN_MAX
    assert f"mod:player{3 * deps.SEEN_MAX - 1}" in svc.collectors_seen  # the newest are kept


def test_a_stalled_socket_keeps_the_newest_events_not_the_oldest():
    import asyncio

    from metabgm_gateway.relay import QUEUE_MAX, offer

    queue: asyncio.Queue = asyncio.Queue()
    for i in range(QUEUE_MAX + 44):
        offer(queue, f"event {i}")
    assert queue.qsize() == QUEUE_MAX
    assert queue.get_nowait() == "event 44"  # what it shows when it catches up ends with the latest
    *_, last = [queue.get_nowait() for _ in range(QUEUE_MAX - 1)]
    assert last == f"event {QUEUE_MAX + 43}"
