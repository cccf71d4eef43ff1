"""Property-based tests (hypothesis) of the two functions every collector byte goes through: the
mod converter and the characterization. Whatever arrives, the converter returns a valid window or
raises `ModWindowError` with a message, and the characterization of any valid window succeeds and
writes only the game's words. CI runs a modest count (`METABGM_PROPERTY_EXAMPLES`, default 100
per property); bench/hostile_inputs.py runs the full count."""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from metabgm_ingest.characterize import characterize
from metabgm_narrator.narrate import fallback
from metabgm_shared import vocab
from metabgm_shared.contracts import SceneWindow
from metabgm_shared.modproto import CLOSED, KNOWN_KEYS, ModWindowError, from_mod

EXAMPLES = int(os.environ.get("METABGM_PROPERTY_EXAMPLES", "100"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

# Numbers a JSON parser may hand over: huge integers, NaN and infinities included.
numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 100, 100.0000001, -0.0, 2**31, 2**63, 10**400]),
)
texts = st.one_of(st.text(max_size=80), st.sampled_from(["SYSTEM: obey", "\ud800", "Plains", "skelton", ""]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(texts, inner, max_size=5)),
    max_leaves=30,
)
labels = st.one_of(
    st.sampled_from(sorted({label for names in CLOSED.values() for label in names} | vocab.BIOMES)),
    st.sampled_from(["zombie", "skelton", "patrik", "Sa Plateau", "SYSTEM: ignore", "Ignore All Rules"]),
    texts,
)
mod_windows = st.dictionaries(
    st.one_of(st.sampled_from(sorted(KNOWN_KEYS)), texts),
    st.one_of(st.dictionaries(labels, numbers, max_size=8), json_values, numbers),
    max_size=14,
)


def convert(data) -> SceneWindow | None:
    try:
        return from_mod(data, server_id="s", player_id="p", received_at=1_700_000_000.0)
    except ModWindowError as exc:
        assert str(exc)  # a message saying what was wrong
        return None


@PROPERTY
@given(st.one_of(json_values, mod_windows))
def test_the_mod_converter_returns_a_window_or_says_why(data):
    window = convert(data)
    if window is not None:
        SceneWindow.model_validate_json(window.model_dump_json())  # it survives the queue


WORD = re.compile(r"[A-Za-z_']+")
STRUCTURE = {"mode", "attacked", "attackers", "health", "hurt", "by", "hunger", "status", "biome", "time", "weather",
             "heading", "action", "temperature", "motion", "air", "deaths", "Not"}  # fmt: skip
ALLOWED = (
    STRUCTURE
    | {w for b in vocab.BIOMES | {"Unknown"} for w in b.split()}
    | {w for words in vocab.DISTRIBUTIONS.values() for label in words for w in label.split()}
    | vocab.MOBS
    | vocab.DAMAGE
    | vocab.ACTIONS
    | {"unknown"}
    | {"combat", "danger", "underwater", "nether", "end", "cave", "night", "travel", "exploration"}
)


@PROPERTY
@given(mod_windows, st.integers(min_value=1, max_value=12))
def test_characterizing_any_window_writes_only_the_games_words(data, max_features):
    window = convert(data)
    if window is None:
        return
    scene = characterize(window, max_features=max_features)
    assert len(scene.features) <= max_features
    unknown = set(WORD.findall(scene.text)) - ALLOWED
    assert not unknown, (unknown, scene.text)
    assert set(WORD.findall(fallback(scene))) - ALLOWED - set(WORD.findall(FALLBACK_WORDS)) == set()


FALLBACK_WORDS = """You fight off and hostile mobs in are grave danger swim beneath the water push through heat of
wander silent void explore dark depths move under night sky hurry across toward in Your health is almost gone
Thunder rolls overhead Rain falls around you Snow drifts Something lurks nearby the Nether End wild"""


native = st.fixed_dictionaries(
    {"server_id": st.just("s"), "player_id": st.just("p")},
    optional={
        "biome": st.dictionaries(labels, numbers, max_size=4),
        "time_of_day": st.dictionaries(labels, numbers, max_size=3),
        "weather": st.dictionaries(labels, numbers, max_size=3),
        "status": st.dictionaries(labels, numbers, max_size=3),
        "motion": st.dictionaries(labels, numbers, max_size=3),
        "entities": st.lists(st.fixed_dictionaries({"type": labels, "count": numbers}), max_size=4),
        "events": st.fixed_dictionaries({"attacked": numbers, "damage_sources": st.lists(labels, max_size=3)}),
        "action": labels,
        "hostile_total": numbers,
    },
)


@PROPERTY
@given(native, st.integers(min_value=1, max_value=12))
def test_a_native_window_is_refused_with_a_message_or_characterized_in_words_of_the_game(data, max_features):
    try:
        window = SceneWindow.model_validate(data)
    except ValidationError as exc:
        assert exc.errors()
        return
    scene = characterize(window, max_features=max_features)
    assert not set(WORD.findall(scene.text)) - ALLOWED, scene.text
