"""`metabgm link`, `mod-url` and `status` against a running deployment whose secrets are not in
the local data dir (as on compose or Kubernetes): the links come from the gateway, signed with
its secrets and on its public URL, and the gateway's own player page and mod endpoint accept
them; no local secret is ever made. Without --url and no local instance, they refuse."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from metabgm.local import Stack, free_port, wait_until
from metabgm_gateway.deps import Links
from metabgm_shared.settings import Secrets, new_token


def metabgm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metabgm.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_link_and_mod_url_come_from_the_deployment(tmp_path: Path) -> None:
    port, ops = free_port(), new_token()
    public = f"http://localhost:{port}"  # what players are told; not the address we ask
    # An operator's collector bound to the mod's server (`default`): it may mint its links.
    env = {"METABGM_PUBLIC_URL": public, "METABGM_COLLECTOR_TOKENS": f"ops:{ops}:default"}
    stack = Stack(data_dir=tmp_path / "deployment", port=port, stages=("ingest",), env=env).start()
    elsewhere = tmp_path / "operator-laptop"  # a data dir with other secrets, which must not sign anything
    local = Secrets(elsewhere)
    local.values  # noqa: B018 - made now, compared after
    before = local.path.read_text()
    try:
        url = f"http://127.0.0.1:{port}"
        out = metabgm("link", "alex", "--url", url, "--token", ops, "--data-dir", str(elsewhere))
        assert out.returncode == 0, out.stderr
        link = out.stdout.strip()
        assert link.startswith(f"{public}/listen/")
        page = httpx.get(link, timeout=10)
        assert page.status_code == 200 and "player.js" in page.text  # the gateway accepts its link
        forged = Links.from_secret(local.link_secret, 600).url(public, "default", "alex")
        assert 400 <= httpx.get(forged, timeout=10).status_code < 500  # what the old command printed

        out = metabgm("mod-url", "--player", "alex", "--url", url, "--token", ops, "--data-dir", str(elsewhere))
        assert out.returncode == 0, out.stderr
        mod = out.stdout.strip()
        assert mod.startswith(f"{public}/mod/alex~")
        added = httpx.post(f"{mod}/api/input/add-player", json={"PlayerName": "alex"}, timeout=10)
        assert added.json()["state"] == 1, added.text

        wrong = metabgm("link", "alex", "--url", url, "--token", "x" * 24, "--data-dir", str(elsewhere))
        assert wrong.returncode == 1 and "refused the token" in wrong.stderr and wrong.stdout == ""

        out = metabgm("status", "--url", url)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "ingest: ok." in out.stdout and "Players get music." in out.stdout
    finally:
        stack.stop()
    assert local.path.read_text() == before and sorted(p.name for p in elsewhere.iterdir()) == ["secrets.json"]
    out = metabgm("status", "--url", url)
    assert out.returncode == 1 and "nothing answers" in out.stdout


def test_without_an_instance_or_url_nothing_is_made_up(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    for args in (["link", "alex"], ["mod-url", "--player", "alex"], ["status"]):
        out = metabgm(*args, "--data-dir", str(empty))
        assert out.returncode != 0 and "--url" in out.stderr, (args, out.stderr)
        assert "http://" not in out.stdout
    assert not empty.exists()


def test_status_names_the_missing_stage(tmp_path: Path) -> None:
    env = {"METABGM_HEARTBEAT_S": "0.3"}  # a dead worker's beat lapses in about a second
    stack = Stack(data_dir=tmp_path / "d", port=free_port(), stages=("ingest", "synth"), env=env).start()
    try:
        out = metabgm("status", "--data-dir", str(stack.data_dir))  # the local instance's URL
        assert out.returncode == 0 and "synth: ok." in out.stdout, out.stdout
        synth = stack.procs["synth"]
        os.killpg(synth.pid, signal.SIGKILL)
        synth.wait(10)
        wait_until(lambda: httpx.get(f"{stack.base_url}/healthz", timeout=5).status_code == 503, 30, "synth lapses")
        out = metabgm("status", "--url", stack.base_url)
        assert out.returncode == 1
        assert "synth: DOWN" in out.stdout and "docker compose logs --tail 50 synth" in out.stdout
        assert "ingest: ok." in out.stdout and "Players do NOT get new music" in out.stdout
        # The same, as the alert rules see it.
        scraped = httpx.get(f"{stack.base_url}/metrics", timeout=10).text
        assert 'metabgm_stage_live_workers{stage="synth"} 0.0' in scraped
        assert 'metabgm_stage_live_workers{stage="ingest"} 1.0' in scraped
        assert 'metabgm_stage_stalled{stage="ingest"} 0.0' in scraped
    finally:
        stack.stop()
