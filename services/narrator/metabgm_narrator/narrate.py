"""The narrator stage, the paper's first LLM step: a characterized scene becomes a short
narrative, continuing the player's recent ones.

Rules:
- The prompt is a versioned template file (`prompt_narrator_v1.txt` is "narrator/v1"); its id is
  recorded on every Narrative. Player-written text reaches it only as an escaped data block.
- The reply is kept only if it passes `guard`: 1-3 complete sentences addressed to the player
  ("you"), not empty, not runaway (too long, cut off, repetitive), not in the first person, not
  echoing its input (a 4-word run of the prompt's instructions and example, of the scene or of
  the recent narratives, or any word the players wrote), and grounded: it names no mob, biome,
  dimension or weather the scene lacks, no digit and no vocabulary placeholder (`grounding`).
  A refused reply is asked again, sampled, up to `narrator_attempts` replies in all (refusals
  counted). On llama.cpp a grammar makes a 4-word run of the recent narratives impossible to
  write (`unrepeated`, `narrator_unrepeated`) and the DRY sampler keeps a reply from extending
  word runs of its prompt (`narrator_dry_multiplier`); vLLM's deployments set both off.
  Otherwise, and whenever the LLM is unavailable, a deterministic narrative is built from the
  scene (source "fallback", counted).
- The narrative is pushed to the player's memory with its scene (what a skip describes again) and
  published as a "narrative" event.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from metabgm_shared import metrics
from metabgm_shared.contracts import (
    CharacterizedScene,
    Dimension,
    Job,
    Mode,
    Narrated,
    Narrative,
    NarrativeData,
    NarrativeEvent,
)
from metabgm_shared.llm import Client, LLMError, Prompt, Reply, clean, data_block
from metabgm_shared.settings import Narrator
from metabgm_shared.state import Players

from . import unrepeated
from .grounding import ungrounded
from .unrepeated import words

NO_RECENT = "(none, this is the start)"
MAX_CHARS = 320
RETRY_TEMPERATURE = 0.8  # a refused reply is asked again with sampling, so it is not the same reply
DRY_BASE = 1.75  # llama.cpp's default growth of the DRY penalty per token past the allowed length
DRY_LAST_N = 4096  # the whole prompt (recent narratives included) and the reply
MAX_SENTENCE_CHARS = 200
SENTENCE_RE = re.compile(r"[^.!?]+[.!?]+")


def guard(
    text: str,
    *,
    inputs: list[str],
    player_texts: list[str],
    finish: str = "stop",
    scene: CharacterizedScene | None = None,
) -> str | None:
    """The reply cleaned to 1-3 sentences, or None when it must not be used (with `scene`, also
    when it names a mob, biome, dimension or weather the scene does not contain)."""
    text = clean(text, cap=4 * MAX_CHARS).strip().strip("\"'`").strip()
    text = re.sub(r"^(narration|narrative)\s*:\s*", "", text, flags=re.I)
    if not text or any(c in text for c in "{}<>[]|#*") or re.search(r"\w+:\s", text):
        return None  # empty, markup or labels: not prose
    sentences = [s.strip() for s in SENTENCE_RE.findall(text)]
    if not sentences:
        if finish == "length":
            return None  # cut off before its first sentence ended
        sentences = [text.rstrip(",;") + "."]
    if any(len(s) > MAX_SENTENCE_CHARS for s in sentences[:3]):
        return None
    if len({s.lower() for s in sentences[:3]}) < len(sentences[:3]) or any(len(words(s)) < 3 for s in sentences[:3]):
        return None  # a repeated sentence, or a fragment ("5 min.")
    out = " ".join(sentences[:3])
    ws = words(out)
    if {"i", "i'm", "me", "my", "we", "our"} & set(ws):
        return None  # role-play, not narration of the player
    if not {"you", "your", "you're", "yourself"} & set(ws) or out.rstrip(".").endswith(":"):
        return None  # not addressed to the player, or a lead-in to something else
    if len(ws) < 3 or len(out) > MAX_CHARS or (len(ws) >= 8 and len(set(ws)) / len(ws) < 0.5):
        return None
    if unrepeated.grams(ws) & unrepeated.banned(inputs):
        return None
    known = {w for t in inputs for w in words(t)}
    written = {w for t in player_texts for w in words(t) if len(w) >= 4} - known
    if written & set(ws):
        return None
    if scene is not None and ungrounded(out, scene):
        return None
    return out


def _place(scene: CharacterizedScene) -> str:
    if scene.biome:
        return scene.biome if scene.biome.startswith("The ") else f"the {scene.biome}"
    return {Dimension.nether: "the Nether", Dimension.end: "the End"}.get(scene.dimension, "the wild")


def fallback(scene: CharacterizedScene) -> str:
    """A plain, always-valid narrative built from the scene alone."""
    place, m = _place(scene), scene.mode
    foes = " and ".join(name.replace("_", " ") for name, _ in scene.attackers[:2]) or "hostile mobs"
    first = {
        Mode.combat: f"You fight off {foes} in {place}.",
        Mode.danger: f"You are in grave danger in {place}.",
        Mode.underwater: f"You swim beneath the water in {place}.",
        Mode.nether: f"You push through the heat of {place}.",
        Mode.end: f"You wander the silent void of {place}.",
        Mode.cave: f"You explore the dark depths of {place}.",
        Mode.night: f"You move through {place} under the night sky.",
        Mode.travel: f"You hurry across {place}" + (f" toward the {scene.biome_ahead}." if scene.biome_ahead else "."),
        Mode.exploration: f"You explore {place}"
        + (f" in the {scene.time_of_day.lower()}." if scene.time_of_day else "."),
    }[m]
    more = []
    if scene.health in ("Dying", "Die"):
        more.append("Your health is almost gone.")
    weather = (scene.weather or "").lower()
    if "thunder" in weather:
        more.append("Thunder rolls overhead.")
    elif "rain" in weather:
        more.append("Rain falls around you.")
    elif "snow" in weather:
        more.append("Snow drifts around you.")
    if m is not Mode.combat and scene.hostiles >= 1:
        more.append("Something hostile lurks nearby.")
    return " ".join([first, *more[:2]])


class NarrateStage:
    def __init__(self, settings: Narrator, players: Players, client: Client) -> None:
        self.settings, self.players, self.client = settings, players, client
        self.prompt = Prompt.load("metabgm_narrator", settings.narrator_template)

    def messages(self, scene: CharacterizedScene, recent: list[str]) -> list[dict]:
        return self.prompt.messages(
            recent=" ".join(clean(r, cap=MAX_CHARS) for r in recent) or NO_RECENT,
            scene=clean(scene.text, cap=600),
            player_text=data_block(scene.texts),
        )

    def narrate(self, scene: CharacterizedScene, recent: list[str]) -> Narrative:
        started = time.perf_counter()
        text = None
        # The prompt's own words count as input: a small model parrots its instructions and the
        # example reply; a reply copying the player's recent narratives is refused the same way.
        inputs = [self.prompt.system.template, self.prompt.user.template, NO_RECENT, scene.text, *recent]
        try:
            for attempt in range(self.settings.narrator_attempts):
                reply = self._reply(scene, recent, attempt)
                text = guard(reply.text, inputs=inputs, player_texts=[t.text for t in scene.texts],
                             finish=reply.finish, scene=scene)  # fmt: skip
                if text:
                    break
                metrics.llm_refusals.labels("narrate").inc()
        except LLMError:
            pass  # Unavailable included: the player gets the fallback, the breaker does the rest
        source = "llm" if text else "fallback"
        if text is None:
            metrics.llm_fallbacks.labels("narrate").inc()
            text = fallback(scene)
        return Narrative(
            text=text,
            template=self.prompt.template_id,
            model=self.settings.narrator_model if source == "llm" else "rules",
            source=source,
            latency_s=round(time.perf_counter() - started, 4),
        )

    def _reply(self, scene: CharacterizedScene, recent: list[str], attempt: int) -> Reply:
        """The model's reply; a retry samples (seeded: repeatable) where the first may be greedy."""
        temperature = max(RETRY_TEMPERATURE, self.settings.llm_temperature)
        retry = {"temperature": temperature, "seed": attempt} if attempt else {}
        return self.client.chat(self.messages(scene, recent), model=self.settings.narrator_model,
                                max_tokens=self.settings.narrator_max_tokens, stop=["\n"], sampler=self.sampler(recent),
                                **retry)  # fmt: skip

    def sampler(self, recent: Sequence[str] = ()) -> dict:
        """llama.cpp's own fields against copying: the grammar that bars the recent narratives'
        4-word runs, and the DRY sampler (none of either where the settings turn them off)."""
        s, out = self.settings, {}
        runs = unrepeated.newest(recent) if s.narrator_unrepeated else set()
        if runs:
            out["grammar"] = unrepeated.grammar(runs)
        if s.narrator_dry_multiplier:
            out |= {"dry_multiplier": s.narrator_dry_multiplier, "dry_base": DRY_BASE,
                    "dry_allowed_length": s.narrator_dry_allowed_length, "dry_penalty_last_n": DRY_LAST_N}  # fmt: skip
        return out

    def __call__(self, job: Job) -> Job:
        if job.scene is None:
            raise ValueError("narrate needs a characterized scene")
        pk = job.player_key
        narrative = self.narrate(job.scene, self.players.narratives(pk))
        self.players.record_narrative(pk, Narrated(scene=job.scene, narrative=narrative))
        w = job.window
        self.players.publish(
            NarrativeEvent(server_id=w.server_id, player_id=w.player_id,
                           data=NarrativeData(index=w.index, **narrative.model_dump()))
        )  # fmt: skip
        return job.model_copy(update={"narrative": narrative})
