"""Keep credentials out of the gateway's logs.

Rules:
- The credentials that travel in URLs are the mod key (`/mod/<key>/...`), listen tokens
  (`/listen/<token>...`) and the `t=` token on clip URLs; a `key=` query parameter is never a
  credential here but is redacted too, in case a client sends one. Matching ignores case
  (`/MOD/<key>` reaches the log just the same, as a 404).
- Every record of uvicorn's loggers is redacted, its message and every string argument: access
  lines, the WebSocket handshake lines (`"WebSocket /listen/<token>/events" [accepted]`, logged
  by `uvicorn.error`) and errors alike.
"""

from __future__ import annotations

import logging
import re

SECRET_IN_PATH = re.compile(r"(/mod/|/listen/)[^/?\s\"]+|([?&](?:t|key)=)[^&\s\"]+", re.IGNORECASE)
LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def redact(path: str) -> str:
    return SECRET_IN_PATH.sub(lambda m: (m.group(1) or m.group(2)) + "***", path)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install() -> None:
    for name in LOGGERS:
        logging.getLogger(name).addFilter(RedactSecrets())
