"""Every MetaBGM metric, defined once. Services observe these objects; none creates its own.

Each process exports the default registry: the gateway on its `/metrics` route, each worker on
its own port (`METABGM_METRICS_PORT`).

Rules:
- A metric is a module-level object here, named `metabgm_*` with fixed label names; a service
  imports this module and observes it, so every name and label set is in one place.
- Buckets by kind: `LATENCY_BUCKETS` for one stage's work or one LLM request, `E2E_BUCKETS` for a
  window's way to music, `HOP_BUCKETS` for one hop (`queue_wait`, then `handoff`, both read by
  bench/pipeline_overhead.py).
- Gauges of shared state (queue depths by band, `inflight` players, mod players, `restarts` that
  `metabgm up` keeps in Redis, live workers, stalled stages) are read from Redis by the gateway at
  scrape time; the workers set none of them.
- A worker's /metrics is served only when `metrics_port` is set (0: none), with /livez, at
  `metrics_host`; the gateway's answers only the networks in `metrics_allow`.
- The open breaker's fast-fails send no request: they count in `llm_breaker_rejections`, never as an
  `llm_latency`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
E2E_BUCKETS = (0.25, 0.5, 1, 2, 4, 6, 8, 10, 15, 20, 30, 45, 60, 90, 120)

stage_latency = Histogram(
    "metabgm_stage_latency_seconds", "Time one stage spends on one job", ["stage"], buckets=LATENCY_BUCKETS
)
window_to_clip = Histogram(
    "metabgm_window_to_clip_ready_seconds",
    "From a window reaching the gateway to its clip being ready",
    buckets=E2E_BUCKETS,
)
window_to_playing = Histogram(
    "metabgm_window_to_playing_seconds",
    "From a window reaching the gateway to its clip playing in the player's browser",
    buckets=E2E_BUCKETS,
)
windows = Counter("metabgm_windows_total", "Windows accepted from collectors", ["source"])
rejected = Counter("metabgm_rejected_total", "Requests or windows refused, by reason", ["reason"])
unknown_labels = Counter("metabgm_unknown_labels_total", "Unknown labels in mod windows", ["field"])
decisions = Counter("metabgm_scene_decisions_total", "Change decisions of the ingest stage", ["changed"])
queue_depth = Gauge("metabgm_queue_depth", "Jobs waiting on a queue", ["queue"])
queue_band_depth = Gauge("metabgm_queue_band_depth", "Jobs waiting on a queue by band (0 first)", ["queue", "band"])
# Fair shares across collectors (`fair`): who was put behind the others for sending more than its
# fair burst this minute.
deprioritized = Counter(
    "metabgm_collector_deprioritized_windows_total",
    "Windows ranked behind other collectors': their collector sent more than its fair burst this minute",
    ["collector"],
)
inflight = Gauge("metabgm_inflight_players", "Players with a scene in the LLM stages (llm_max_inflight bounds it)")
stage_live_workers = Gauge("metabgm_stage_live_workers", "Workers of a stage whose heartbeat is live", ["stage"])
coalesced = Counter("metabgm_coalesced_total", "Pending scenes replaced by a newer one (latest wins)")
stale_dropped = Counter("metabgm_stale_dropped_total", "Jobs dropped for being too old", ["stage"])
errors = Counter("metabgm_errors_total", "Errors by stage and kind", ["stage", "kind"])
lost_jobs = Counter("metabgm_lost_jobs_total", "Jobs whose worker died under them, handed back", ["stage"])
duplicates = Counter("metabgm_duplicate_jobs_total", "Copies of a job that already ran at a stage, dropped", ["stage"])
# `metabgm up` keeps the count in Redis; the gateway reads it at scrape time.
restarts = Gauge("metabgm_part_restarts", "Times `metabgm up` restarted a dead part", ["part"])
stage_stalled = Gauge("metabgm_stage_stalled", "1 while a stage has work waiting and makes no progress", ["stage"])
active_sessions = Gauge("metabgm_active_sessions", "Listener pages connected", ["server"])
collectors = Gauge("metabgm_connected_collectors", "Collectors seen in the last minute", ["kind"])
mod_players = Gauge("metabgm_mod_players", "Players announced by the seed mod and not yet gone")
cache_hits = Counter("metabgm_cache_hits_total", "Clip cache hits")
cache_misses = Counter("metabgm_cache_misses_total", "Clip cache misses")
cache_bytes = Gauge("metabgm_cache_bytes", "Bytes held by the clip store")
llm_latency = Histogram(
    "metabgm_llm_request_seconds", "LLM request latency", ["stage", "outcome"], buckets=LATENCY_BUCKETS
)
llm_tokens = Counter("metabgm_llm_tokens_total", "LLM tokens", ["stage", "kind"])
llm_fallbacks = Counter("metabgm_llm_fallbacks_total", "Results produced without the LLM", ["stage"])
llm_refusals = Counter("metabgm_llm_refusals_total", "LLM replies the stage's guard refused", ["stage"])
breaker_open = Gauge("metabgm_llm_breaker_open", "1 while the circuit breaker is open", ["stage"])
# Fast-fails of the open breaker send no request: counted here, never observed as a latency.
llm_breaker_rejections = Counter(
    "metabgm_llm_breaker_rejections_total", "LLM calls refused by the open breaker, no request sent", ["stage"]
)
synth_rtf = Histogram(
    "metabgm_synth_realtime_factor",
    "Seconds of audio rendered per second of compute",
    ["renderer"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500),
)
feedback = Counter("metabgm_feedback_total", "Like and skip presses", ["kind"])
# The degradation ladder (metabgm_shared.ladder).
rungs = Counter("metabgm_ladder_rung_total", "Scene changes by the rung chosen to serve them", ["rung", "urgency"])
shed = Counter("metabgm_ladder_shed_total", "Scene changes that passed over the LLM rungs, by why", ["reason"])
time_to_music = Histogram(
    "metabgm_time_to_music_seconds",
    "From a window reaching the gateway to the music for its scene change being ready, by rung",
    ["rung"],
    buckets=E2E_BUCKETS,
)
deadline_missed = Counter("metabgm_ladder_deadline_missed_total", "Music ready after its deadline", ["rung"])
refined = Counter("metabgm_refined_total", "LLM refinements of a scene a fast rung served, by outcome", ["outcome"])
refine_backlog = Counter(
    "metabgm_refine_backlog_total", "Refinements the LLM had no room for: waited, then sent or dropped", ["outcome"]
)
pregenerated = Counter("metabgm_pregenerated_total", "Anticipated scenes sent to be rendered ahead", ["reason"])
pregen_served = Counter("metabgm_pregen_served_total", "Scene changes served by a pre-generated clip", ["reason"])
# A hop of the pipeline: a job waits on a stage's queue (`queue_wait`), then the worker runs it and
# hands it on (`handoff`); bench/pipeline_overhead.py reads both.
HOP_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
               5, 10, 30)  # fmt: skip
queue_wait = Histogram(
    "metabgm_queue_wait_seconds",
    "From a job being put on a stage's queue to a worker starting it",
    ["stage"],
    buckets=HOP_BUCKETS,
)
handoff = Histogram(
    "metabgm_stage_handoff_seconds",
    "From a worker starting a job to handing it on: the next stage's queue, the ladder's dispatch or the end",
    ["stage"],
    buckets=HOP_BUCKETS,
)
