"""Keep credentials out of the access log: the mod's secret path prefix, listen tokens in paths
and the `t=` token on clip URLs are the only credentials those clients have."""

from __future__ import annotations

import logging
import re

SECRET_IN_PATH = re.compile(r"(/mod/|/listen/)[^/?\s]+|([?&]t=)[^&\s]+")


def redact(path: str) -> str:
    return SECRET_IN_PATH.sub(lambda m: (m.group(1) or m.group(2)) + "***", path)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn.access records carry (client, method, path, http version, status) as args.
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            record.args = (*record.args[:2], redact(record.args[2]), *record.args[3:])
        return True
