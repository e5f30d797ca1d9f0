"""Reversal checks: judging each constraint's reversal on samples that fail the constraint, so a
bad reversal can be nulled before pair construction (the work behind `src/dsc/reverse_constrain.py`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpo.utils.io import (
    InputError,
    JsonlAppender,
    open_text,
)
from rpo.utils.llm.concurrency import bounded_map
from rpo.utils.roles.reverser import ReversalVerifier, verify_reversals
from rpo.utils.schema import SessionDetail


@dataclass
class VerifyStats:
    records: int = 0
    skipped: int = 0
    reversals: int = 0
    checked: int = 0
    flagged: int = 0

    def summary(self) -> str:
        share = f"{self.flagged / self.checked:.1%}" if self.checked else "n/a"
        return (
            f"records {self.records} (skipped, already done: {self.skipped}), reversals {self.reversals}, "
            f"checked on data {self.checked}, flagged as bad {self.flagged} ({share} of checked)"
        )


def input_kind(path: str | Path) -> str:
    """'detail' when the first record has a session_id, else 'profile'."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(
                        f"{path}: line {lineno}: invalid JSON ({err.msg} at column {err.colno})"
                    ) from None
                return "detail" if isinstance(first, dict) and "session_id" in first else "profile"
    raise InputError(f"{path}: no records")


async def verify_records(
    details: Iterator[SessionDetail],
    verifier: ReversalVerifier,
    out: JsonlAppender,
    max_checks: int,
    keep_bad: bool,
    concurrency: int,
    stats: VerifyStats,
) -> None:
    """Verify each record's reversals and append it with `reversal_checks` (bad ones nulled unless kept)."""

    async def check(detail: SessionDetail) -> dict[str, Any]:
        checks = await verify_reversals(detail, verifier, max_checks=max_checks)
        record = detail.model_dump(exclude_unset=True)
        if not keep_bad:
            record["reversed_constraints"] = [
                None if c.ok is False else r for c, r in zip(checks, detail.reversed_constraints)
            ]
        record["reversal_checks"] = [c.to_dict() for c in checks]
        stats.records += 1
        stats.reversals += sum(r is not None for r in detail.reversed_constraints)
        stats.checked += sum(c.ok is not None for c in checks)
        stats.flagged += sum(c.ok is False for c in checks)
        return record

    async for _, record in bounded_map(check, details, concurrency, desc="verify"):
        out.write(record)
