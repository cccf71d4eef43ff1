"""The describer stage, the paper's second LLM step: a narrative (and its scene) becomes a music
description, a caption for a text-to-music model plus the attributes the synth plays.

Precedence, lowest to highest:
1. The musical prior (`metabgm_shared.prior`) of the characterized scene: always complete and
   sensible, and it sets the bounds (tempo +- `prior_tempo_margin_bpm`, intensity +-
   `prior_intensity_margin`, key within a fifth, music mode among the mood's, instruments from
   the place's palette).
2. The LLM's schema-constrained answer refines the prior inside those bounds. The bounds are in
   the schema, so constrained decoding keeps to them; a server that ignores the schema is
   clamped here all the same (source "mixed" when anything had to be clamped or replaced).
3. The player's preferences, applied last by rules: `avoid` removes instruments (or a genre's
   instruments), `favour` adds them, `intensity_cap` caps intensity. The compact templates show
   them to the LLM (`likes`), and the bounds it sees are narrowed to them first (`prior.preferred`:
   no avoided instrument in the palette, the intensity up to the cap), so it is asked only for
   music they keep and its caption does not name what will not play.
4. A listener's skip (`decision.skip`) moves to another key and music mode the bounds allow (one at
   most a step away on the circle of fifths when the bounds have one, per the prior's rule 6) and
   to palette instruments that were not playing, before the preferences.
5. The transition follows the change decision: no previous music or a skip -> crossfade; an urgent change
   into combat or danger -> cut; any other urgent change -> crossfade; the same music mode,
   tempo within 8 bpm and intensity within 0.15 of the previous -> continue; else crossfade.
6. Continuity (the prior's rule 6): a non-urgent change moves the key at most one step on the
   circle of fifths and the tempo at most 12 % from the music playing; an urgent one may jump.
   The bounds the LLM sees (prompt and schema) are narrowed to it first (`prior.continued`, not
   for a skip), so it is asked only for a tempo and key the rule keeps; the rule still runs after.
7. The caption is rebuilt from the final attributes (and the LLM's mood words when they are
   plain words no player wrote), so it never contradicts them. With a compact template
   (`describer/compact1`, for the fine-tuned adapters) the LLM writes its own caption first; it
   is kept when it names the tempo, key and mode it answered and no word only a player wrote, and
   still says what plays: the instruments it names are the ones played, its intensity level and
   mood are unchanged, and a genre the player favours is named (the LLM sees the preferences and
   mostly follows them). The tempo, key and mode the rules moved (continuity, a skip, a held key)
   are restated in it (`restated`); else it is rebuilt.

When the LLM is unavailable or answers nonsense, the description is the prior's (source "prior",
counted in metabgm_llm_fallbacks_total). `direct` is the one-stage variant (scene -> description
in one call, template "direct/v1") used by the evaluation to compare against the two stages.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace

from metabgm_shared import metrics
from metabgm_shared.contracts import (
    CharacterizedScene,
    Decision,
    Job,
    Mode,
    MusicDescription,
    MusicMode,
    Narrative,
    Preferences,
    Transition,
)
from metabgm_shared.instruments import NAMES
from metabgm_shared.llm import Client, LLMError, Prompt, clean, data_block
from metabgm_shared.prior import (
    GENRES,
    Prior,
    avoided,
    clamp,
    continued,
    continuity,
    favoured,
    fifths_distance,
    level,
    preferred,
    prior,
)
from metabgm_shared.settings import Describer
from metabgm_shared.stages import LLM_RUNGS
from metabgm_shared.state import Players

MOOD_WORD = re.compile(r"^[a-z]{3,14}$")


def schema(p: Prior, with_caption: bool = False) -> dict:
    b = p.bounds
    out = {
        "type": "object",
        "properties": {
            "mood": {"type": "string", "minLength": 3, "maxLength": 40},
            "tempo_bpm": {"type": "integer", "minimum": b.tempo[0], "maximum": b.tempo[1]},
            "key": {"enum": list(b.keys)},
            "mode": {"enum": [m.value for m in b.modes]},
            "instruments": {"type": "array", "items": {"enum": list(b.palette)}, "minItems": 1, "maxItems": 4},
            "intensity": {"type": "integer", "minimum": round(b.intensity[0] * 100),
                          "maximum": round(b.intensity[1] * 100)},
        },
        "required": ["mood", "tempo_bpm", "key", "mode", "instruments", "intensity"],
        "additionalProperties": False,
    }  # fmt: skip
    if with_caption:  # the compact templates ask for the caption first
        out["properties"] = {"caption": {"type": "string", "minLength": 20, "maxLength": 300}, **out["properties"]}
        out["required"] = ["caption", *out["required"]]
    return out


# Words a caption needs whoever else wrote them: instruments, music modes, genres, "bpm".
MUSIC_WORDS = {w for name in (*NAMES, *MusicMode, *GENRES, "bpm") for w in re.findall(r"[a-z]+", name)}


def asks_caption(prompt: Prompt) -> bool:
    """The compact templates (`describer/compact1`) ask the model for its own caption."""
    return prompt.template_id.split("/")[-1].startswith("compact")


def own_caption(answer: dict, attrs: dict, scene: CharacterizedScene) -> str | None:
    """The LLM's caption, when it names the tempo, key and mode it answered and no word that only
    a player wrote; else None (the caption is then rebuilt from the attributes)."""
    text = answer.get("caption")
    if not isinstance(text, str):
        return None
    text = clean(text, cap=400)
    known = set(re.findall(r"[a-z]+", scene.text.lower())) | MUSIC_WORDS
    written = {w for t in scene.texts for w in re.findall(r"[a-z]+", t.text.lower()) if len(w) >= 4} - known
    if len(text) < 20 or written & set(re.findall(r"[a-z]+", text.lower())):
        return None
    if f"{attrs['tempo_bpm']} BPM" not in text or f"{attrs['key']} {attrs['mode']}" not in text:
        return None
    return text


def named_instruments(text: str) -> set[str]:
    """The instruments a caption names ("pan flute" is not also a "flute")."""
    text, found = text.lower(), set()
    for name in sorted(NAMES, key=len, reverse=True):
        text, n = re.subn(rf"\b{name.replace('_', ' ')}s?\b", " ", text)
        if n:
            found.add(name)
    return found


def restated(own: tuple[str | None, dict] | None, attrs: dict, genre: str, prior_genre: str) -> str | None:
    """The LLM's caption for the music played: as written, or with its tempo, key and mode restated
    where the rules moved them after it answered (continuity, a skip, a refinement's held key and
    tempo). None when it no longer says what plays: it names an instrument that does not play (one
    the player avoids), another intensity level or mood, or not the genre the player favours."""
    if not own or not own[0]:
        return None
    text, said = own
    if not named_instruments(text) <= set(attrs["instruments"]) or said["mood"] != attrs["mood"]:
        return None
    if level(said["intensity"]) != level(attrs["intensity"]):
        return None
    if genre != prior_genre and genre.lower() not in text.lower():
        return None
    text = text.replace(f"{said['tempo_bpm']} BPM", f"{attrs['tempo_bpm']} BPM")
    return text.replace(f"{said['key']} {said['mode']}", f"{attrs['key']} {attrs['mode']}")


def refine(p: Prior, answer: dict, player_texts: list[str]) -> tuple[dict, bool]:
    """The prior moved by the LLM's answer, inside the bounds. Returns (attributes, clamped)."""
    b, clamped = p.bounds, False

    def pick(value, allowed, default):
        nonlocal clamped
        if value in allowed:
            return value
        clamped = True
        return default

    tempo = answer.get("tempo_bpm")
    if isinstance(tempo, int | float) and not isinstance(tempo, bool):
        t = int(round(clamp(tempo, *b.tempo)))
        clamped |= t != tempo
    else:
        t, clamped = p.tempo_bpm, True
    said = answer.get("intensity")
    if isinstance(said, int | float) and not isinstance(said, bool):
        i = round(clamp(said / 100, *b.intensity), 2)
        clamped |= abs(i - said / 100) > 1e-9
    else:
        i, clamped = p.intensity, True
    raw = answer.get("instruments")
    instruments = list(dict.fromkeys(x for x in raw if x in b.palette))[:6] if isinstance(raw, list) else []
    if not instruments or any(x not in b.palette for x in raw):  # an instrument named twice is no clamp
        clamped = True
    written = {w for t_ in player_texts for w in re.findall(r"[a-z]+", t_.lower())}
    mood_raw = answer.get("mood")
    found = re.findall(r"[a-z]+", mood_raw.lower()) if isinstance(mood_raw, str) else []
    mood = [w for w in found if MOOD_WORD.match(w)]
    mood = [w for w in dict.fromkeys(mood) if w not in written and w not in ("and", "the", "with")][:3]
    return {
        "tempo_bpm": t,
        "key": pick(answer.get("key"), b.keys, p.key),
        "mode": pick(answer.get("mode"), [m.value for m in b.modes], p.mode.value),
        "instruments": instruments or list(p.instruments),
        "intensity": i,
        "mood": mood or list(p.mood),
    }, clamped  # fmt: skip


