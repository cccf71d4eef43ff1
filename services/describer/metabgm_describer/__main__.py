from metabgm_shared.llm import Client
from metabgm_shared.settings import Describer
from metabgm_shared.worker import runtime, serve

from .describe import DescribeStage


def main() -> None:
    rt = runtime(Describer())
    client = Client(rt.settings, "describe")
    # An LLM call is ~all waiting on I/O, so one worker keeps `llm_concurrency` in flight: vLLM
    # batches them (many players per forward pass), where a few threads would leave it idle.
    try:
        serve(rt, "describe", DescribeStage(rt.settings, rt.players, client), concurrency=rt.settings.llm_concurrency)
    finally:
        client.close()


if __name__ == "__main__":
    main()
