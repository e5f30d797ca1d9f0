"""Constraint reversal over a file of profiles or session details, and reversal checks: judging each
constraint's reversal on samples that fail the constraint, so a bad reversal can be nulled before
pair construction (the work behind `src/dsc/reverse_constrain.py`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rpo.utils.io import InputError, JsonlAppender, iter_lines
from rpo.utils.llm.client import LLMError
from rpo.utils.llm.concurrency import bounded_map
from rpo.utils.roles.reverser import LLMReverser, ReversalVerifier, verify_reversals
from rpo.utils.schema import SessionDetail, SystemProfile
from rpo.utils.stages.outcome import note_failure
from rpo.utils.stats import Tally, counter

R = TypeVar("R")


@dataclass
class ReversalRunStats(Tally):
    """Records reversed, skipped as done, and failed (not written, so a rerun tries them again)."""

    written: int = counter("written")
    skipped: int = counter("skipped (already done)")
    failed: int = counter("failed, not recorded (a rerun retries them)")
    first_failure: str = ""


@dataclass
class VerifyStats(Tally):
    """Reversals checked against data and how many were flagged as bad."""

    records: int = counter("records")
    skipped: int = counter("skipped (already done)")
    failed: int = counter("failed, not recorded (a rerun retries them)")
    reversals: int = counter("reversals")
    checked: int = counter("checked on data")
    flagged: int = counter("flagged as bad")
    first_failure: str = ""

    def summary(self) -> str:
        share = f"{self.flagged / self.checked:.1%}" if self.checked else "n/a"
        return f"{super().summary()} ({share} of checked)"


def input_kind(path: str | Path) -> str:
    """'detail' when the first record has a session_id, else 'profile'."""
    for lineno, line in iter_lines(path):
        try:
            first = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{path}: line {lineno}: invalid JSON ({err.msg} at column {err.colno})"
            ) from None
        return "detail" if isinstance(first, dict) and "session_id" in first else "profile"
    raise InputError(f"{path}: no records (the file is empty or holds only blank lines)")


def not_done(
    records: Iterable[R], done: set[Any], key: str, stats: ReversalRunStats | VerifyStats
) -> Iterator[R]:
    """The records whose `key` is not in `done`, counting the others as skipped."""
    for record in records:
        if getattr(record, key) in done:
            stats.skipped += 1
        else:
            yield record


async def reverse_records(
    records: Iterable[SystemProfile | SessionDetail],
    reverser: LLMReverser,
    out: JsonlAppender,
    concurrency: int,
    stats: ReversalRunStats,
) -> None:
    """Append each record with `reversed_constraints` (re)computed; a record whose request failed
    for good or whose answer stayed unusable is counted as failed and not written."""

    async def reverse(record: SystemProfile | SessionDetail) -> dict[str, Any] | None:
        is_detail = isinstance(record, SessionDetail)
        record_id = record.session_id if is_detail else record.id
        try:
            reversals = await reverser.reverse_or_none(record.profile if is_detail else record)
        except LLMError as err:
            note_failure(stats, record_id, err)
            return None
        if reversals is None:
            note_failure(stats, record_id, "no usable reversal answer after retries")
            return None
        return {**record.model_dump(exclude_unset=True), "reversed_constraints": reversals}

    async for _, result in bounded_map(reverse, records, concurrency, desc="reverse"):
        if result is not None:
            out.write(result)
            stats.written += 1


async def verify_records(
    details: Iterable[SessionDetail],
    verifier: ReversalVerifier,
    out: JsonlAppender,
    max_checks: int,
    keep_bad: bool,
    concurrency: int,
    stats: VerifyStats,
) -> None:
    """Verify each record's reversals and append it with `reversal_checks` (bad ones nulled unless
    kept); a record whose request failed for good is counted as failed and not written."""

    async def check(detail: SessionDetail) -> dict[str, Any] | None:
        try:
            checks = await verify_reversals(detail, verifier, max_checks=max_checks)
        except LLMError as err:
            note_failure(stats, detail.session_id, err)
            return None
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
        if record is not None:
            out.write(record)
