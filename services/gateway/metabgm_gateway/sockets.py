"""Forward relay events to one WebSocket until either side goes away.

Rules:
- The sockets are one-way (events out): the player's page and the mod send nothing. A client
  message of any kind (text, binary, garbage, a flood) ends the socket with close code 1008
  and a reason; it never raises inside the app, so nothing reaches the log as an error.
- A client that goes away ends the socket quietly, whatever the writer was doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

ONE_WAY = "this socket only sends: messages from the client are not accepted"


async def forward(
    ws: WebSocket,
    queue: asyncio.Queue,
    render: Callable[[dict], dict | None],
    before_send: Callable[[dict], Awaitable[None]] | None = None,
) -> None:
    async def reader() -> None:
        message = await ws.receive()
        if message["type"] != "websocket.disconnect":
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await ws.close(code=1008, reason=ONE_WAY)

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
