"""Operator commands that read the running instance: the URLs they print follow the public URL."""

import subprocess
import sys

from metabgm.local import Stack, free_port


def run(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "metabgm.cli", *args], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def test_mod_url_and_link_use_the_public_url(tmp_path):
    public = "https://music.example.net"
    with Stack(tmp_path / "inst", port=free_port(), stages=("ingest",), env={"METABGM_PUBLIC_URL": public}) as stack:
        data_dir = str(stack.data_dir)
        assert run("mod-url", "--player", "alex", "--data-dir", data_dir).startswith(f"{public}/mod/alex~")
        assert run("link", "alex", "--data-dir", data_dir).startswith(f"{public}/listen/")


def test_mod_url_takes_a_player_or_shared_not_both(tmp_path):
    both = subprocess.run([sys.executable, "-m", "metabgm.cli", "mod-url", "--player", "alex", "--shared",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    assert both.returncode == 2 and "one of them" in both.stderr  # not a per-player URL that says nothing of --shared
