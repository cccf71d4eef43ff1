"""Grounding: a narrative naming what its scene lacks is refused (issue 14's quoted failure)."""

import pytest
from llm_fixtures import scenes

from metabgm.demo import SCENES
from metabgm_ingest.characterize import characterize
from metabgm_narrator.grounding import ungrounded
from metabgm_narrator.narrate import fallback, guard
from metabgm_shared.contracts import SceneWindow


def demo(name: str):
    return characterize(SceneWindow(server_id="s", player_id="p", **SCENES[name]))


def test_the_quoted_failure_is_refused():
    end = demo("the End")  # among endermen in the End, nobody hitting the player
    quoted = "You are attacked by an unknown 2. 5 min. attackers."
    assert guard(quoted, inputs=[end.text], player_texts=[], scene=end) is None


@pytest.mark.parametrize(
    ("scene", "text", "word"),
    [
        ("the End", "Zombies close in around you in the pale light.", "zombies"),  # a mob it lacks
        ("calm day in the plains", "You cross the hot desert sands alone.", "desert"),  # a biome
        ("dusk in a forest", "You feel the heat of the Nether on your face.", "Nether"),  # a dimension
        ("calm day in the plains", "Cold rain soaks your shoulders as you walk.", "rain"),  # the weather
        ("deep in a cave", "You are ambushed in the dark passages.", "ambushed"),  # an attack
        ("swimming in the ocean", "You swim past an unknown shape below you.", "unknown"),  # a placeholder
    ],
)
def test_ungrounded_names_are_refused(scene, text, word):
    s = demo(scene)
    assert guard(text, inputs=[s.text], player_texts=[]) is not None  # fine prose without the scene...
    assert ungrounded(text, s) == word
    assert guard(text, inputs=[s.text], player_texts=[], scene=s) is None  # ...refused against it


@pytest.mark.parametrize(
    ("scene", "text"),
    [
        ("the End", "You drift across the pale islands of the End while endermen stare past you."),
        (
            "night ambush at low health",
            "Zombies and a skeleton drive you back between dark trees. You are nearly spent.",
        ),
        ("thunderstorm over the hills", "Lightning splits the sky above the hills, and you hunch against the storm."),
        ("the Nether", "A piglin watches you pick your way across the Nether wastes."),
        ("deep in a cave", "You feel your way through the cave, dripstone hanging over your head."),
        ("swimming in the ocean", "You swim out over the open sea with slow strokes."),
    ],
)
def test_grounded_prose_is_kept(scene, text):
    s = demo(scene)
    assert guard(text, inputs=[s.text], player_texts=[], scene=s) == text


def test_the_rules_are_grounded():
    for s in scenes(50):
        assert ungrounded(fallback(s), s) is None, (s.text, fallback(s))
