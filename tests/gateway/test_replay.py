"""Replay marks stand only for windows that were queued: a request that fails after marking (the
broker away: a 503) takes them back, so the collector's retry is accepted, not refused as a replay."""

import asyncio

import pytest
import redis.asyncio as aioredis

from metabgm_gateway import replay


def run(redis_url, body):
    async def go():
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_failed_request_takes_its_marks_back_and_the_retry_is_fresh(redis_url):
    async def body(client):
        await replay.fresh_ends(client, [("s:a", 5.0)])  # an earlier request, queued
        marks = await replay.fresh_ends(client, [("s:a", 10.0), ("s:a", 20.0), ("s:b", 7.0), ("s:a", 20.0)])
        assert [m is not None for m in marks] == [True, True, True, False]  # the last is a replay in the batch
        with pytest.raises(ConnectionError):
            async with replay.held(client, [m for m in marks if m]):
                raise ConnectionError("the broker went away")
        assert await client.zscore(replay.WINDOW_ENDS, "s:a") == 5.0  # unwound in order, to before the request
        assert await client.zscore(replay.WINDOW_ENDS, "s:b") is None
        retry = await replay.fresh_ends(client, [("s:a", 10.0), ("s:a", 20.0), ("s:b", 7.0)])
        assert all(retry)  # the same windows sent again are fresh
        async with replay.held(client, [m for m in retry if m]):
            pass  # queued: the marks stand
        assert [m is None for m in await replay.fresh_ends(client, [("s:a", 20.0), ("s:b", 7.0)])] == [True, True]

    run(redis_url, body)


def test_taking_back_leaves_a_later_windows_mark_alone(redis_url):
    async def body(client):
        mine = await replay.fresh_ends(client, [("s:a", 10.0)])
        await replay.fresh_ends(client, [("s:a", 30.0)])  # another request moved the player on meanwhile
        await replay.undo(client, [m for m in mine if m])
        assert await client.zscore(replay.WINDOW_ENDS, "s:a") == 30.0
        mark = await replay.fresh_index(client, "slot", 3)
        assert mark is not None and await replay.fresh_index(client, "slot", 3) is None
        await replay.undo(client, [mark])
        assert await replay.fresh_index(client, "slot", 3) is not None  # the mod's resend after a 503

    run(redis_url, body)
