"""The fine-tuning corpus: build it, check it, load it.

    python -m metabgm.finetune.corpus build [--out data/finetune]   # writes the JSONL files
    python -m metabgm.finetune.corpus check [--dir data/finetune]   # re-checks every example

Rules:
- An input is exactly what the stage sends at serving time with the compact templates
  (`narrator/compact1`, `describer/compact1`): built by `NarrateStage.messages` and
  `Describe.messages`, never by hand. `check` rebuilds each one from its case and compares.
- A case is one scene of one player's walk: the characterized scene, the narratives the player
  heard before it (at most 3, newest last), the music playing (the previous description) and the
  player's preferences. The narrator's target is the narrative; the describer's input takes that
  narrative, and its target is the JSON answer (caption + attributes): on the dev and test splits
  the author's one draw for the case (the references), on the train split the most central of
  `CENTRAL_DRAWS` draws from the case's own seed (`central`); the walk's history keeps the one draw.
- Split by scene: a scene's prompt text (`scene.text`) goes to one split only (train, dev or
  test), by a hash of the text; scenes of the 30-scene reference set are left out entirely.
- Every example is checked: the narrator target passes the stage's own guard (with the grounding
  check) against its real inputs; the describer target is valid JSON of the schema the stage
  asks with (the prior's bounds narrowed to continuity and the player's preferences: no avoided
  instrument, no intensity over the cap), consistent with its caption, and free of player words;
  no two inputs and no two targets of a stage are the same.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from pydantic import BaseModel

from metabgm_ingest.characterize import characterize
from metabgm_shared.contracts import CharacterizedScene, Decision, Dimension, Mode, MusicDescription, Preferences
from metabgm_shared.prior import level

from . import author, scenes
from .handwritten import HANDWRITTEN

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "data" / "finetune"
NARRATOR_TEMPLATE, DESCRIBER_TEMPLATE = "narrator/compact1", "describer/compact1"
SPLITS = (("test", 0.2), ("dev", 0.3), ("train", 1.0))  # cumulative share of the scene hash
SEED = 14
MAX_RECENT = 3
MAX_SAME = 3  # a narrative may serve at most this many different scenes
CENTRAL_DRAWS = 16  # a describer training target is the most central of this many of the author's draws


class Case(BaseModel):
    id: str
    split: str
    source: str
    player: str
    step: int
    scene: CharacterizedScene
    recent: list[str]
    previous: MusicDescription | None = None
    prefs: Preferences | None = None
    urgent: bool = False

    def decision(self) -> Decision:
        """The change decision the stages get for this case (its urgency)."""
        return Decision(changed=True, score=1.0, urgent=self.urgent, reason="corpus case")


class Example(BaseModel):
    id: str
    split: str
    template: str
    messages: list[dict]
    target: str
    written: str = "bank"  # "hand": written one by one (`handwritten`); "bank": composed from phrase banks;
    # "central": a training description, the most central of CENTRAL_DRAWS bank draws (`central`)


@dataclass
class Stages:
    """The stages' own prompt builders, configured with the compact templates."""

    narrate: object
    describe: object

    @classmethod
    def compact(cls) -> Stages:
        from metabgm_describer.describe import Describe
        from metabgm_narrator.narrate import NarrateStage
        from metabgm_shared.settings import Describer, Narrator

        common = {"redis_url": "redis://unused", "llm_base_url": "http://unused/v1"}
        return cls(NarrateStage(Narrator(**common, narrator_template=NARRATOR_TEMPLATE), None, None),
                   Describe(Describer(**common, describer_template=DESCRIBER_TEMPLATE), None))  # fmt: skip

    def narrator(self, case: Case) -> list[dict]:
        return self.narrate.messages(case.scene, case.recent)

    def bounds(self, case: Case):
        """The prior the describer asks within: narrowed to continuity and the player's taste."""
        return self.describe.prior(case.scene, case.previous, case.decision(), case.prefs)

    def describer(self, case: Case, narrative: str) -> list[dict]:
        d = self.describe
        return d.messages(d.two_stage, case.scene, self.bounds(case), narrative, case.previous, case.prefs)


def authored(case: Case, stages: Stages, rng: random.Random) -> dict:
    """The describer's target for `case`, drawn by the corpus's author from the case's inputs (the
    evaluation's "author redraw" asks it again the same way)."""
    return author.description(case.scene, stages.describe.prior(case.scene), case.prefs, case.previous,
                              case.urgent, rng)  # fmt: skip


