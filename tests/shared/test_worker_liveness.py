"""Worker liveness follows the consumer's progress: /livez on the metrics port turns 503 once a
task has run past its deadline (a consumer wedged in a hung call), and 200 again when it ends.
The metrics endpoint alone answers all the same from its own thread, so it could not tell."""

import threading

import httpx

from metabgm.local import free_port
from metabgm_shared.worker import Progress, serve_metrics, watchdog


def test_livez_turns_503_while_a_task_is_past_its_deadline() -> None:
    now = [1000.0]
    progress = Progress(deadline_s=60, clock=lambda: now[0])
    port = free_port()
    server = serve_metrics(port, progress, "127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{url}/livez", timeout=5).status_code == 200  # idle is alive
        assert "metabgm_" in httpx.get(f"{url}/metrics", timeout=5).text
        entered, release = threading.Event(), threading.Event()

        def wedged() -> None:
            with progress.task():
                entered.set()
                release.wait(10)

        worker = threading.Thread(target=wedged)
        worker.start()
        entered.wait(5)
        now[0] += 30
        assert httpx.get(f"{url}/livez", timeout=5).status_code == 200  # busy, within the deadline
        now[0] += 31
        r = httpx.get(f"{url}/livez", timeout=5)
        assert r.status_code == 503 and "61 s" in r.text
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200  # what the old probe saw
        release.set()
        worker.join(5)
        assert httpx.get(f"{url}/livez", timeout=5).status_code == 200
    finally:
        release.set()
        server.shutdown()


def test_a_real_worker_serves_livez(spawn_worker) -> None:
    port = free_port()
    spawn_worker("metabgm_ingest", "ingest", METABGM_METRICS_PORT=str(port))
    r = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)
    assert r.status_code == 200 and "deadline 300 s" in r.text


def test_the_watchdog_ends_a_wedged_worker_so_it_is_restarted() -> None:
    """Compose restarts a container that exits, not one that is unhealthy: the worker ends itself."""
    now = [0.0]
    progress = Progress(deadline_s=60, clock=lambda: now[0])
    exited: list[int] = []
    done = threading.Event()

    def exit(code: int) -> None:
        exited.append(code)
        done.set()

    release = threading.Event()

    def wedged() -> None:
        with progress.task():
            release.wait(10)

    worker = threading.Thread(target=wedged)
    worker.start()
    try:
        watchdog(progress, every_s=0.01, exit=exit)
        now[0] = 59
        assert not done.wait(0.2)  # busy within the deadline: left alone
        now[0] = 61
        assert done.wait(5) and exited == [70]
    finally:
        release.set()
        worker.join(5)
