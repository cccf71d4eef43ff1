"""The clip store: encoded clips by content key in one directory, shared by every player and
every synth replica, bounded in size.

Rules:
- A clip is `<key>.ogg` (the mix), `<key>.<stem>.ogg` per stem and `<key>.json` (the Clip,
  provenance included). Files are written under a temporary name and renamed; the JSON is
  written last, so a clip whose JSON exists is complete.
- The JSON's mtime is the clip's last access (touched on every hit); when the store grows past
  `max_bytes`, the least recently used clips go first.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from metabgm_shared import metrics
from metabgm_shared.contracts import Clip, Section

from .audio import Rendered, encode


class ClipStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def get(self, key: str) -> Clip | None:
        """A cached clip (marked `cached`), counted as a hit or a miss."""
        meta = self.path(f"{key}.json")
        try:
            clip = Clip.model_validate_json(meta.read_bytes())
            if not all(self.path(url.rsplit("/", 1)[-1]).exists() for url in (clip.url, *clip.stems.values())):
                raise FileNotFoundError(key)
            os.utime(meta)
        except (FileNotFoundError, ValueError):
            metrics.cache_misses.inc()
            return None
        metrics.cache_hits.inc()
        return clip.model_copy(update={"cached": True})

    def put(self, key: str, r: Rendered, key_name: str, mode: str, provenance: dict,
            section: Section | None = None) -> Clip:  # fmt: skip
        files = {f"{key}.ogg": r.mix} | {f"{key}.{stem}.ogg": audio for stem, audio in r.stems.items()}
        for name, audio in files.items():
            self._write(name, encode(audio, r.sr))
        clip = Clip(
            key=key,
            url=f"/clips/{key}.ogg",
            duration_s=round(r.duration_s, 4),
            bpm=r.bpm,
            beats_per_bar=r.beats_per_bar,
            bars=r.bars,
            loop_start_s=0.0,
            loop_end_s=round(r.duration_s, 4),
            loudness_lufs=r.loudness_lufs,
            key_name=key_name,
            mode=mode,
            stems={stem: f"/clips/{key}.{stem}.ogg" for stem in r.stems},
            provenance=provenance,
            section=section,
        )
        self._write(f"{key}.json", clip.model_dump_json(indent=1).encode())
        self.evict(keep=key)
        return clip

    def _write(self, name: str, data: bytes) -> None:
        # Unique per writer: threads share a pid, and replicas share the volume (often all pid 1).
        tmp = self.path(f".{name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path(name))

    def usage(self) -> tuple[int, dict[str, tuple[float, int]]]:
        """Total bytes, and per key (last access, bytes)."""
        total, keys = 0, {}
        for entry in os.scandir(self.root):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:  # evicted by another thread or replica meanwhile
                continue
            key = entry.name.split(".", 1)[0]
            access, size = keys.get(key, (0.0, 0))
            if entry.name.endswith(".json"):
                access = st.st_mtime
            keys[key] = (access, size + st.st_size)
            total += st.st_size
        return total, keys

    def evict(self, keep: str = "") -> int:
        total, keys = self.usage()
        for key, (_, size) in sorted(keys.items(), key=lambda kv: kv[1][0]):
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            # The JSON first: from then on the clip is a miss, never half there.
            with contextlib.suppress(FileNotFoundError):
                self.path(f"{key}.json").unlink()
            for f in self.root.glob(f"{key}.*"):
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
            total -= size
        metrics.cache_bytes.set(total)
        return total