def apply_preferences(attrs: dict, genre: str, prefs: Preferences, palette: tuple[str, ...]) -> tuple[dict, str]:
    avoid = avoided(prefs)
    instruments = [i for i in attrs["instruments"] if i not in avoid]
    for name in favoured(prefs, avoid):
        if name not in instruments:
            instruments.insert(0, name)
    for f in prefs.favour:
        if f.strip() in GENRES and f.strip() not in prefs.avoid:
            genre = f.strip()
    if not instruments:
        instruments = [next((n for n in (*palette, *NAMES) if n not in avoid), palette[0])]
    if any(g in genre for g in prefs.avoid if g in GENRES):
        genre = "instrumental"
    return {**attrs, "instruments": instruments[:6], "intensity": min(attrs["intensity"], prefs.intensity_cap)}, genre


def vary(attrs: dict, p: Prior, previous: MusicDescription | None) -> dict:
    """A listener skipped: the same scene, other music inside the same bounds (the next key and
    music mode the bounds allow, the palette's instruments that were not playing first)."""
    if previous is None:
        return attrs
    b = p.bounds

    def after(options: list[str], current: str) -> str:
        return options[(options.index(current) + 1) % len(options)] if current in options else options[0]

    fresh = [i for i in b.palette if i not in previous.instruments]
    instruments = (fresh + [i for i in attrs["instruments"] if i not in fresh])[: max(1, len(attrs["instruments"]))]
    key, mode = after(list(b.keys), previous.key), after([m.value for m in b.modes], previous.mode)
    # Rule 6 (continuity) holds for a skip too: prefer another key of the bounds a step away at most.
    here = (previous.key, str(previous.mode))
    near = [(k, m.value) for m in b.modes for k in b.keys if k != previous.key and fifths_distance(here, (k, m)) <= 1]
    if near:
        key, mode = min(near, key=lambda km: (km[1] == str(previous.mode), fifths_distance(here, km)))
    return {**attrs, "key": key, "mode": mode, "instruments": instruments}