def central(case: Case, stages: Stages, draws: int = CENTRAL_DRAWS) -> dict:
    """The describer's training target for `case`: of `draws` answers the author writes for it
    (from the case's own seed), the one whose caption agrees most with the others' (`medoid`).
    One draw's caption order and words are coin flips no input explains, so greedy decoding of a
    model trained on them settles on whichever pattern shares the most first tokens; the author's
    consensus is what it can learn (minimum-Bayes-risk distillation)."""
    rng = random.Random(f"central:{case.id}")
    answers = [authored(case, stages, rng) for _ in range(draws)]
    return answers[medoid([a["caption"] for a in answers])]


def medoid(texts: list[str]) -> int:
    """The index of the text with the highest summed `agreement` with all the others."""
    words = [re.findall(r"[a-z0-9]+", t.lower()) for t in texts]
    total = [sum(agreement(a, b) for j, b in enumerate(words) if j != i) for i, a in enumerate(words)]
    return max(range(len(texts)), key=total.__getitem__)


def agreement(a: list[str], b: list[str]) -> float:
    """How much two word lists agree: ROUGE-L F1 (their longest common subsequence) plus the F1 of
    their words and word pairs."""
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], diag + 1 if x == y else max(row[j], row[j - 1])
    grams_a = Counter(a) + Counter(pairwise(a))
    grams_b = Counter(b) + Counter(pairwise(b))
    size = len(a) + len(b)
    shared = sum((grams_a & grams_b).values())
    return 2 * row[-1] / size + shared / (size - 1) if a and b else 0.0


def split_of(text: str) -> str:
    h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32
    return next(name for name, upto in SPLITS if h < upto)


def reference_scenes() -> set[str]:
    from metabgm.evaluation.dataset import REFERENCE, load

    return {characterize(t.window).text for t in load(REFERENCE)}


def urgent(prev: CharacterizedScene | None, scene: CharacterizedScene) -> bool:
    """As the change detector judges it: into combat, a dimension change, near death."""
    if prev is None:
        return True
    return (
        (scene.mode in (Mode.combat, Mode.danger) and prev.mode not in (Mode.combat, Mode.danger))
        or prev.dimension != scene.dimension
        or (scene.health in ("Dying", "Die") and prev.health not in ("Dying", "Die"))
    )


def walks(rng: random.Random, generated_players: int) -> list[scenes.Walk]:
    found = scenes.session() + scenes.seed_sample() + scenes.demo() + scenes.generated(rng, generated_players)
    return list(scenes.with_texts(found, rng))


def narrate_case(case: Case, stages: Stages, prev_mode: Mode | None, rng: random.Random, seen: Counter) -> str:
    from metabgm_narrator.narrate import guard

    inputs = [stages.narrate.prompt.system.template, stages.narrate.prompt.user.template, case.scene.text,
              *case.recent]  # fmt: skip
    if case.id in HANDWRITTEN:
        text = HANDWRITTEN[case.id]
        if guard(text, inputs=inputs, player_texts=[t.text for t in case.scene.texts], scene=case.scene) != text:
            raise ValueError(f"the hand-written narrative of {case.id} fails the guard: {text} ({case.scene.text})")
        return text
    for _ in range(60):
        text = author.narrative(case.scene, case.recent, prev_mode, rng)
        if seen[text] >= MAX_SAME - (1 if _ < 40 else 0):
            continue  # a target already written is drawn again only when nothing fresh passes
        kept = guard(text, inputs=inputs, player_texts=[t.text for t in case.scene.texts], scene=case.scene)
        if kept == text:
            return text
    raise ValueError(f"no narrative passes the guard for {case.id}: {case.scene.text}")


def music(answer: dict) -> MusicDescription:
    """The music an answer makes (what the player hears next)."""
    fields = {k: v for k, v in answer.items() if k != "mood"}
    return MusicDescription(**fields | {"intensity": answer["intensity"] / 100})


def describer_example(case: Case, stages: Stages, narrative: str, answer: dict) -> Example:
    target = json.dumps(answer, separators=(",", ":"))  # compact: fewer tokens to learn and to decode
    messages = stages.describer(case, narrative)
    return Example(id=case.id, split=case.split, template=DESCRIBER_TEMPLATE, messages=messages, target=target,
                   written="central" if case.split == "train" else "bank")  # fmt: skip


