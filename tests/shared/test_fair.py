"""Who goes first on the queues: the band of each kind of job and of each collector's rank, and the
depth of a stage's queue counted over every band, on a real Redis through the real Celery producer."""

from __future__ import annotations

import anyio
import redis
import redis.asyncio as aioredis

from metabgm_shared.contracts import Decision, Job, SceneWindow
from metabgm_shared.fair import band, band_of, job_band, rank, ranks
from metabgm_shared.queues import async_band_depths, band_depths, depth, depths, make_celery, send
from metabgm_shared.quota import Quota
from metabgm_shared.stages import BANDS, NAMES, band_keys

W = SceneWindow(server_id="s", player_id="p")


def test_a_collectors_rank_falls_with_its_windows_this_minute() -> None:
    assert [rank(p, 10) for p in (1, 10, 11, 40, 41, 10_000)] == [0, 0, 1, 1, 2, 2]
    assert rank(1, 1) == 0 and rank(2, 1) == 1  # the burst is the setting's


def test_first_music_goes_before_refinements_before_pregeneration_then_by_rank() -> None:
    order = [band(0), band(2), band(0, urgent=False), band(2, urgent=False), band(0, refine=True),
             band(2, refine=True), band(0, pregen=True)]  # fmt: skip
    assert order == sorted(order) == [0, 2, 3, 5, 6, 8, 9]
    assert {band(r, urgent=u, refine=f) for r in range(3) for u in (True, False) for f in (True, False)} < set(BANDS)
    ordinary = Job(window=W, rank=1, decision=Decision(changed=True, score=1.0, urgent=False, reason="r"))
    for job in (Job(window=W, rank=2), ordinary, ordinary.model_copy(update={"refine": True}),
                Job(window=W, pregen="nightfall")):  # fmt: skip
        assert band_of(job.model_dump(mode="json")) == job_band(job)  # as sent and as the ladder sees it
    assert [job_band(j) for j in (Job(window=W, rank=2), ordinary)] == [2, 4]  # a window at ingest: urgent


def test_ranks_number_the_windows_the_quota_just_counted(redis_url: str) -> None:
    async def go() -> list[list[int]]:
        client = aioredis.Redis.from_url(redis_url)
        quota = Quota(windows_per_min=10_000, new_players_per_min=10_000)
        out = []
        for collector, n in (("big", 45), ("big", 3), ("small", 3)):
            await quota.take(client, collector, [f"s:p{i}" for i in range(n)], 120.0)
            out.append(await ranks(client, collector, n, 120.0, burst=10))
        await client.aclose()
        return out

    first, more, small = anyio.run(go)
    assert first == [0] * 10 + [1] * 30 + [2] * 5
    assert more == [2, 2, 2] and small == [0, 0, 0]  # another collector starts at its own first window


def test_the_depth_of_a_stage_counts_every_band(redis_url: str) -> None:
    app = make_celery(redis_url)
    client = redis.Redis.from_url(redis_url)
    for job in (Job(window=W), Job(window=W, rank=2), Job(window=W, refine=True), Job(window=W, pregen="x"),
                Job(window=W, pregen="y")):  # fmt: skip
        send(app, "synth", job.model_dump(mode="json"))
    assert client.llen("synth") == 1  # what a bare LLEN of the queue's name would have said
    assert band_keys("synth")[:2] == ("synth", "synth:band:1") and len(band_keys("synth")) == len(BANDS)
    assert [client.llen(k) for k in band_keys("synth")] == [1, 0, 1, 0, 0, 0, 1, 0, 0, 2]  # kombu's lists
    assert band_depths(client)["synth"] == (1, 0, 1, 0, 0, 0, 1, 0, 0, 2)
    assert depth(client, "synth") == 5 and depths(client) == dict.fromkeys(NAMES, 0) | {"synth": 5}

    async def read() -> dict:
        aclient = aioredis.Redis.from_url(redis_url)
        try:
            return await async_band_depths(aclient, ("synth", "ingest"))
        finally:
            await aclient.aclose()

    assert anyio.run(read) == {"synth": (1, 0, 1, 0, 0, 0, 1, 0, 0, 2), "ingest": (0,) * len(BANDS)}
