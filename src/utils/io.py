"""Safe, streaming file I/O shared by every stage.

- readers validate each record and name file, line and field on failure (`InputError`); an empty
  input and a repeated id are refused, since either would silently build nothing or twice;
- long stages append JSONL and resume from what is already there (`JsonlAppender`, `completed_keys`);
- whole files are written to a temp file and renamed (`atomic_write`, `JsonArrayWriter`);
- one writer per output: appenders and dataset writers hold a lock file beside their output
  (`output_lock`), so a second run on the same output refuses instead of doubling it;
- work can be split into shards (`Shard`).
"""

from __future__ import annotations

import fcntl
import functools
import gzip
import json
import os
import re
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class InputError(Exception):
    """Bad input: the message is one line naming file, record and field."""


def open_text(path: str | Path, mode: str = "rt") -> IO[str]:
    """Open a UTF-8 text file, transparently gunzipping `*.gz`."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def describe_validation_error(err: ValidationError) -> str:
    """First error of a pydantic ValidationError as `field a.b[0]: message`; a check of the whole record
    names its field in its own message, which is given as it is."""
    first = err.errors()[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    if not loc:
        return first["msg"].removeprefix("Value error, ")
    return f"field {loc}: {first['msg']}"


def parse_jsonl_line(line: str, model: type[T], path: str | Path, lineno: int) -> T:
    """Validate one JSONL line, raising `InputError` that names file, line, record id and field."""
    obj = json_line_object(line, path, lineno)
    try:
        return model.model_validate(obj)
    except ValidationError as err:
        raise InputError(f"{path}: line {lineno}{record_label(obj)}: {describe_validation_error(err)}") from None


def json_line_object(line: str, path: str | Path, lineno: int) -> dict[str, Any]:
    """One JSONL line as a JSON object whose texts are all valid UTF-8, or a one-line `InputError`
    (invalid JSON, not an object, a lone surrogate escape)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: line {lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise InputError(f"{path}: line {lineno}: invalid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
    if _SURROGATE_ESCAPE.search(line):
        field = _lone_surrogate_field(obj)
        if field is not None:
            raise InputError(
                f"{path}: line {lineno}{record_label(obj)}: field {field}: a lone surrogate escape "
                "(\\ud800-\\udfff without its pair), not valid UTF-8 text"
            )
    return obj


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""A JSON escape of a UTF-16 surrogate: paired ones decode to one character, a lone one to text that
no UTF-8 file, request or cache can hold."""


def record_label(obj: dict[str, Any]) -> str:
    """` (record ID)` for a message about a JSON record, from the first id field it has ("" without)."""
    record_id = obj.get("session_id") or obj.get("gptId") or obj.get("id")
    return f" (record {record_id})" if isinstance(record_id, str | int) and record_id != "" else ""


def _lone_surrogate_field(value: Any, where: str = "") -> str | None:
    """The path (`turns[0].samples[1].response`) of the first text holding a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "<record>"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        found = _lone_surrogate_field(key, inner) if isinstance(key, str) else None
        found = found or _lone_surrogate_field(item, inner)
        if found:
            return found
    return None


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """The numbered non-blank lines of a UTF-8 (optionally gzipped) text file.

    Lines are decoded one by one, so a bad byte is reported with its line; a leading byte-order
    mark is dropped; unreadable files and corrupt gzip data become one-line `InputError`s.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    lineno = 0
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise InputError(f"{path}: line {lineno}: not valid UTF-8 (byte {err.start + 1})") from None
                if line.strip():
                    yield lineno, line
    except (OSError, EOFError, zlib.error) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
        raise InputError(f"{path}: line {lineno + 1}: cannot read ({reason})") from None


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file (a leading byte-order mark dropped); a missing or unreadable file and
    a bad byte (named by line and byte) are one-line `InputError`s."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(f"{path}: line {line}: not valid UTF-8 (byte {err.start - line_start + 1})") from None


def read_json(path: str | Path) -> Any:
    """One whole JSON document from a UTF-8 file, with `read_text`'s one-line errors and invalid
    JSON named by line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: line {err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid JSON (nested too deeply)") from None


def read_jsonl(
    path: str | Path, model: type[T], unique: str | None = None, allow_empty: bool = False
) -> Iterator[T]:
    """Stream validated records from a JSONL(.gz) file; blank lines are skipped.

    An input without records is refused (a stage that reads nothing builds nothing) unless
    `allow_empty` (a run's own output, read back to resume); with `unique`, a repeated value of
    that field is refused too (two records for one id would double its data).
    """
    first_seen: dict[Any, int] = {}
    for lineno, line in iter_lines(path):
        record = parse_jsonl_line(line, model, path, lineno)
        if unique is not None:
            value = getattr(record, unique)
            if value in first_seen:
                raise InputError(
                    f"{path}: line {lineno}: field {unique}: duplicate id {value!r} "
                    f"(first at line {first_seen[value]})"
                )
            first_seen[value] = lineno
        elif not first_seen:
            first_seen[None] = lineno
        yield record
    if not first_seen and not allow_empty:
        raise InputError(f"{path}: no records (the file is empty or holds only blank lines)")


def read_jsonl_dicts(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream raw objects from a JSONL file written by this toolkit, ignoring a torn last line."""
    path = Path(path)
    if not path.exists():
        return
    with open_text(path) as fh:
        for line in fh:
            if not line.endswith("\n"):
                return  # interrupted write: the appender truncates it on resume
            if line.strip():
                yield json.loads(line)


def dumps(record: BaseModel | dict[str, Any]) -> str:
    """Compact UTF-8 JSON for one record (pydantic models keep their aliases, drop Nones they never had)."""
    if isinstance(record, BaseModel):
        record = record.model_dump(by_alias=True, exclude_unset=True)
    return json.dumps(record, ensure_ascii=False)


@contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock file `.{name}.lock` beside `path` while writing it.

    A second run on the same output refuses at once with a line naming the holder, instead of
    interleaving with the first or appending every record twice. The lock is an flock, so a killed
    run never leaves a stale one; the file is removed on release (a run that locked a file just
    removed checks the inode and locks the new one instead).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise InputError(
                f"{path}: another run is writing this output ({holder}); wait for it or choose another output"
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n".encode(), 0)
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


class JsonlAppender:
    """Append-only JSONL output that survives interruption.

    On open, a torn last line (a write cut short by a kill) is truncated away, so the file is
    always a sequence of complete records; every record is flushed as soon as it is written.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = output_lock(self.path)
        self._lock.__enter__()
        try:
            _truncate_torn_tail(self.path)
            self._fh = open(self.path, "a", encoding="utf-8")
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def write(self, record: BaseModel | dict[str, Any]) -> None:
        self._fh.write(dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        try:
            self._fh.close()
        finally:
            self._lock.__exit__(None, None, None)

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        data_end = fh.seek(0, os.SEEK_END)
        chunk = min(data_end, 1 << 20)
        while True:
            fh.seek(data_end - chunk)
            buf = fh.read(chunk)
            cut = buf.rfind(b"\n")
            if cut >= 0:
                fh.truncate(data_end - chunk + cut + 1)
                return
            if chunk == data_end:
                fh.truncate(0)
                return
            chunk = min(data_end, chunk * 2)


def refuse_other_settings(path: Path, settings: dict[str, Any]) -> None:
    """A resumed JSONL output holds only records made with these settings (they travel on every
    record): appending another run's records to it would mix two runs in one dataset."""
    if not settings or not path.exists():
        return
    for lineno, line in iter_lines(path):
        record = json_line_object(line, path, lineno)
        for key, value in settings.items():
            if key in record and record[key] != value:
                raise InputError(f"{path}: line {lineno}: made with {key} {record[key]!r}, not {value!r}: "
                                 "resume it with the same settings or write to another output")


def completed_keys(path: str | Path, key: Callable[[dict[str, Any]], Any]) -> set[Any]:
    """Keys of the records already in an append-only output: what a resumed run skips."""
    return {key(obj) for obj in read_jsonl_dicts(path)}


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _new_file_mode()
"""The mode `open(path, "w")` would give a new file under this process's umask."""


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temp file beside `path`, then rename over it: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _NEW_FILE_MODE)  # mkstemp makes it private; the result is an ordinary file
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class JsonArrayWriter:
    """Stream records into one JSON array file (LLaMA-Factory's dataset format), atomically.

    Memory stays flat however many records pass through.
    """

    def __init__(self, path: str | Path):
        self._lock = output_lock(path)
        self._ctx = atomic_write(path)
        self._fh: IO[str] | None = None
        self.count = 0

    def __enter__(self) -> JsonArrayWriter:
        self._lock.__enter__()
        try:
            self._fh = self._ctx.__enter__()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self._fh.write("[")
        self._fh.flush()  # from here on, records go straight to the file descriptor
        return self

    def write(self, record: BaseModel | dict[str, Any]) -> None:
        self.write_encoded(dumps(record).encode("utf-8"))

    def write_encoded(self, data: bytes, count: int = 1) -> None:
        """Append `count` records already encoded as UTF-8 JSON objects joined by `,\\n`.

        Hot loops assemble records from pieces they encoded once; the bytes go straight to the file.
        """
        if count == 0:
            return
        assert self._fh is not None
        write_all(self._fh.fileno(), (b"\n" if self.count == 0 else b",\n", data))
        self.count += count

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            assert self._fh is not None
            self._fh.write("\n]\n" if self.count else "]\n")
        try:
            self._ctx.__exit__(exc_type, exc, tb)
        finally:
            self._lock.__exit__(None, None, None)


def write_all(fd: int, pieces: Sequence[bytes]) -> None:
    """Write the pieces in order with one system call (more only after a short write)."""
    size = sum(map(len, pieces))
    written = os.writev(fd, pieces)
    if written == size:
        return
    rest = memoryview(b"".join(pieces))[written:]
    while rest:
        rest = rest[os.write(fd, rest):]


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically (pretty-printed, UTF-8)."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2)
        fh.write("\n")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based, written `index/count`), selecting items round-robin."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, spec: str | None) -> Shard:
        if spec in (None, ""):
            return cls()
        try:
            index, count = (int(part) for part in str(spec).split("/"))
        except ValueError:
            raise InputError(f"--shard: expected INDEX/COUNT such as 0/4, got {spec!r}") from None
        if count < 1 or not 0 <= index < count:
            raise InputError(f"--shard: need 0 <= INDEX < COUNT, got {spec!r}")
        return cls(index, count)

    def select(self, items: Iterable[T]) -> Iterator[T]:
        return (item for i, item in enumerate(items) if i % self.count == self.index)

    def path(self, path: str | Path) -> Path:
        """Per-shard output path: `x.jsonl` → `x.shard-0-of-4.jsonl` (unchanged for one shard)."""
        path = Path(path)
        if self.count == 1:
            return path
        return path.with_name(f"{path.stem}.shard-{self.index}-of-{self.count}{path.suffix}")


def exit_on_input_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for CLI entry points: an `InputError` becomes one stderr line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