def build(generated_players: int = 210, seed: int = SEED) -> tuple[list[Case], list[Example], list[Example]]:
    rng = random.Random(seed)
    stages = Stages.compact()
    held_out = reference_scenes()
    cases: list[Case] = []
    narr: list[Example] = []
    desc: list[Example] = []
    seen_n: Counter = Counter()
    seen_in: set[str] = set()
    for walk in walks(rng, generated_players):
        recent: list[str] = []
        previous: MusicDescription | None = None
        prev_scene: CharacterizedScene | None = None
        for step, w in enumerate(walk.windows):
            scene = characterize(w)
            if scene.text in held_out or (prev_scene is not None and scene.text == prev_scene.text and not w.texts):
                continue  # the reference set stays out; an unchanged scene is not sent on
            case = Case(id=f"{walk.player}-{step}", split=split_of(scene.text), source=walk.source,
                        player=walk.player, step=step, scene=scene, recent=recent[-MAX_RECENT:], previous=previous,
                        prefs=walk.prefs, urgent=urgent(prev_scene, scene))  # fmt: skip
            n_msgs = stages.narrator(case)
            if json.dumps(n_msgs) in seen_in:
                continue
            seen_in.add(json.dumps(n_msgs))
            text = narrate_case(case, stages, prev_scene.mode if prev_scene else None, rng, seen_n)
            seen_n[text] += 1
            answer = authored(case, stages, rng)  # the walk's music and the held-out references: one draw
            target = central(case, stages) if case.split == "train" else answer
            cases.append(case)
            narr.append(Example(id=case.id, split=case.split, template=NARRATOR_TEMPLATE, messages=n_msgs, target=text,
                                written="hand" if case.id in HANDWRITTEN else "bank"))  # fmt: skip
            desc.append(describer_example(case, stages, text, target))
            recent.append(text)
            previous = music(answer)
            prev_scene = scene
    return cases, narr, desc


# -- checks ----------------------------------------------------------------------------------------
def player_words(case: Case) -> set[str]:
    """Words only a player wrote (not in the scene's own text), 4 letters or more."""
    known = set(re.findall(r"[a-z]+", case.scene.text.lower()))
    return {w for t in case.scene.texts for w in re.findall(r"[a-z]+", t.text.lower()) if len(w) >= 4} - known


def check_description(case: Case, answer: dict, p) -> str | None:
    """Why a describer target is wrong, or None; `p`: the prior the stage asks within."""
    import jsonschema

    from metabgm_describer.describe import schema
    from metabgm_shared.prior import within

    try:
        jsonschema.validate(answer, schema(p, with_caption=True))  # what constrained decoding allows
    except jsonschema.ValidationError as exc:
        return f"not the schema: {exc.message}"
    if not within(p, tempo_bpm=answer["tempo_bpm"], key=answer["key"], mode=answer["mode"],
                  instruments=answer["instruments"], intensity=answer["intensity"] / 100):  # fmt: skip
        return "outside the prior's bounds"
    if not 1 <= len(answer["instruments"]) <= 4 or len(set(answer["instruments"])) != len(answer["instruments"]):
        return "instruments"
    cap = answer["caption"]
    must = [f"{answer['tempo_bpm']} BPM", f"{answer['key']} {answer['mode']}",
            *(i.replace("_", " ") for i in answer["instruments"])]  # fmt: skip
    missing = [m for m in must if m not in cap]
    if missing:
        return f"caption lacks {missing}"
    lv = level(answer["intensity"] / 100)
    if not any(w in cap for w in author.TEXTURE[lv] + author.LEVEL[lv]):
        return "caption texture does not fit the intensity"
    if not all(w in cap.lower() for w in answer["mood"].split()):
        return "caption lacks a mood word"
    copied = (player_words(case) - author.caption_words()) & set(re.findall(r"[a-z]+", cap.lower()))
    if copied:
        return f"caption copies player text {sorted(copied)}"
    return None


