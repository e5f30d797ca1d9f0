"""Constraint reversal (paper §4.3) and its verification.

`LLMReverser` reverses all of a profile's constraints in one call; answers map back by the index
each item carries, by position when indices are missing, and by fuzzy match of the restated
constraint only as a last resort. The model may answer null for a constraint with no meaningful
opposite. A wrong count or unparseable answer is retried; after that the profile's reversals are
all None (nothing is guessed) and the failure is counted.

`verify_reversals` checks reversals against data: a response that FAILS constraint k must satisfy
its reversal, otherwise reversal k is flagged (the paper found 8.4% of LLM reversals unusable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rpo.utils.llm.client import LLMClient
from rpo.utils.prompts import render_lang
from rpo.utils.prompts.language import resolve_lang
from rpo.utils.roles.judge import JudgeStats, LLMJudge
from rpo.utils.roles.parsing import (
    RESTATED_KEYS,
    ParseFailure,
    align,
    ask_structured,
    extract_list,
    first_value,
)
from rpo.utils.roles.protocols import ReversalVerifier
from rpo.utils.schema import ProfileCore, SessionDetail
from rpo.utils.stats import Tally, counter

REVERSED_KEYS = ("reversed", "reverse", "reverse_cons", "reversed_constraint", "opposite")
_NOT_REVERSIBLE = {"", "null", "none", "n/a", "na", "-", "无", "无法反转", "不可反转", "cannot be reversed"}


@dataclass
class ReverseStats(Tally):
    """Reversals made, constraints without one, and profiles the reverser could not answer for."""

    profiles: int = counter("profiles")
    constraints: int = counter("constraints")
    not_reversible: int = counter("not reversible")
    failed_profiles: int = counter("profiles left unreversed after retries")
    retries: int = counter("format retries")


def _reversal_text(value: Any) -> str | None:
    if value is None or not isinstance(value, str):
        return None
    text = value.strip()
    return None if text.lower().strip(".。") in _NOT_REVERSIBLE else text


def _by_index(items: list[dict[str, Any]], n: int) -> list[int] | None:
    """Order from the items' own 1-based "index" fields, when they cover 1..n exactly once."""
    indices = []
    for item in items:
        value = item.get("index", item.get("id"))
        try:
            indices.append(int(value))
        except (TypeError, ValueError):
            return None
    if sorted(indices) != list(range(1, n + 1)):
        return None
    return [indices.index(k + 1) for k in range(n)]


def parse_reversals(text: str, constraints: Sequence[str]) -> list[str | None]:
    """Index-aligned reversals from a reverser answer, or `ParseFailure`."""
    items = extract_list(text)
    if not all(isinstance(item, dict) for item in items):
        raise ParseFailure("bad_item")
    if not all(any(key in item for key in REVERSED_KEYS) for item in items):
        raise ParseFailure("bad_item")
    n = len(constraints)
    order = _by_index(items, n)
    if order is None:
        restated = [first_value(item, RESTATED_KEYS) for item in items]
        order = align([r if isinstance(r, str) else None for r in restated], constraints)
    if order is None:
        raise ParseFailure("wrong_count" if len(items) != n else "bad_item", got=len(items))
    return [_reversal_text(first_value(items[i], REVERSED_KEYS)) for i in order]


class LLMReverser:
    """`Reverser` backed by an LLM role (one call per profile)."""

    def __init__(
        self,
        client: LLMClient,
        role: str = "reverse",
        lang: str | None = None,
        max_attempts: int = 3,
        stats: ReverseStats | None = None,
    ):
        self.client = client
        self.role = role
        self.lang = lang
        self.max_attempts = max_attempts
        self.stats = stats or ReverseStats()

    async def reverse(self, profile: ProfileCore) -> list[str | None]:
        """Every constraint's reversal; all None (counted) when no usable answer came."""
        reversals = await self.reverse_or_none(profile)
        return [None] * len(profile.constraints) if reversals is None else reversals

    async def reverse_or_none(self, profile: ProfileCore) -> list[str | None] | None:
        """Like `reverse`, but None when no usable answer came, so a stage can retry the profile later."""
        constraints = profile.constraints
        self.stats.profiles += 1
        self.stats.constraints += len(constraints)
        if not constraints:
            return []
        lang = resolve_lang(self.lang, profile)
        prompt = render_lang("reverse", lang, constraints=constraints)
        parsed = await ask_structured(
            self.client,
            self.role,
            prompt,
            lang,
            lambda text: parse_reversals(text, constraints),
            expected=len(constraints),
            keys=("index", "constraint", "reversed"),
            max_attempts=self.max_attempts,
            on_retry=self._count_retry,
        )
        if parsed is None:
            self.stats.failed_profiles += 1
            self.stats.not_reversible += len(constraints)
            return None
        self.stats.not_reversible += sum(r is None for r in parsed)
        return parsed

    def _count_retry(self) -> None:
        self.stats.retries += 1


class LLMReversalVerifier:
    """Asks the judge role, with a prompt showing each reversal beside its original."""

    def __init__(
        self,
        client: LLMClient,
        role: str = "judge",
        lang: str | None = None,
        max_attempts: int = 3,
        stats: JudgeStats | None = None,
    ):
        self.judge = LLMJudge(
            client, role=role, lang=lang, max_attempts=max_attempts, stats=stats, template="verify_reversal"
        )

    async def verify(
        self, profile: ProfileCore, query: str, response: str, indices: list[int], reversals: list[str]
    ) -> list[bool] | None:
        originals = [profile.constraints[k] for k in indices]
        verdicts = await self.judge.judge_list(
            reversals, query, response, resolve_lang(self.judge.lang, profile), originals=originals
        )
        return verdicts.follows


@dataclass
class ReversalCheck:
    """Outcome for one constraint: how many failing responses were checked and how many satisfied it."""

    index: int
    constraint: str
    reversed: str | None
    checked: int = 0
    satisfied: int = 0
    unjudged: int = 0

    @property
    def ok(self) -> bool | None:
        """False when some response failing the constraint does not satisfy the reversal; None if unchecked."""
        return None if self.checked == 0 else self.satisfied == self.checked

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


async def verify_reversals(
    detail: SessionDetail, verifier: ReversalVerifier, max_checks: int = 3
) -> list[ReversalCheck]:
    """Check each reversal on up to `max_checks` judged responses that fail its constraint.

    One verifier call per sample covers every reversal that sample can test.
    """
    constraints = detail.profile.constraints
    checks = [
        ReversalCheck(k, c, r) for k, (c, r) in enumerate(zip(constraints, detail.reversed_constraints))
    ]
    for turn in detail.turns:
        for sample in turn.samples:
            if sample.follows is None:
                continue
            indices = [
                k
                for k, followed in enumerate(sample.follows)
                if not followed
                and checks[k].reversed is not None
                and checks[k].checked + checks[k].unjudged < max_checks
            ]
            if not indices:
                continue
            reversals = [r for k in indices if (r := checks[k].reversed) is not None]
            verdicts = await verifier.verify(detail.profile, turn.query, sample.response, indices, reversals)
            for position, k in enumerate(indices):
                if verdicts is None:
                    checks[k].unjudged += 1
                else:
                    checks[k].checked += 1
                    checks[k].satisfied += int(verdicts[position])
    return checks
