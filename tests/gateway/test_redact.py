import time

import httpx

from metabgm_gateway.redact import redact
from metabgm_shared.settings import Secrets


def test_redact():
    assert redact("/mod/s3cr3t/api/input/add-player") == "/mod/***/api/input/add-player"
    assert redact("/listen/abc.def.ghi/events") == "/listen/***/events"
    assert redact("/clips/0123abcd.ogg?t=tok.en&x=1") == "/clips/0123abcd.ogg?t=***&x=1"
    assert redact("/v1/windows") == "/v1/windows"


def test_the_running_gateway_logs_no_credentials(ingest_stack, mod_base):
    key = Secrets(ingest_stack.data_dir).mod_key
    httpx.post(f"{mod_base}/api/input/add-player", json={"PlayerName": "alex"})
    httpx.get(f"{ingest_stack.base_url}/listen/some.secret.token")
    time.sleep(0.3)
    log = (ingest_stack.data_dir / "logs" / "gateway.log").read_text()
    assert "/mod/***/api/input/add-player" in log
    assert key not in log and "some.secret.token" not in log