def transition(decision: Decision | None, scene: CharacterizedScene, previous: MusicDescription | None,
               attrs: dict) -> Transition:  # fmt: skip
    if previous is None or (decision is not None and decision.skip):
        return Transition.crossfade
    if decision is not None and decision.urgent:
        return Transition.cut if scene.mode in (Mode.combat, Mode.danger) else Transition.crossfade
    if (
        previous.mode == attrs["mode"]
        and abs(previous.tempo_bpm - attrs["tempo_bpm"]) <= 8
        and abs(previous.intensity - attrs["intensity"]) <= 0.15
    ):
        return Transition.keep
    return Transition.crossfade


def prior_line(p: Prior) -> str:
    """The prior and its bounds in one line: the compact templates' `$prior`."""
    b = p.bounds
    return (f"{p.genre}; {' '.join(p.mood)}; {p.tempo_bpm} bpm ({b.tempo[0]}-{b.tempo[1]}); {p.key} {p.mode.value} "
            f"(keys {' '.join(b.keys)}; modes {' '.join(m.value for m in b.modes)}); {' '.join(p.instruments)} "
            f"(palette {' '.join(b.palette)}); intensity {round(p.intensity * 100)} "
            f"({round(b.intensity[0] * 100)}-{round(b.intensity[1] * 100)})")  # fmt: skip


def likes(prefs: Preferences | None) -> str:
    """The player's preferences in one line (their words are a closed alphabet): `$likes`."""
    if prefs is None:
        return "(none)"
    parts = [f"favour {' '.join(prefs.favour)}" if prefs.favour else "",
             f"avoid {' '.join(prefs.avoid)}" if prefs.avoid else "",
             f"intensity at most {round(prefs.intensity_cap * 100)}" if prefs.intensity_cap < 1 else ""]  # fmt: skip
    return "; ".join(x for x in parts if x) or "(none)"


