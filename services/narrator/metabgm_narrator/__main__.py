from metabgm_shared.settings import Narrator
from metabgm_shared.worker import serve_llm_stage

from .narrate import NarrateStage


def main() -> None:
    serve_llm_stage(Narrator(), "narrate", lambda rt, client: NarrateStage(rt.settings, rt.players, client))


if __name__ == "__main__":
    main()
