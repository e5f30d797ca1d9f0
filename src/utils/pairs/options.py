"""The builders' option values, checked before anything is read: a bad one is one line naming its flag."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypeVar

from rpo.utils.io import InputError

C = TypeVar("C", bound=str)


def choice(flag: str, value: Any, choices: tuple[C, ...]) -> C:
    if value not in choices:
        raise InputError(f"--{flag}: expected {' or '.join(choices)}, got {value!r}")
    return value  # type: ignore[no-any-return]


def whole_number(flag: str, value: Any, minimum: int) -> int:
    """An integer flag value (Fire passes what it parsed: "abc" stays a string, 2.5 a float)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"--{flag}: expected a whole number, got {value!r}")
    if value < minimum:
        raise InputError(f"--{flag}: expected at least {minimum}, got {value}")
    return value


def dataset_name(value: Any) -> str:
    """A dataset name is a plain file stem: it names `{output_dir}/{name}.json` and nothing elsewhere."""
    name = str(value)
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name or not name.isprintable():
        raise InputError(f"--dataset_name: expected a plain file name without directories, got {name!r}")
    return name


def warn_workers_ignored(workers: Any) -> None:
    """`--workers` chose how many processes encoded a large detail file; construction now streams in
    one process (faster than the released algorithm by itself), so the flag is accepted and ignored."""
    if workers is not None:
        print("note: --workers is no longer needed (pair construction runs in one process); ignored",
              file=sys.stderr)
