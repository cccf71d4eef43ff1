"""The one LLM client: OpenAI chat completions over httpx, the same against vLLM and the embedded
llama.cpp server. Each stage passes its own `model` (with vLLM, its LoRA adapter's name).

Rules:
- Transient failures (connect errors, timeouts, 429, 5xx) are retried `llm_retries` times with
  exponential backoff and jitter; any other 4xx is the caller's bug and is raised at once.
- A circuit breaker counts consecutive failed attempts; at `llm_breaker_failures` it opens and
  every call fails fast (`Unavailable`) for `llm_breaker_reset_s`, then one probe is let through
  (half-open): success closes it, failure opens it again. Callers fall back, they never wait.
- One call, all its attempts and backoffs included, ends within `llm_deadline_s` (the stage's
  deadline): each attempt's timeout is what is left of it. A timeout while other jobs wait (other
  calls in flight, or work on the stage's queue: `backlog`) opens the breaker at once, so a hung
  server costs the waiting players one timeout, not one per retry.
- Structured output is asked for with `response_format` json_schema (strict), which both vLLM
  and llama.cpp turn into constrained decoding. The reply is still parsed and validated by the
  caller: a server may ignore the schema.
- Player-written text goes into prompts only through `data_block`: control characters and
  newlines stripped, capped, JSON-encoded, `<` `>` escaped so it cannot close its delimiters.
"""

from __future__ import annotations

import json
import random
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from string import Template

import httpx

from . import metrics
from .contracts import PlayerText
from .settings import LLM

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
TEXT_CAP = 160  # characters kept of one player-written text


class LLMError(Exception):
    """The request itself is wrong (a 4xx other than 408/425/429) or the reply is unusable."""


class Unavailable(LLMError):
    """The endpoint is down, overloaded, or the breaker is open: use the fallback."""


