"""Typed settings, one class per service on a common base. Environment variables are
`METABGM_<FIELD>`; values with no default are required and a missing one stops the service at
start-up with a message naming it.

Rules:
- `Common` holds what every worker and the gateway share (Redis, lifetimes and leases, the ladder's
  budgets, metrics and liveness); `Ingest`, `LLM` (and its `Narrator` and `Describer`), `Synth` and
  `Gateway` add their own. Variables no class has are ignored, so one environment serves them all.
- Required: `redis_url`, and `llm_base_url` for the LLM stages. Numbers carry their bounds, so a
  value out of range also stops the service at start-up rather than misbehaving later.
- An LLM stage's LoRA adapter is its `lora_id` (`narrator_lora_id`, `describer_lora_id`; None: the
  base model). With `llm_lora_adapters` > 0 (the embedded llama.cpp server) every request names all
  adapters, its own on (`llmserver.lora_field`); vLLM picks one by model name and sets 0.
- Secrets are not settings: `Secrets` reads `collector_token`, `mod_key` and `link_secret` from
  `METABGM_<NAME>` or `<data_dir>/secrets.json`. In production a missing one is an error; locally it
  is made on first use (file mode 0600). One under 16 characters, or a placeholder (`INSECURE`), is
  refused.
- Collectors are `default` (`collector_token`), the named ones in `<data_dir>/collectors.json`
  (read again when it changes) and `METABGM_COLLECTOR_TOKENS` (`name:token[:server|...]`); a token
  under 16 characters is refused. A named collector is bound to its servers (by default the server
  id of its name); `default`'s servers are the Gateway's `default_collector_servers`.
- `new_token` never starts with "-": typed after `--token` it is a value, not a flag.
- The synth's `concurrency` defaults to the cores this process may use (the container's, not the
  node's); the gateway serves clips from the `clip_dir` the synth writes (default `<data_dir>/clips`).
"""

from __future__ import annotations

import json
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .stages import NAMES

INSECURE = {"", "changeme", "change-me", "secret"}


