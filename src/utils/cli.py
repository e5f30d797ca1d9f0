"""Argument checks for the Fire CLIs, written once.

Fire turns `--n=abc` into a string, `--n=2.5` into a float and `--flag=false` into the string
"false", so every stage checks its arguments' types and ranges here, at the boundary, and refuses a
bad one with a single `InputError` line naming the flag, instead of failing later with a traceback.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import fire
import fire.helptext
from rpo.utils.io import InputError
from rpo.utils.schema import first_blank_constraint

T = TypeVar("T")
C = TypeVar("C", bound=str)


def integer(flag: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int within [minimum, maximum]; bools, floats and text are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"--{flag}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"--{flag}: expected at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InputError(f"--{flag}: expected at most {maximum}, got {value}")
    return value


def optional_integer(flag: str, value: Any, minimum: int | None = None) -> int | None:
    """`integer`, or None when the flag was not given (the config's value applies)."""
    return None if value is None else integer(flag, value, minimum=minimum)


def fraction(flag: str, value: Any, allow_zero: bool = True) -> float:
    """`value` as a float in [0, 1] (or (0, 1] without `allow_zero`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"--{flag}: expected a number between 0 and 1, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise InputError(f"--{flag}: expected a fraction in {interval}, got {value}")
    return float(value)


def switch(flag: str, value: Any) -> bool:
    """`value` as a bool (Fire passes `--flag=false` as text)."""
    if not isinstance(value, bool):
        raise InputError(f"--{flag}: expected true or false (or --{flag} / --no-{flag}), got {value!r}")
    return value


def name(flag: str, value: Any) -> str:
    """A plain file stem (a dataset name, a role): it names `{dir}/{name}.json` and nothing elsewhere."""
    text = value if isinstance(value, str) else ""
    if not text.strip() or text in {".", ".."} or Path(text).name != text or "\\" in text or not text.isprintable():
        raise InputError(f"--{flag}: expected a plain name, got {value!r}")
    return text


def choice(flag: str, value: Any, choices: tuple[C, ...]) -> C:
    """One of `choices`, named in the refusal."""
    if value not in choices:
        raise InputError(f"--{flag}: expected {' or '.join(choices)}, got {value!r}")
    return value  # type: ignore[no-any-return]


def output_file(flag: str, value: Any) -> Path:
    """A path this run can create or replace: refused when it is a directory, sits under a file,
    or its directory cannot be written."""
    path = Path(_text(flag, value))
    if path.is_dir():
        raise InputError(f"--{flag}: {path} is a directory, expected a file path")
    _writable_dir(flag, path.parent)
    return path


def output_dir(flag: str, value: Any) -> Path:
    """A directory this run can create or write into."""
    path = Path(_text(flag, value))
    _writable_dir(flag, path)
    return path


def _text(flag: str, value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"--{flag}: expected a path, got {value!r}")
    return value


def _writable_dir(flag: str, path: Path) -> None:
    """Create `path` and a scratch file in it: the only check that also holds for root and for
    read-only file systems."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"--{flag}: {existing} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise InputError(f"--{flag}: cannot write into {path} ({err.strerror or err})") from None


def refuse_blank_constraints(records: Iterable[T], path: str | Path) -> Iterator[T]:
    """Pass records through, refusing one whose profile holds a constraint that states nothing
    (blank or a bare `1. `: it would be judged, reversed and restated as nothing)."""
    for record in records:
        profile = getattr(record, "profile", record)
        blank = first_blank_constraint(profile.constraints)
        if blank:
            record_id = getattr(record, "session_id", None) or getattr(record, "id", None)
            raise InputError(f"{path}: record {record_id}: field {blank}")
        yield record


def conclude(built_what: str, built: int, failed: int = 0, first_failure: str = "") -> None:
    """The stage's last word, after its summary: exit 1 with one line when items failed (they are
    not recorded as done, so a rerun retries them) or when nothing was built."""
    if failed:
        print(
            f"error: {failed} item(s) failed and were not recorded as done (first: {first_failure}); "
            "rerun to retry exactly those",
            file=sys.stderr,
        )
        sys.exit(1)
    if not built:
        print(f"error: nothing built ({built_what}: 0)", file=sys.stderr)
        sys.exit(1)


HELP_FLAGS = ("-h", "--help")


def fire_arguments(argv: list[str]) -> list[str]:
    """The command line as Fire should read it: `--no-FLAG` spelled `--noFLAG`, and `--help` passed
    after `--`, Fire's own way to ask for help (the shortcut makes it print an `INFO: Showing help`
    line first)."""
    if "--" in argv:
        return argv
    args = [f"--no{arg[5:]}" if arg.startswith("--no-") else arg for arg in argv]
    if any(arg in HELP_FLAGS for arg in args):
        args = [arg for arg in args if arg not in HELP_FLAGS] + ["--", "--help"]
    return args


def run(main: Callable[..., Any] | dict[str, Callable[..., Any]]) -> None:
    """`fire.Fire(main)` where every CLI starts: `--no-FLAG` for a boolean flag, help without Fire's
    INFO line and with every default shown whole (Fire cuts those longer than its 80-column layout)."""
    argv = fire_arguments(sys.argv[1:])
    fire.helptext.LINE_LENGTH = 1000
    try:
        fire.Fire(main, command=argv)
    except OSError as err:  # an output that cannot be written, a disk that is full: one line, not a traceback
        target = f"{err.filename}: " if err.filename else ""
        print(f"error: {target}{err.strerror or err}", file=sys.stderr)
        sys.exit(2)


def warn_workers_ignored(workers: Any) -> None:
    """`--workers` chose how many processes encoded a large detail file; construction now streams in
    one process (faster than the released algorithm by itself), so the flag is accepted and ignored."""
    if workers is not None:
        print("note: --workers is no longer needed (pair construction runs in one process); ignored",
              file=sys.stderr)
