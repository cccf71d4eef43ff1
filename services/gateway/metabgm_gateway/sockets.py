"""Forward relay events to one WebSocket until either side goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

from fastapi import WebSocket


async def forward(
    ws: WebSocket,
    queue: asyncio.Queue,
    render: Callable[[dict], dict | None],
    on_message: Callable[[str], Awaitable[None]] | None = None,
    before_send: Callable[[dict], Awaitable[None]] | None = None,
) -> None:
    async def reader() -> None:
        while True:
            msg = await ws.receive_text()
            if on_message is not None:
                await on_message(msg)

    async def writer() -> None:
        while True:
            out = render(json.loads(await queue.get()))
            if out is None:
                continue
            if before_send is not None:
                await before_send(out)
            await ws.send_json(out)

    tasks = [asyncio.create_task(reader()), asyncio.create_task(writer())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
