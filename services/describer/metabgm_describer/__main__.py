from metabgm_shared.settings import Describer
from metabgm_shared.worker import serve_llm_stage

from .describe import DescribeStage


def main() -> None:
    serve_llm_stage(Describer(), "describe", lambda rt, client: DescribeStage(rt.settings, rt.players, client))


if __name__ == "__main__":
    main()
