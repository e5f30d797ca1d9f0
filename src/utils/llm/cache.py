"""The on-disk answer cache of the LLM client: one JSON file per request, named by its hash.

A rerun of a stage sends the same requests, finds every answer here and costs no calls. The key is
the sha256 of the whole request (endpoint set, model, sampling settings, messages, n), so any
change to a request asks again. Entries are written to a temp file and renamed into place, so a
reader sees a whole entry or none; an entry torn or damaged in any other way is a miss, asked again
and rewritten. Text that UTF-8 cannot hold (a lone surrogate) is written as its JSON escape,
which reads back as the same string.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from typing import Any

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
        self._directories: set[str] = set()  # known to exist
        self._writes = itertools.count()

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

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Store `entry` under `key`: written beside its final name, then renamed into place.

        Not fsynced, unlike `rpo.utils.io.atomic_write`: that costs more than the request itself,
        and an entry lost to a crash is only asked again. Written in the event loop, since handing
        a ~30 us write to a thread costs the loop more than the write.
        """
        path = self._path(key)
        directory = os.path.dirname(path)
        if directory not in self._directories:
            os.makedirs(directory, exist_ok=True)
            self._directories.add(directory)
        # A name unique to this process and write: a concurrent shard or rerun reading `path` sees
        # the old entry, the new one, or none, never part of one.
        tmp = f"{path}.{os.getpid()}.{next(self._writes)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, _encode(entry))
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], f"{key}.json")