class Common(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METABGM_", extra="ignore")

    environment: Literal["local", "production"] = "local"
    redis_url: str = Field(description="redis://host:port/db of the broker and player state")
    data_dir: Path = Path(".metabgm")
    metrics_port: int = Field(0, ge=0, le=65535, description="worker /metrics port; 0 = none")
    stale_after_s: float = Field(60.0, gt=0, description="work older than this is dropped")
    # A lost job frees its player after this; longer than any job may live (stale_after_s).
    inflight_lease_s: float = Field(120.0, gt=0, description="a lost job frees its player after this")
    heartbeat_s: float = Field(5.0, gt=0)
    # A job whose worker stops renewing its lease (the worker died) runs again after this.
    lost_job_s: float = Field(30.0, gt=0, description="a job lost with its worker runs again after this")
    # A worker whose queue holds jobs while it has taken none for this long restarts itself.
    consumer_stall_s: float = Field(30.0, gt=0, description="an idle consumer with work waiting exits after this")
    # Per-player keys (memory, narratives, feedback) live this long after their last write.
    player_ttl_s: float = Field(7 * 86400.0, ge=60, description="lifetime of an idle player's state")
    # The degradation ladder (metabgm_shared.ladder): scene change -> music is a budget kept at any load.
    deadline_s: float = Field(3.0, gt=0, description="window -> music for an ordinary scene change")
    urgent_deadline_s: float = Field(1.5, gt=0, description="same, for combat, dimension, near death, skips")
    llm_max_inflight: int = Field(8, ge=0, description="scene changes in the LLM stages at once; 0 = never the LLM")
    llm_ordinary_share: float = Field(0.75, gt=0, le=1, description="of llm_max_inflight, open to ordinary changes")
    synth_max_queue: int = Field(32, ge=1, description="renders waiting before changes take a cached clip")
    synth_parallel: int = Field(2, ge=1, description="renders the synth workers run at once, for the predictor")
    refine_backlog_s: float = Field(
        30.0, ge=0, description="a refinement the LLM had no room for waits this long for room; 0: dropped"
    )
    pregenerate: bool = True
    pregen_ttl_s: float = Field(180.0, gt=0, description="an anticipated scene is rendered once per player per this")
    # Worker /metrics listen here; 0.0.0.0 only where the scraper is on another host (compose, k8s).
    metrics_host: str = "127.0.0.1"
    # Every Redis client (state, broker, pub/sub) gives up after this: a blackholed Redis is an
    # error the caller handles, never a request or probe that hangs.
    redis_timeout_s: float = Field(5.0, gt=0, le=60, description="socket and connect timeout of Redis clients")
    # A worker whose task has run this long is wedged: its /livez turns 503 and the orchestrator restarts it.
    task_deadline_s: float = Field(300.0, gt=0, description="a task running longer makes the worker not alive")


class Ingest(Common):
    max_features: int = Field(6, ge=1, le=12)
    change_threshold: float = Field(0.5, ge=0, le=1)
    confirm_windows: int = Field(2, ge=1, le=10)
    min_dwell_s: float = Field(20.0, ge=0)
    # A window's judgment is mostly waiting on Redis round trips (each write on an fsync): threads
    # wait together, and Redis writes all their waiting writes with one fsync.
    ingest_concurrency: int = Field(16, ge=1, le=64, description="windows one ingest worker judges at once")


class LLM(Common):
    llm_base_url: str = Field(description="OpenAI-compatible endpoint, e.g. http://vllm:8000/v1")
    llm_api_key: SecretStr = SecretStr("none")
    llm_timeout_s: float = Field(30.0, gt=0)
    # All attempts of one call, backoff included, end within this: the stage's deadline for the LLM.
    llm_deadline_s: float = Field(20.0, gt=0, description="one call's attempts all end within this")
    llm_retries: int = Field(2, ge=0, le=10)
    llm_backoff_s: float = Field(0.25, ge=0, le=10, description="first retry delay; doubles each retry")
    llm_breaker_failures: int = Field(3, ge=1, description="consecutive failures that open the breaker")
    llm_breaker_reset_s: float = Field(15.0, gt=0)
    llm_temperature: float = Field(0.7, ge=0, le=2)
    llm_top_p: float = Field(0.9, gt=0, le=1)
    llm_concurrency: int = Field(16, ge=1, description="requests one worker keeps in flight")
    # The embedded llama.cpp server applies every adapter it loaded unless a request says which, so
    # with adapters loaded each call names them all, its own stage's on (`llmserver.lora_field`).
    # vLLM picks an adapter by model name (`narrator_model`) instead: 0 there.
    llm_lora_adapters: int = Field(0, ge=0, le=8, description="LoRA adapters the embedded LLM server loaded")

    @property
    def lora_id(self) -> int | None:
        """This stage's adapter among the embedded server's (None: the base model)."""
        return None


class Narrator(LLM):
    narrator_model: str = "narrator"
    narrator_max_tokens: int = Field(96, ge=16, le=1024)
    narrator_template: str = "narrator/v1"
    # A reply the guard refuses is asked again (sampled) before the rules narrate: a small model's
    # refusals are mostly a phrase copied from the player's recent narratives.
    narrator_attempts: int = Field(2, ge=1, le=4, description="model replies tried before the rules narrate")
    narrator_lora_id: int | None = Field(None, ge=0, description="the narrator's adapter on the embedded server")
    # llama.cpp's DRY sampler: a token that would extend a word run already in the prompt (the
    # player's recent narratives, which the guard refuses to see copied) by more than
    # `narrator_dry_allowed_length` tokens is penalized. vLLM has no DRY: its deployments set 0.
    narrator_dry_multiplier: float = Field(1.2, ge=0, le=10, description="DRY penalty, 0: off (vLLM)")
    narrator_dry_allowed_length: int = Field(2, ge=1, le=16, description="tokens a repeated run may reach unpenalized")
    # A llama.cpp grammar (GBNF) under which no 4-word run of the recent narratives can be written:
    # the copies the guard refuses most. vLLM takes grammars another way: its deployments set false.
    narrator_unrepeated: bool = Field(True, description="bar the recent narratives' 4-word runs (llama.cpp)")

    @property
    def lora_id(self) -> int | None:
        return self.narrator_lora_id


class Describer(LLM):
    describer_model: str = "describer"
    describer_max_tokens: int = Field(160, ge=32, le=1024)
    describer_template: str = "describer/v1"
    direct_template: str = "direct/v1"
    describer_lora_id: int | None = Field(None, ge=0, description="the describer's adapter on the embedded server")
    # How far the LLM may move the musical prior; a fine-tuned adapter earns a wider margin.
    prior_tempo_margin_bpm: int = Field(12, ge=0, le=160)
    prior_intensity_margin: float = Field(0.15, ge=0, le=1)

    @property
    def lora_id(self) -> int | None:
        return self.describer_lora_id


def _cores() -> int:
    return len(os.sched_getaffinity(0))


class Synth(Common):
    renderer: Literal["cpu", "musicgen"] = "cpu"
    # CPU renders in parallel: the cores this process may use (the container's, not the node's).
    concurrency: int = Field(default_factory=_cores, ge=1, le=64)
    clip_dir: Path | None = None  # default: <data_dir>/clips
    cache_max_bytes: int = Field(2 * 1024**3, ge=1024**2)
    clip_bars: int = Field(8, ge=1, le=64)
    target_lufs: float = Field(-16.0, ge=-40, le=-6)
    soundfont: Path | None = None  # default: TimGM6mb.sf2 inside pretty_midi
    musicgen_model: str = "facebook/musicgen-small"
    musicgen_max_s: float = Field(15.0, gt=0, le=60)
    # transformers' generate is launch-bound on an H100: a step of 32 clips costs 1.1x a step of 8
    # (bench/results/synth_musicgen_gpu.json), so a batch of 32 renders 3.3x the audio per second
    musicgen_batch: int = Field(32, ge=1, le=64)
    musicgen_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    musicgen_device: str = "cuda"

    @property
    def clips(self) -> Path:
        return self.clip_dir or self.data_dir / "clips"


class Gateway(Common):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    public_url: str = ""  # how players reach us; default http://host:port
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    max_windows_per_request: int = Field(500, ge=1)
    # One token bucket per client: per collector, per mod player and per listener page.
    collector_rate_per_s: float = Field(50.0, gt=0, description="requests per second per client")
    collector_burst: int = Field(100, ge=1)
    mod_server_id: str = "default"  # the server anonymous mod traffic is bound to
    mod_open: bool = False  # accept the mod on the bare /api/input paths, without the secret prefix
    mod_idle_s: float = Field(60.0, ge=1)
    link_ttl_s: int = Field(12 * 3600, ge=60)
    # Tenants and attackers (docs/reliability.md). Quotas count work, not requests, per collector.
    collector_windows_per_min: int = Field(12_000, ge=1, description="windows one collector may post a minute")
    collector_new_players_per_min: int = Field(300, ge=1, description="players a collector may introduce a minute")
    # Fair shares (`metabgm_shared.fair`): a collector's first this many windows a minute go ahead of
    # every heavier collector's backlog; beyond it, its windows go in later bands (served, later).
    fair_burst_windows: int = Field(10, ge=1, description="windows a minute a collector sends in the first band")
    # The servers the `default` collector (the operator's token) may post for: `*` = any server no
    # named collector is bound to.
    default_collector_servers: str = "*"
    mod_shared_key: bool = False  # accept the one shared mod key (every player's client holds it): opt-in
    api_docs: bool = False  # serve /docs and /openapi.json
    metrics_allow: str = Field("127.0.0.1/32,::1/128", description="networks that may read /metrics")
    trusted_hosts: str = Field("", description="Host headers accepted; default: public_url's host and loopback")
    header_timeout_s: float = Field(10.0, gt=0, description="a request's headers must arrive within this")
    body_timeout_s: float = Field(10.0, gt=0, description="a request's body must arrive within this")
    required_stages: str = ",".join(NAMES)
    clip_dir: Path | None = None  # default: <data_dir>/clips, as the synth stage writes them
    # A stage with work waiting and no job started or ended for this long is stalled: /healthz 503.
    stage_stall_s: float = Field(30.0, gt=0, description="a stage making no progress this long is unhealthy")
    # Connections to Redis this replica may hold; a request waits up to redis_pool_wait_s for one.
    redis_pool_size: int = Field(64, ge=2, le=10_000)
    redis_pool_wait_s: float = Field(5.0, gt=0)

    @property
    def clips(self) -> Path:
        return self.clip_dir or self.data_dir / "clips"

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"

    @property
    def allowed_hosts(self) -> list[str]:
        """Host headers the gateway answers: the configured list, else public_url's host and loopback."""
        if self.trusted_hosts.strip():
            return [h.strip() for h in self.trusted_hosts.split(",") if h.strip()]
        hosts = ["127.0.0.1", "localhost", "::1", "[::1]"]
        if self.host not in ("0.0.0.0", "::", ""):
            hosts.append(self.host)
        if self.public_url:
            hosts.append(urlsplit(self.public_url).hostname or "")
        return [h for h in dict.fromkeys(hosts) if h]


def new_token() -> str:
    """A random secret that never starts with "-": typed after `--token` it is a value, not a flag."""
    while (token := secrets.token_urlsafe(24)).startswith("-"):
        pass
    return token


def _scoped(name: str, entry: str | dict) -> tuple[str, tuple[str, ...]]:
    """A collectors.json entry: `{"token": ..., "servers": [...]}`, or a bare token (bound to `name`)."""
    if isinstance(entry, str):
        return entry, (name,)
    if isinstance(entry, dict) and isinstance(entry.get("token"), str) and isinstance(entry.get("servers") or [], list):
        return entry["token"], tuple(entry.get("servers") or (name,))
    raise RuntimeError(f'collectors.json: {name}: expected a token or {{"token": "...", "servers": [...]}}')


def _write_private(path: Path, text: str) -> None:
    """Secrets on disk, readable by their owner only from the first byte (never chmod after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that existed keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        out.write(text)


class Secrets:
    """The instance's secrets, from the environment or `<data_dir>/secrets.json` (made on first use)."""

    def __init__(self, data_dir: Path, environment: str = "local") -> None:
        self.path = data_dir / "secrets.json"
        self.collectors_path = data_dir / "collectors.json"
        self.environment = environment
        self._collectors: dict[str, str] | None = None
        self._scopes: dict[str, tuple[str, ...]] = {}
        self._collectors_mtime: float | None = None

    @cached_property
    def values(self) -> dict[str, str]:
        from os import environ

        stored: dict[str, str] = {}
        if self.path.exists():
            stored = json.loads(self.path.read_text())
        names = ("collector_token", "mod_key", "link_secret")
        missing = [n for n in names if not environ.get(f"METABGM_{n.upper()}") and not stored.get(n)]
        if missing and self.environment == "production":
            raise RuntimeError(f"missing secrets in production: {', '.join(missing)}")
        if missing:
            stored.update({n: new_token() for n in missing})
            _write_private(self.path, json.dumps(stored, indent=2))
        values = {n: environ.get(f"METABGM_{n.upper()}") or stored[n] for n in names}
        weak = [n for n, v in values.items() if v.lower() in INSECURE or len(v) < 16]
        if weak:
            raise RuntimeError(f"secrets too weak (need 16+ random characters): {', '.join(weak)}")
        return values

    @property
    def collector_token(self) -> str:
        """The token of the collector named `default`."""
        return self.values["collector_token"]

    def collectors(self) -> dict[str, str]:
        """Collector name -> bearer token: `default`, the named ones in `<data_dir>/collectors.json`
        (`metabgm collector-token NAME` adds one; read again when it changes) and
        `METABGM_COLLECTOR_TOKENS` (`name:token,...`, for deployments)."""
        try:
            mtime = self.collectors_path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if self._collectors is None or mtime != self._collectors_mtime:
            stored = json.loads(self.collectors_path.read_text()) if mtime is not None else {}
            named = {n: _scoped(n, entry) for n, entry in stored.items()}
            env = os.environ.get("METABGM_COLLECTOR_TOKENS", "")
            for pair in env.split(","):
                name, _, rest = pair.partition(":")
                token, _, servers = rest.partition(":")
                if token and not name:
                    raise RuntimeError("METABGM_COLLECTOR_TOKENS: a token without a name (name:token[:servers])")
                if token:
                    named[name] = (token, tuple(s for s in servers.split("|") if s) or (name,))
            weak = [n for n, (t, _) in named.items() if len(t) < 16]
            if weak:
                raise RuntimeError(f"collector tokens too weak (need 16+ characters): {', '.join(weak)}")
            self._scopes = {n: servers for n, (_, servers) in named.items()}
            tokens = {n: t for n, (t, _) in named.items()}
            self._collectors, self._collectors_mtime = {"default": self.collector_token, **tokens}, mtime
        return self._collectors

    def collector_servers(self, name: str) -> tuple[str, ...] | None:
        """The server ids a named collector is bound to; None for `default` (the Gateway setting decides)."""
        self.collectors()
        return self._scopes.get(name) if name != "default" else None

    def add_collector(self, name: str, servers: tuple[str, ...] = ()) -> str:
        """Make (or re-bind) a named collector; bound to `servers`, or to the server id `name`."""
        stored = json.loads(self.collectors_path.read_text()) if self.collectors_path.exists() else {}
        token, bound = _scoped(name, stored[name]) if name in stored else (new_token(), ())
        stored[name] = {"token": token, "servers": sorted(set(servers)) if servers else list(bound or (name,))}
        _write_private(self.collectors_path, json.dumps(stored, indent=2))
        return token

    @property
    def mod_key(self) -> str:
        return self.values["mod_key"]

    @property
    def link_secret(self) -> str:
        return self.values["link_secret"]
