import pytest

from metabgm_shared.settings import Secrets


@pytest.fixture
def ingest_stack(make_stack):
    return make_stack(stages=("ingest",))


@pytest.fixture
def mod_base(ingest_stack) -> str:
    return f"{ingest_stack.base_url}/mod/{Secrets(ingest_stack.data_dir).mod_key}"


@pytest.fixture
def collector_headers(ingest_stack) -> dict:
    return {"Authorization": f"Bearer {Secrets(ingest_stack.data_dir).collector_token}"}
