"""Fan-out of player events to the sockets this replica holds.

Rules:
- Every replica subscribes, through one Redis pub/sub connection, to the channels of the players
  whose sockets it holds, and nothing else: an event reaches exactly the replica (and socket) of
  its own player, whichever replica or worker published it. `IDLE_CHANNEL` is subscribed from
  `start`, so the connection keeps listening while no socket is open.
- A channel is subscribed when its first socket opens (`listen`) and unsubscribed when its last
  one closes. A socket is registered before the subscribe is awaited, so a socket of the same
  player leaving meanwhile sees it and keeps the subscription.
- Every socket on a channel gets every event, each through its own queue. A replica holds at most
  `SOCKETS_PER_CHANNEL` sockets on one channel (one player's tabs and devices); the routes refuse
  more (they ask `sockets`).
- A socket's queue holds at most `QUEUE_MAX` events; when it is full the oldest is dropped for the
  newest (`offer`): a stalled socket cannot grow the replica's memory, and a page that catches up
  shows what plays now, not what played a while ago.
- A failed pub/sub read is logged and retried a second later: the pump runs until `stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from metabgm_shared.state import IDLE_CHANNEL

log = logging.getLogger(__name__)
SOCKETS_PER_CHANNEL = 8
QUEUE_MAX = 256  # events held for one socket


def offer(queue: asyncio.Queue, event: str) -> None:
    """An event for one socket; a full queue (a stalled socket) drops its oldest."""
    if queue.qsize() >= QUEUE_MAX:
        queue.get_nowait()
    queue.put_nowait(event)


class Relay:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.pubsub = client.pubsub()
        self.listeners: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.pubsub.subscribe(IDLE_CHANNEL)  # keeps the connection listening
        self._task = asyncio.create_task(self._pump())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pubsub.aclose()

    async def _pump(self) -> None:
        while True:
            try:
                msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except Exception:
                log.exception("relay: pub/sub read failed; retrying")
                await asyncio.sleep(1)
                continue
            if msg is None:
                continue
            for queue in list(self.listeners.get(msg["channel"].decode(), ())):
                offer(queue, msg["data"].decode())

    def sockets(self, chan: str) -> int:
        """How many sockets this replica holds on a channel."""
        return len(self.listeners.get(chan, ()))

    @contextlib.asynccontextmanager
    async def listen(self, chan: str) -> AsyncIterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue()
        # Registered before the await: a socket of the same player leaving meanwhile must see
        # this one and keep the subscription.
        first = not self.listeners[chan]
        self.listeners[chan].add(queue)
        if first:
            await self.pubsub.subscribe(chan)
        try:
            yield queue
        finally:
            self.listeners[chan].discard(queue)
            if not self.listeners[chan]:
                del self.listeners[chan]
                with contextlib.suppress(Exception):
                    await self.pubsub.unsubscribe(chan)
