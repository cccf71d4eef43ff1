"""Evaluation and training data: one JSONL line per triple (scene window + characterized scene,
narrative, music description) with its provenance.

Rules:
- A triple's `window` is a `SceneWindow` and its `scene` is what `characterize()` made of it, so
  every stage input can be rebuilt from the record alone.
- Nothing that names a player is written: the recorder replaces player ids with a keyed hash
  (HMAC-SHA256 under the instance's link secret or a dedicated salt), so ids stay stable across a
  recording, cannot be reversed without the key, and differ between instances. Player-written
  text (chat, signs, books) is dropped: it is personal and it never belongs in a training target.
- Files are append-only and keyed by `id`, so a recorder or labeller that stops can resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import redis
from pydantic import BaseModel, Field, ValidationError

from metabgm_shared.contracts import (
    CharacterizedScene,
    MusicDescription,
    Narrative,
    NarrativeEvent,
    NowPlayingEvent,
    PlayerEvent,
    SceneEvent,
    SceneWindow,
    WindowEvent,
    parse_event,
)
from metabgm_shared.modproto import ModWindowError, from_mod
from metabgm_shared.state import ALL_CHANNELS

REFERENCE = Path(__file__).with_name("reference.jsonl")
EVENTS = ALL_CHANNELS


class Provenance(BaseModel):
    source: Literal["human", "session", "teacher"]  # who wrote the narrative and description
    model: str = ""  # the narrator's model (the description carries its own)
    template: str = ""
    at: float = Field(default_factory=time.time)
    player: str = ""  # pseudonymised
    note: str = ""


class Triple(BaseModel):
    id: str
    window: SceneWindow
    scene: CharacterizedScene
    narrative: str | None = None
    description: MusicDescription | None = None
    provenance: Provenance


def load(path: Path) -> list[Triple]:
    return list(iter_triples(path))


def iter_triples(path: Path) -> Iterator[Triple]:
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield Triple.model_validate_json(line)
            except ValidationError as exc:
                raise ValueError(f"{path}:{n}: not a triple: {exc.errors()[0]['msg']}") from None


def append(path: Path, triples: Iterable[Triple]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("a") as fh:
        for t in triples:
            fh.write(t.model_dump_json(exclude_none=True) + "\n")
            n += 1
    return n


def ids(path: Path) -> set[str]:
    return {t.id for t in iter_triples(path)} if path.exists() else set()


def pseudonym(player_id: str, key: str | bytes) -> str:
    key = key.encode() if isinstance(key, str) else key
    return "p-" + hmac.new(key, player_id.encode(), hashlib.sha256).hexdigest()[:16]


class Recorder:
    """Turns a running instance's player events into triples.

    Per player, a `scene` event opens a record (by default only scenes the change detector sent
    on to the narrator); the `window` event with the same index supplies its window, and the
    `narrative` and `now_playing` events that follow fill in the targets. A record is written
    when it is complete, when the player's next scene opens, when it is older than `linger_s`,
    or when the recorder stops; one that never got its window is dropped.
    """

    def __init__(self, out: Path, key: str | bytes, changed_only: bool = True, linger_s: float = 60.0) -> None:
        self.out, self.key, self.changed_only, self.linger_s = out, key, changed_only, linger_s
        self.windows: dict[str, dict[int, SceneWindow]] = {}
        self.open: dict[str, dict] = {}
        self.written = 0
        self.seen = ids(out)

    def _pk(self, e: PlayerEvent) -> str:
        return f"{e.server_id}:{e.player_id}"

    def _window(self, e: WindowEvent) -> SceneWindow | None:
        raw = e.data.window
        try:
            w = SceneWindow.model_validate(raw)
        except ValidationError:
            try:  # the gateway forwards the seed mod's own form untouched
                w = from_mod(raw, server_id=e.server_id, player_id=e.player_id, received_at=e.at)
            except (ModWindowError, ValidationError, TypeError, ValueError):
                return None
        return w.model_copy(update={"player_id": pseudonym(w.player_id, self.key), "texts": []})

    def handle(self, e: PlayerEvent) -> None:
        pk = self._pk(e)
        if isinstance(e, WindowEvent):
            w = self._window(e)
            if w is None:
                return
            rec = self.open.get(pk)
            if rec is not None and rec["window"] is None and rec["index"] == w.index:
                rec["window"] = w
            else:
                buf = self.windows.setdefault(pk, {})
                buf[w.index] = w
                for old in sorted(buf)[:-8]:  # a scene follows its window within a few windows
                    del buf[old]
        elif isinstance(e, SceneEvent):
            if self.changed_only and not e.data.decision.changed:
                return
            self._close(pk)
            index = e.data.index
            self.open[pk] = {
                "index": index,
                "window": self.windows.get(pk, {}).pop(index, None),
                "scene": e.data.scene.model_copy(update={"texts": []}),
                "at": e.at,
                "narrative": None,
                "description": None,
            }
        elif isinstance(e, NarrativeEvent) and pk in self.open:
            self.open[pk]["narrative"] = e.data
        elif isinstance(e, NowPlayingEvent) and pk in self.open:
            self.open[pk]["description"] = e.data.description
            rec = self.open[pk]
            if rec["narrative"] is not None and rec["description"] is not None:
                self._close(pk)
        self.expire(e.at)

    def expire(self, now: float) -> None:
        for pk in [pk for pk, rec in self.open.items() if now - rec["at"] > self.linger_s]:
            self._close(pk)

    def _close(self, pk: str) -> None:
        rec = self.open.pop(pk, None)
        if rec is None or rec["window"] is None:
            return
        w: SceneWindow = rec["window"]
        narrative: Narrative | None = rec["narrative"]
        tid = f"{w.server_id}-{w.player_id}-{w.index}-{int(rec['at'] * 1000)}"
        if tid in self.seen:
            return
        triple = Triple(
            id=tid,
            window=w,
            scene=rec["scene"],
            narrative=narrative.text if narrative else None,
            description=rec["description"],
            provenance=Provenance(
                source="session",
                model=narrative.model if narrative else "",
                template=narrative.template if narrative else "",
                at=rec["at"],
                player=w.player_id,
            ),
        )
        self.written += append(self.out, [triple])
        self.seen.add(tid)

    def close(self) -> None:
        for pk in list(self.open):
            self._close(pk)

    def run(self, client: redis.Redis, until: float | None = None, limit: int | None = None) -> int:
        """Record until `until` (epoch seconds), `limit` triples, or Ctrl-C; returns how many."""
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(EVENTS)
        try:
            while (until is None or time.time() < until) and (limit is None or self.written < limit):
                msg = pubsub.get_message(timeout=0.5)
                if msg is None:
                    self.expire(time.time())
                    continue
                with contextlib.suppress(ValidationError, json.JSONDecodeError):
                    self.handle(parse_event(msg["data"]))
        except KeyboardInterrupt:
            pass
        finally:
            self.close()
            pubsub.close()
        return self.written


def label(src: Path, out: Path, narrate, describe, teacher: str, on_item=lambda done, total: None) -> dict:
    """Write teacher references for the triples in `src` that `out` lacks, one line as each ends.

    `narrate` and `describe` are the stages' own objects built against the teacher, so references
    answer exactly the prompts the workers send. A triple the teacher failed on (the stage fell
    back to its rules) is left out and counted, to be retried on the next run.
    """
    done = ids(out)
    todo = [t for t in iter_triples(src) if t.id not in done]
    counts = {"labelled": 0, "skipped": len(done), "failed": 0}
    for i, t in enumerate(todo, 1):
        nar = narrate.narrate(t.scene, [])
        desc = describe.describe(t.scene, nar.text) if nar.source == "llm" else None
        if desc is None or desc.source == "prior":
            counts["failed"] += 1
        else:
            prov = Provenance(source="teacher", model=teacher, template=nar.template, player=t.provenance.player)
            append(out, [t.model_copy(update={"narrative": nar.text, "description": desc, "provenance": prov})])
            counts["labelled"] += 1
        on_item(i, len(todo))
    return counts