def caption(attrs: dict, genre: str) -> str:
    names = [i.replace("_", " ") for i in attrs["instruments"]]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    mood = " and ".join(attrs["mood"][:2]) if len(attrs["mood"]) <= 2 else ", ".join(attrs["mood"])
    text = (
        f"{genre.capitalize()} background music, {mood}, with {listed}, "
        f"at {attrs['tempo_bpm']} BPM in {attrs['key']} {attrs['mode']}. "
        f"Loopable, {level(attrs['intensity'])} intensity."
    )
    return text[:400]


class Describe:
    """Scene (+ narrative) -> MusicDescription, with the prior, the LLM and the player's taste."""

    def __init__(self, settings: Describer, client: Client) -> None:
        self.settings, self.client = settings, client
        self.two_stage = Prompt.load("metabgm_describer", settings.describer_template)
        self.one_stage = Prompt.load("metabgm_describer", settings.direct_template)

    def prior(self, scene: CharacterizedScene, previous: MusicDescription | None = None,
              decision: Decision | None = None, prefs: Preferences | None = None) -> Prior:  # fmt: skip
        """The scene's prior, its bounds narrowed to what continuity with `previous` and the
        player's preferences keep."""
        p = prior(scene, self.settings.prior_tempo_margin_bpm, self.settings.prior_intensity_margin)
        p = continued(p, previous, urgent=decision is not None and (decision.urgent or decision.skip))
        return preferred(p, prefs)

    def messages(self, prompt: Prompt, scene: CharacterizedScene, p: Prior, narrative: str | None,
                 previous: MusicDescription | None, prefs: Preferences | None = None) -> list[dict]:  # fmt: skip
        suggested = {"mood": " ".join(p.mood), "tempo_bpm": p.tempo_bpm, "key": p.key, "mode": p.mode.value,
                     "instruments": list(p.instruments), "intensity": round(p.intensity * 100)}  # fmt: skip
        prev = "(none)"
        if previous is not None:
            prev = (f"{previous.tempo_bpm} bpm, {previous.key} {previous.mode}, "
                    f"{' '.join(previous.instruments)}, intensity {round(previous.intensity * 100)}")  # fmt: skip
        return prompt.messages(
            narrative=clean(narrative, cap=400) if narrative else "(none)", scene=clean(scene.text, cap=600),
            previous=prev, suggested=json.dumps(suggested), player_text=data_block(scene.texts),
            prior=prior_line(p), likes=likes(prefs),
        )  # fmt: skip

    def describe(
        self,
        scene: CharacterizedScene,
        narrative: str | None,
        *,
        prefs: Preferences | None = None,
        previous: MusicDescription | None = None,
        decision: Decision | None = None,
        direct: bool = False,
        llm: bool = True,
        lock: tuple[str, int] | None = None,
    ) -> MusicDescription:
        """`llm=False`: the ladder's prior rung, no LLM call. `lock`: (key, tempo) the player already
        hears for this scene, kept whatever the LLM or the rules would move."""
        started = time.perf_counter()
        prompt = self.one_stage if direct else self.two_stage
        if lock is None:
            p = self.prior(scene, previous, decision, prefs)
        else:
            p = held(self.prior(scene, prefs=prefs), *lock)
        if llm:
            attrs, own, source = self.ask(prompt, scene, p, None if direct else narrative, previous, prefs)
        else:  # the ladder's prior rung
            attrs, own, source = prior_attrs(p), None, "prior"
        attrs, genre = ruled(attrs, p, previous, decision, lock, prefs)
        return MusicDescription(
            caption=restated(own, attrs, genre, p.genre) or caption(attrs, genre),
            tempo_bpm=attrs["tempo_bpm"],
            key=attrs["key"],
            mode=attrs["mode"],
            instruments=attrs["instruments"],
            intensity=attrs["intensity"],
            transition=transition(decision, scene, previous, attrs),
            template=prompt.template_id,
            model=self.settings.describer_model if source != "prior" else "rules",
            source=source,
            latency_s=round(time.perf_counter() - started, 4),
        )

    def ask(
        self,
        prompt: Prompt,
        scene: CharacterizedScene,
        p: Prior,
        narrative: str | None,
        previous: MusicDescription | None,
        prefs: Preferences | None,
    ) -> tuple[dict, tuple | None, str]:
        """The LLM's attributes inside the prior's bounds, its own caption (with the attributes it
        was written for) where the template asks one, and the source; the prior's when it fails."""
        try:
            reply = self.client.chat(
                self.messages(prompt, scene, p, narrative, previous, prefs),
                model=self.settings.describer_model,
                max_tokens=self.settings.describer_max_tokens,
                schema=schema(p, asks_caption(prompt)),
                name="music",
            )
            answer = reply.json()
            attrs, clamped = refine(p, answer, [t.text for t in scene.texts])
        except LLMError:
            metrics.llm_fallbacks.labels("describe").inc()
            return prior_attrs(p), None, "prior"
        own = (own_caption(answer, attrs, scene), dict(attrs)) if asks_caption(prompt) and not clamped else None
        return attrs, own, "mixed" if clamped else "llm"

    def direct(self, scene: CharacterizedScene, **kw) -> MusicDescription:
        """The one-stage baseline: no narrative, template "direct/v1"."""
        return self.describe(scene, None, direct=True, **kw)


