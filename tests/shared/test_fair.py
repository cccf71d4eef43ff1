"""Fair shares across collectors: the band a collector's windows go in, and the depth of a stage's
queue counted over every band, on a real Redis through the real Celery producer."""

from __future__ import annotations

import anyio
import redis
import redis.asyncio as aioredis

from metabgm_shared.contracts import Job, SceneWindow
from metabgm_shared.fair import band, bands
from metabgm_shared.queues import async_band_depths, band_depths, depth, depths, make_celery, send
from metabgm_shared.quota import Quota
from metabgm_shared.stages import BANDS, NAMES, band_keys


def test_a_collectors_band_falls_with_its_windows_this_minute() -> None:
    assert [band(p, 10) for p in (1, 10, 11, 40, 41, 160, 161, 10_000)] == [0, 0, 3, 3, 6, 6, 9, 9]
    assert band(1, 1) == 0 and band(2, 1) == 3  # the burst is the setting's
    assert {band(p, 10) for p in range(1, 1000)} == set(BANDS)  # never outside the broker's bands


def test_bands_number_the_windows_the_quota_just_counted(redis_url: str) -> None:
    async def go() -> tuple[list[int], list[int], list[int]]:
        client = aioredis.Redis.from_url(redis_url)
        quota = Quota(windows_per_min=10_000, new_players_per_min=10_000)
        out = []
        for collector, n in (("big", 45), ("big", 3), ("small", 3)):
            await quota.take(client, collector, [f"s:p{i}" for i in range(n)], 120.0)
            out.append(await bands(client, collector, n, 120.0, burst=10))
        await client.aclose()
        return out

    first, more, small = anyio.run(go)
    assert first == [0] * 10 + [3] * 30 + [6] * 5
    assert more == [6, 6, 6] and small == [0, 0, 0]  # another collector starts at its own first window


def test_the_depth_of_a_stage_counts_every_band(redis_url: str) -> None:
    app = make_celery(redis_url)
    client = redis.Redis.from_url(redis_url)
    w = SceneWindow(server_id="s", player_id="p")
    for b in (0, 3, 6, 6, 9, 9, 9):
        send(app, "synth", Job(window=w, band=b).model_dump(mode="json"))
    assert client.llen("synth") == 1  # what a bare LLEN of the queue's name would have said
    assert band_keys("synth") == ("synth", "synth:band:3", "synth:band:6", "synth:band:9")
    assert [client.llen(k) for k in band_keys("synth")] == [1, 1, 2, 3]  # kombu's lists are these
    assert band_depths(client)["synth"] == (1, 1, 2, 3)
    assert depth(client, "synth") == 7 and depths(client) == dict.fromkeys(NAMES, 0) | {"synth": 7}

    async def read() -> dict:
        aclient = aioredis.Redis.from_url(redis_url)
        try:
            return await async_band_depths(aclient, ("synth", "ingest"))
        finally:
            await aclient.aclose()

    assert anyio.run(read) == {"synth": (1, 1, 2, 3), "ingest": (0, 0, 0, 0)}
