"""Secrets on disk are their owner's alone from the moment they are written."""

import json
import os
import stat

import pytest

from metabgm_shared.settings import Secrets


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_files_are_private_whatever_the_umask(tmp_path, monkeypatch):
    for name in ("METABGM_COLLECTOR_TOKEN", "METABGM_MOD_KEY", "METABGM_LINK_SECRET", "METABGM_COLLECTOR_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    old = os.umask(0o022)  # files made by a plain write would be world-readable
    try:
        secrets = Secrets(tmp_path)
        secrets.values  # noqa: B018 - makes secrets.json
        secrets.add_collector("alpha")
    finally:
        os.umask(old)
    assert mode(secrets.path) == 0o600 and mode(secrets.collectors_path) == 0o600
    secrets.collectors_path.chmod(0o644)  # made readable by hand: re-binding makes it private again
    secrets.add_collector("alpha", ("s1",))
    assert mode(secrets.collectors_path) == 0o600
    assert secrets.collector_servers("alpha") == ("s1",)


def test_a_malformed_collector_list_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("METABGM_COLLECTOR_TOKENS", raising=False)
    secrets = Secrets(tmp_path)
    secrets.collectors_path.write_text(json.dumps({"alpha": {"servers": ["s1"]}}))  # no token
    with pytest.raises(RuntimeError, match="collectors.json: alpha"):
        secrets.collectors()
    secrets.collectors_path.unlink()
    monkeypatch.setenv("METABGM_COLLECTOR_TOKENS", ":" + "t" * 20)  # a token with no name
    with pytest.raises(RuntimeError, match="without a name"):
        Secrets(tmp_path).collectors()
