from metabgm_shared.settings import Ingest
from metabgm_shared.worker import runtime, serve

from .stage import IngestStage


def main() -> None:
    rt = runtime(Ingest())
    serve(rt, "ingest", IngestStage(rt.settings, rt.players, rt.pipeline.ladder),
          concurrency=rt.settings.ingest_concurrency)  # fmt: skip


if __name__ == "__main__":
    main()
