"""Per-client token buckets (a collector, a mod player, a listener page). Kept in each gateway
replica: the limit protects the replica, and a client's requests spread over N replicas get N
times the budget, which operators size for."""

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