def check(cases: list[Case], narr: list[Example], desc: list[Example]) -> dict:
    """Every rule of the module docstring; raises ValueError listing the first failures."""
    from metabgm_narrator.grounding import ungrounded
    from metabgm_narrator.narrate import guard

    stages = Stages.compact()
    held_out = reference_scenes()
    problems: list[str] = []
    by_id = {c.id: c for c in cases}
    for ex in narr:
        c = by_id[ex.id]
        if ex.messages != stages.narrator(c):
            problems.append(f"{ex.id}: narrator input is not what the stage sends")
        inputs = [stages.narrate.prompt.system.template, stages.narrate.prompt.user.template, c.scene.text, *c.recent]
        if guard(ex.target, inputs=inputs, player_texts=[t.text for t in c.scene.texts], scene=c.scene) != ex.target:
            problems.append(f"{ex.id}: narrative fails the guard: {ex.target}")
        if ungrounded(ex.target, c.scene):
            problems.append(f"{ex.id}: ungrounded {ungrounded(ex.target, c.scene)!r}")
        if c.recent and ex.target == c.recent[-1]:
            problems.append(f"{ex.id}: repeats the last narrative")
        if c.scene.text in held_out:
            problems.append(f"{ex.id}: a reference scene")
    narratives = {ex.id: ex.target for ex in narr}
    for ex in desc:
        c = by_id[ex.id]
        if ex.messages != stages.describer(c, narratives[ex.id]):
            problems.append(f"{ex.id}: describer input is not what the stage sends")
        why = check_description(c, json.loads(ex.target), stages.bounds(c))
        if why:
            problems.append(f"{ex.id}: {why}")
    for name, exs in (("narrator", narr), ("describer", desc)):
        dup = [k for k, n in Counter(json.dumps(e.messages) for e in exs).items() if n > 1]
        if dup:
            problems.append(f"{name}: {len(dup)} duplicate inputs, e.g. {dup[0][:120]}")
        common = [k for k, n in Counter(e.target for e in exs).items() if n > MAX_SAME]
        if common:
            problems.append(f"{name}: {len(common)} targets used more than {MAX_SAME} times, e.g. {common[0][:120]}")
    splits: dict[str, set[str]] = {}
    for c in cases:
        splits.setdefault(c.scene.text, set()).add(c.split)
    crossing = [t for t, s in splits.items() if len(s) > 1]
    if crossing:
        problems.append(f"{len(crossing)} scenes in more than one split, e.g. {crossing[0]}")
    if problems:
        raise ValueError(f"{len(problems)} problems:\n" + "\n".join(problems[:20]))
    return stats(cases, narr)


def stats(cases: list[Case], narr: list[Example]) -> dict:
    return {
        "examples_per_stage": len(narr),
        "splits": dict(Counter(c.split for c in cases)),
        "sources": dict(Counter(c.source for c in cases)),
        "modes": dict(Counter(c.scene.mode.value for c in cases)),
        "dimensions": dict(Counter(c.scene.dimension.value for c in cases)),
        "times": dict(Counter(str(c.scene.time_of_day) for c in cases)),
        "weathers": dict(Counter(str(c.scene.weather) for c in cases)),
        "health": dict(Counter(str(c.scene.health) for c in cases)),
        "hunger": dict(Counter(str(c.scene.hunger) for c in cases)),
        "with_player_text": sum(bool(c.scene.texts) for c in cases),
        "with_recent": sum(bool(c.recent) for c in cases),
        "with_previous_music": sum(c.previous is not None for c in cases),
        "with_preferences": sum(c.prefs is not None for c in cases),
        "heading_elsewhere": sum(c.scene.biome_ahead is not None for c in cases),
        "distinct_scenes": len({c.scene.text for c in cases}),
        "distinct_narratives": len({e.target for e in narr}),
        "hand_written_narratives": sum(e.written == "hand" for e in narr),
        "distinct_narrative_openings": len({" ".join(e.target.split()[:3]) for e in narr}),
        "nether_or_end": sum(c.scene.dimension is not Dimension.overworld for c in cases),
    }


# -- files -----------------------------------------------------------------------------------------
FILES = {"cases": "cases.jsonl", "narrator": "narrator.jsonl", "describer": "describer.jsonl"}


def write(out: Path, cases: list[Case], narr: list[Example], desc: list[Example]) -> dict[str, str]:
    """Writes the three files; returns their sha256. Inputs are stored whole (system + user)."""
    out.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, rows in (("cases", cases), ("narrator", narr), ("describer", desc)):
        path = out / FILES[name]
        path.write_text("".join(r.model_dump_json(exclude_none=True) + "\n" for r in rows))
        hashes[name] = file_digest(out, name)
    return hashes


def load(directory: Path = DEFAULT_DIR) -> tuple[list[Case], list[Example], list[Example]]:
    def rows(name, model):
        return [model.model_validate_json(line) for line in (directory / FILES[name]).read_text().splitlines() if line]

    return rows("cases", Case), rows("narrator", Example), rows("describer", Example)


def file_digest(directory: Path, name: str) -> str:
    """The sha256 of one corpus file (`name`: a key of `FILES`): a stage's examples."""
    return hashlib.sha256((directory / FILES[name]).read_bytes()).hexdigest()


def digest(directory: Path = DEFAULT_DIR) -> str:
    """One hash over the corpus files, for the training manifest."""
    h = hashlib.sha256()
    for name in FILES.values():
        h.update((directory / name).read_bytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metabgm.finetune.corpus")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", type=Path, default=DEFAULT_DIR)
    b.add_argument("--players", type=int, default=210, help="generated walks")
    c = sub.add_parser("check")
    c.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        cases, narr, desc = build(args.players)
        summary = check(cases, narr, desc)
        hashes = write(args.out, cases, narr, desc)
        (args.out / "stats.json").write_text(json.dumps({**summary, "sha256": hashes}, indent=2) + "\n")
    else:
        summary = check(*load(args.dir))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
