"""Per-client token buckets (a collector, a mod player, a listener's pages). Kept in each gateway
replica: the limit protects the replica, and a client's requests spread over N replicas get N
times the budget, which operators size for.

Rules:
- One `Buckets` per replica (app.py), in memory, for every kind of client; the key names the
  client: `collector:<name>` (collect.py), `mod:<player name>` (mod.py) and `listen:<player key>`
  (listen.py: all the pages of one player share one bucket).
- Every client gets the same budget: refilled at `collector_rate_per_s` tokens a second, holding
  at most `collector_burst`. A client not seen before starts with a full bucket.
- An allowed request takes one token; a refused one takes none, and the route answers 429.
- Time is `time.monotonic()`: a jump of the wall clock neither refills nor drains a bucket.
- Memory is bounded: past 100,000 clients, those idle for 60 s or more are forgotten (they come
  back with a full bucket).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Buckets:
    rate: float
    burst: int
    _state: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, who: str) -> bool:
        now = time.monotonic()
        tokens, last = self._state.get(who, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._state[who] = (tokens, now)
            return False
        self._state[who] = (tokens - 1, now)
        if len(self._state) > 100_000:  # forget idle collectors rather than grow forever
            self._state = {k: v for k, v in self._state.items() if now - v[1] < 60}
        return True
