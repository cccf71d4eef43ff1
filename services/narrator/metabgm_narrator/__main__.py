from metabgm_shared.llm import Client
from metabgm_shared.settings import Narrator
from metabgm_shared.worker import runtime, serve

from .narrate import NarrateStage


def main() -> None:
    rt = runtime(Narrator())
    client = Client(rt.settings, "narrate")
    # An LLM call is ~all waiting on I/O, so one worker keeps `llm_concurrency` in flight: vLLM
    # batches them (many players per forward pass), where a few threads would leave it idle.
    try:
        serve(rt, "narrate", NarrateStage(rt.settings, rt.players, client), concurrency=rt.settings.llm_concurrency)
    finally:
        client.close()


if __name__ == "__main__":
    main()
