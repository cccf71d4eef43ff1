from concurrent.futures import ThreadPoolExecutor

from metabgm_shared.settings import Synth
from metabgm_shared.worker import runtime, serve

from .audio import check_formats
from .render import Renderer
from .stage import SynthStage


def make_renderer(settings: Synth) -> Renderer:
    if settings.renderer == "musicgen":
        from .musicgen import MusicgenRenderer

        return MusicgenRenderer.from_settings(settings)
    from .cpu import CpuRenderer

    return CpuRenderer(settings.soundfont)


def main() -> None:
    check_formats()
    settings = Synth()
    rt = runtime(settings)
    renderer = make_renderer(settings)
    # MusicGen: as many tasks in flight as one generate call batches; CPU: one render per core.
    concurrency = renderer.batch if settings.renderer == "musicgen" else settings.concurrency
    # A cue's further sections render on their own threads, behind the first sections players wait for.
    sections = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="sections")
    serve(rt, "synth", SynthStage(settings, rt.players, renderer, sections), concurrency=concurrency)


if __name__ == "__main__":
    main()