@dataclass
class Reply:
    text: str
    finish: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str

    def json(self) -> dict:
        try:
            value = json.loads(self.text)
        except json.JSONDecodeError as exc:
            raise LLMError(f"reply is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise LLMError("reply is not a JSON object")
        return value


class Breaker:
    """Closed -> open after `failures` consecutive failures -> half-open after `reset_s`."""

    def __init__(self, stage: str, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stage, self.failures, self.reset_s, self.clock = stage, failures, reset_s, clock
        self.count = 0
        self.opened_at: float | None = None
        self.probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half-open" and not self.probing:
                self.probing = True  # exactly one probe at a time
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self.count, self.opened_at, self.probing = 0, None, False
        metrics.breaker_open.labels(self.stage).set(0)

    def failure(self, trip: bool = False) -> None:
        """One failed attempt; `trip` opens the breaker whatever the count."""
        with self._lock:
            self.count += 1
            if trip or self.probing or self.count >= self.failures:
                self.opened_at, self.probing = self.clock(), False
                metrics.breaker_open.labels(self.stage).set(1)


class Client:
    """Thread-safe; one per worker process, made in `main()` and injected into the stage."""

    def __init__(
        self, settings: LLM, stage: str, backlog: Callable[[], bool] | None = None, lora: list[dict] | None = None
    ) -> None:
        self.settings, self.stage = settings, stage
        self.lora = lora  # llama.cpp's per-request adapter field (`llmserver.lora_field`), sent on every call
        self.base_url = settings.llm_base_url.rstrip("/")
        self.breaker = Breaker(stage, settings.llm_breaker_failures, settings.llm_breaker_reset_s)
        self.backlog = backlog or (lambda: False)  # whether jobs wait on the stage's queue
        self._inflight = 0
        self._count_lock = threading.Lock()
        timeout = httpx.Timeout(settings.llm_timeout_s, connect=min(5.0, settings.llm_timeout_s))
        n = settings.llm_concurrency
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        key = settings.llm_api_key.get_secret_value()
        self.http = httpx.Client(timeout=timeout, limits=limits, headers={"Authorization": f"Bearer {key}"})

    def close(self) -> None:
        self.http.close()

    def chat(
        self,
        messages: list[dict],
        *,
        model: str,
        max_tokens: int,
        schema: dict | None = None,
        name: str = "reply",
        temperature: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        sampler: dict | None = None,
    ) -> Reply:
        """`sampler`: the server's own sampling fields (llama.cpp's DRY), sent as they are."""
        body: dict = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.settings.llm_temperature if temperature is None else temperature,
            "top_p": self.settings.llm_top_p,
        }
        if stop:
            body["stop"] = stop
        if seed is not None:
            body["seed"] = seed
        if self.lora is not None:
            body["lora"] = self.lora
        body.update(sampler or {})
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True},
            }
        with self._count_lock:
            self._inflight += 1
        try:
            return self._attempts(body)
        finally:
            with self._count_lock:
                self._inflight -= 1

    def _waiting(self) -> bool:
        with self._count_lock:
            others = self._inflight > 1
        try:
            return others or self.backlog()
        except Exception:  # the broker being away is no reason to fail the call
            return others

    def _attempts(self, body: dict) -> Reply:
        deadline = time.monotonic() + self.settings.llm_deadline_s
        last: Exception | None = None
        for attempt in range(self.settings.llm_retries + 1):
            if not self.breaker.allow():
                metrics.llm_breaker_rejections.labels(self.stage).inc()
                raise Unavailable(f"circuit breaker open for {self.base_url}") from last
            if attempt:
                time.sleep(min(self.settings.llm_backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()),
                               max(0.0, deadline - time.monotonic())))  # fmt: skip
            left = deadline - time.monotonic()
            if left <= 0.05:
                break
            started = time.perf_counter()
            try:
                resp = self.http.post(
                    f"{self.base_url}/chat/completions", json=body, timeout=_timeout(left, self.settings)
                )
            except httpx.TransportError as exc:  # connect errors and timeouts
                last = exc
                self._failed(
                    started, type(exc).__name__, trip=isinstance(exc, httpx.TimeoutException) and self._waiting()
                )
                continue
            if resp.status_code in RETRY_STATUS:
                last = Unavailable(f"{resp.status_code} from {self.base_url}")
                self._failed(started, f"http_{resp.status_code}")
                continue
            if resp.status_code >= 400:
                # The server is alive; the request is wrong. Not the breaker's business.
                self.breaker.success()
                metrics.llm_latency.labels(self.stage, "rejected").observe(time.perf_counter() - started)
                raise LLMError(f"{resp.status_code} from {self.base_url}: {resp.text[:200]}")
            self.breaker.success()
            return self._reply(resp, started)
        raise Unavailable(f"{self.base_url} failed within {self.settings.llm_deadline_s:.1f} s: {last}") from last

    def _failed(self, started: float, outcome: str, trip: bool = False) -> None:
        metrics.llm_latency.labels(self.stage, "error").observe(time.perf_counter() - started)
        metrics.errors.labels(self.stage, f"llm_{outcome}").inc()
        self.breaker.failure(trip)

    def _reply(self, resp: httpx.Response, started: float) -> Reply:
        latency = time.perf_counter() - started
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            metrics.llm_latency.labels(self.stage, "bad_reply").observe(latency)
            raise LLMError(f"not a chat completion: {resp.text[:200]}") from exc
        usage = data.get("usage") or {}
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        metrics.llm_tokens.labels(self.stage, "prompt").inc(prompt)
        metrics.llm_tokens.labels(self.stage, "completion").inc(completion)
        metrics.llm_latency.labels(self.stage, "ok").observe(latency)
        return Reply(text, choice.get("finish_reason") or "", prompt, completion, latency, str(data.get("model", "")))


def _timeout(left: float, settings: LLM) -> httpx.Timeout:
    """This attempt's timeout: the read timeout, or what is left of the call's deadline."""
    read = min(settings.llm_timeout_s, left)
    return httpx.Timeout(read, connect=min(5.0, read))


# -- prompts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """A versioned template file: `[system]` and `[user]` sections with `$name` placeholders.

    `template_id` "narrator/v1" is the file `prompt_narrator_v1.txt` in the stage's package.
    """

    template_id: str
    system: Template
    user: Template

    @classmethod
    def load(cls, package: str, template_id: str) -> Prompt:
        name = "prompt_" + template_id.replace("/", "_") + ".txt"
        raw = files(package).joinpath(name).read_text(encoding="utf-8")
        head, sep, user = raw.partition("[user]\n")
        if not sep or not head.startswith("[system]\n"):
            raise ValueError(f"{name}: needs a [system] section, then a [user] section")
        return cls(template_id, Template(head.removeprefix("[system]\n").strip()), Template(user.strip()))

    def messages(self, **values: str) -> list[dict]:
        return [
            {"role": "system", "content": self.system.substitute(values)},
            {"role": "user", "content": self.user.substitute(values)},
        ]


def clean(text: str, cap: int = TEXT_CAP) -> str:
    """One line of printable text: control and format characters gone, whitespace collapsed."""
    kept = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text)
    return " ".join(kept.split())[:cap]


def data_block(texts: list[PlayerText]) -> str:
    """Player-written text as inert data: one JSON array inside <player_text> delimiters."""
    items = [{"kind": t.kind, "text": clean(t.text)} for t in texts]
    items = [i for i in items if i["text"]]
    encoded = json.dumps(items, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e")
    return f"<player_text>{encoded}</player_text>"
