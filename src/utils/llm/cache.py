"""The on-disk answer cache of the LLM client: one JSON file per request, named by its hash.

A rerun of a stage sends the same requests, finds every answer here and costs no calls. The key is
the sha256 of the whole request (endpoint set, model, sampling settings, messages, n), so any
change to a request asks again. Entries are written to a temp file and renamed into place, so a
reader sees a whole entry or none; an entry torn or damaged in any other way is a miss, asked again
and rewritten. Text that UTF-8 cannot hold (a lone surrogate) is written as its JSON escape,
which reads back as the same string.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any

from rpo.utils.io import atomic_write

CACHE_VERSION = 1
_ENTRY_FIELDS = {"texts", "prompt_tokens", "completion_tokens"}


def _encode(value: Any, **options: Any) -> bytes:
    # `backslashreplace` turns a lone surrogate into `\udXXX`, which is its JSON escape: the file
    # stays valid UTF-8 and JSON, and reads back unchanged.
    return json.dumps(value, ensure_ascii=False, **options).encode("utf-8", "backslashreplace")


class ResponseCache:
    """Answers stored under `directory/<2 hex>/<sha256>.json`."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = os.fspath(directory)

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        """The hash naming a request's entry."""
        blob = _encode({"v": CACHE_VERSION, **request}, sort_keys=True, default=str)
        return hashlib.sha256(blob).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry stored under `key`, or None when there is none or it is damaged."""
        try:
            with open(self._path(key), "rb") as fh:
                entry = json.loads(fh.read())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(entry, dict) or not _ENTRY_FIELDS <= entry.keys():
            return None
        return entry

    async def put(self, key: str, entry: dict[str, Any]) -> None:
        """Store `entry` under `key`; the file work runs in a thread, off the event loop."""
        await asyncio.to_thread(self._write, self._path(key), _encode(entry))

    @staticmethod
    def _write(path: str, data: bytes) -> None:
        with atomic_write(path, "wb") as fh:
            fh.write(data)

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], f"{key}.json")
