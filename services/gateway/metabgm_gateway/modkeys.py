"""Mod keys: the secret path prefix that admits the seed mod, which has no credentials of its own.

Rules:
- A per-player key (`metabgm mod-url --player NAME`) is `<NAME>~<HMAC(mod_key, NAME)>`: it admits
  that player name only. Add, data, remove and the raw-window socket for any other name are 403,
  so no player can remove, impersonate or watch another.
- The one shared key (the instance's `mod_key`) sits in every player's client config and so
  admits any name: it is accepted only with `METABGM_MOD_SHARED_KEY=true`, an explicit opt-in.
- Keys are compared in constant time and travel only in the path (never a query parameter).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from metabgm_shared.contracts import IDENT_RE

SEP = "~"


class ModKeyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _signature(secret: str, name: str) -> str:
    return hmac.new(secret.encode(), f"mod-player:{name}".encode(), hashlib.sha256).hexdigest()[:32]


def player_key(secret: str, name: str) -> str:
    if not IDENT_RE.match(name):
        raise ValueError(f"{name!r} is not 1-64 letters, digits, '_', '.', '-'")
    return f"{name}{SEP}{_signature(secret, name)}"


@dataclass(frozen=True)
class Admission:
    """Who a mod key admits: one player name, or (the shared key) any name."""

    player: str | None

    def check(self, name: str) -> None:
        if self.player is not None and name != self.player:
            raise ModKeyError(403, f"this mod URL is for player {self.player}, not {name}")


def admit(secret: str, key: str, shared_ok: bool) -> Admission:
    name, sep, signature = key.rpartition(SEP)
    if sep and IDENT_RE.match(name) and hmac.compare_digest(signature.encode(), _signature(secret, name).encode()):
        return Admission(player=name)
    if hmac.compare_digest(key.encode(), secret.encode()):
        if not shared_ok:
            raise ModKeyError(403, "the shared mod key is off: use `metabgm mod-url --player NAME`")
        return Admission(player=None)
    raise ModKeyError(403, "unknown mod key")
