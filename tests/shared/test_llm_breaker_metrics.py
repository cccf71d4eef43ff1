"""The LLM latency histogram holds requests that were sent; the open breaker's fast-fails are
counted apart. Before, each refusal was observed as a 0 s request, so the latency panel showed
the LLM at its fastest exactly while it was down."""

import pytest
from llm_fixtures import closed_url
from prometheus_client import REGISTRY

from metabgm_shared.llm import Client, Unavailable
from metabgm_shared.settings import LLM

HELLO = [{"role": "user", "content": "Name one colour."}]
OUTCOMES = ("ok", "error", "rejected", "bad_reply", "breaker_open")


def sample(name: str, stage: str) -> float:
    return sum(REGISTRY.get_sample_value(name, {"stage": stage, "outcome": o}) or 0.0 for o in OUTCOMES)


def test_breaker_refusals_are_counted_apart_from_request_latency() -> None:
    stage = "breaker-metrics"
    settings = LLM(redis_url="redis://unused", llm_base_url=closed_url(), llm_retries=0, llm_breaker_failures=1)
    client = Client(settings, stage)
    with pytest.raises(Unavailable):  # one real attempt: refused connection, opens the breaker
        client.chat(HELLO, model="m", max_tokens=4)
    assert client.breaker.state == "open"
    assert sample("metabgm_llm_request_seconds_count", stage) == 1
    for _ in range(5):
        with pytest.raises(Unavailable, match="breaker open"):
            client.chat(HELLO, model="m", max_tokens=4)
    assert sample("metabgm_llm_request_seconds_count", stage) == 1  # no request, no latency
    assert sample("metabgm_llm_request_seconds_sum", stage) > 0
    assert REGISTRY.get_sample_value("metabgm_llm_breaker_rejections_total", {"stage": stage}) == 5