def prior_attrs(p: Prior) -> dict:
    """What the prior alone would play: the ladder's prior rung, and the LLM's fallback."""
    return {"tempo_bpm": p.tempo_bpm, "key": p.key, "mode": p.mode.value, "instruments": list(p.instruments),
            "intensity": p.intensity, "mood": list(p.mood)}  # fmt: skip


def ruled(attrs: dict, p: Prior, previous: MusicDescription | None, decision: Decision | None,
          lock: tuple[str, int] | None, prefs: Preferences | None) -> tuple[dict, str]:  # fmt: skip
    """The rules after the answer, in order: a skip's variation, continuity with what plays, the
    refinement's held key and tempo, the player's preferences (which may change the genre)."""
    if decision is not None and decision.skip:
        attrs = vary(attrs, p, previous)
    attrs = continuity(attrs, previous, urgent=decision is not None and decision.urgent)
    if lock is not None:
        attrs = {**attrs, "key": lock[0], "tempo_bpm": lock[1]}
    return apply_preferences(attrs, p.genre, prefs or Preferences(), p.bounds.palette)


def held(p: Prior, key: str, tempo: int) -> Prior:
    """The prior with its key and tempo fixed (a refinement keeps what the player hears)."""
    return replace(p, key=key, tempo_bpm=tempo, bounds=replace(p.bounds, keys=(key,), tempo=(tempo, tempo)))


class DescribeStage:
    """The ladder's rung decides whether the LLM is asked (`stages.LLM_RUNGS`); a refinement keeps
    the key and tempo of the music its scene already plays."""

    def __init__(self, settings: Describer, players: Players, client: Client) -> None:
        self.players = players
        self.describer = Describe(settings, client)

    def lock(self, job: Job, previous: MusicDescription | None) -> tuple[str, int] | None:
        if not job.refine:
            return None
        playing = self.players.now_playing(job.player_key)
        if playing is not None and playing.scene_id == job.scene_id:
            return playing.description.key, playing.description.tempo_bpm
        fast = self.describer.describe(job.scene, None, prefs=self.players.preferences(job.player_key),
                                       previous=previous, decision=job.decision, llm=False)  # fmt: skip
        return fast.key, fast.tempo_bpm  # what the fast rung plays once it is rendered

    def __call__(self, job: Job) -> Job:
        if job.scene is None:
            raise ValueError("describe needs a characterized scene")
        pk = job.player_key
        narrative: Narrative | None = job.narrative
        previous = self.players.last_description(pk)
        description = self.describer.describe(
            job.scene,
            narrative.text if narrative else None,
            prefs=self.players.preferences(pk),
            previous=previous,
            decision=job.decision,
            llm=job.rung in LLM_RUNGS and job.pregen is None,
            lock=self.lock(job, previous),
        )
        if job.pregen is None:  # an anticipated scene is nobody's music yet
            self.players.put(pk, "description", description.model_dump(mode="json"))
        return job.model_copy(update={"description": description})
