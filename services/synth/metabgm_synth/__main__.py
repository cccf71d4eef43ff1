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
    if settings.renderer == "musicgen":
        # Several tasks in flight so the batcher can fill one generate call with them.
        serve(rt, "synth", SynthStage(settings, rt.players, renderer), pool="threads", concurrency=renderer.batch)
    else:
        # Threads, not prefork: the metrics observed in tasks must reach this process's /metrics.
        serve(rt, "synth", SynthStage(settings, rt.players, renderer), pool="threads", concurrency=settings.concurrency)


if __name__ == "__main__":
    main()
