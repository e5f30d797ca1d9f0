"""The pair rules of RPO, the DPO baseline and KTO, decided on one turn's follow vectors.

A follow vector holds one verdict per constraint of the profile: True (the response follows it),
False (it fails it) or None (not in play: the turn's query does not trigger it). The constraints in
play are the turn's `triggered` list, or every constraint of a detail written without one.

RPO (paper §4): every two responses whose vectors differ make two pairs, each response once chosen.
The chosen's prompt states what it follows as written and what it fails reversed, so the chosen
follows everything its prompt says; a failed constraint without a reversal is left out of the prompt
("drop") or refuses the pair ("skip"). The margin is the number of constraints in the prompt on which
the two responses differ. DPO: the original prompt, the response following more constraints chosen.
KTO (appendix D.1): the best response desirable under the constraints it follows, the worst one
undesirable under those it fails.

Nothing here counts or renders: `records` turns these decisions into dataset records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal, NamedTuple

Follows = Sequence[bool | None]
NonReversible = Literal["drop", "skip"]
PromptConstraints = Literal["triggered", "all"]
Outcome = Literal["emit", "skip", "zero_margin"]


def in_play(n_constraints: int, triggered: Sequence[int] | None) -> tuple[int, ...]:
    """The constraints a turn judges: its triggered ones, else all of them."""
    return tuple(range(n_constraints)) if triggered is None else tuple(triggered)


def distinct(vectors: Sequence[Follows | None]) -> list[int]:
    """Indices of the judged samples whose follow vector no earlier sample has: the pairing pool."""
    seen: set[tuple[bool | None, ...]] = set()
    pool = []
    for index, vector in enumerate(vectors):
        if vector is not None and tuple(vector) not in seen:
            seen.add(tuple(vector))
            pool.append(index)
    return pool


def score(vector: Follows) -> int:
    """The number of constraints a response follows."""
    return sum(verdict is True for verdict in vector)


@dataclass(frozen=True)
class ReversedPrompt:
    """The constraints of the prompt under which a response is chosen.

    `stated` holds the constraints in play that the prompt keeps, in order, each with whether it is
    stated reversed (the response fails it); `left_out` the ones it fails that have no reversal.
    """

    stated: tuple[tuple[int, bool], ...]
    left_out: tuple[int, ...]


def reversed_prompt(chosen: Follows, play: Sequence[int], reversible: Sequence[bool]) -> ReversedPrompt:
    """The prompt that makes `chosen` perfect: followed constraints as written, failed ones reversed."""
    stated: list[tuple[int, bool]] = []
    left_out: list[int] = []
    for k in play:
        if chosen[k]:
            stated.append((k, False))
        elif reversible[k]:
            stated.append((k, True))
        else:
            left_out.append(k)
    return ReversedPrompt(tuple(stated), tuple(left_out))


def rpo_margin(chosen: Follows, rejected: Follows, prompt: ReversedPrompt) -> int:
    """The constraints of the chosen's prompt on which the rejected differs, i.e. fails as stated."""
    return sum(chosen[k] != rejected[k] for k, _ in prompt.stated)


class RpoPair(NamedTuple):
    """Sample `chosen` over sample `rejected` under `prompt`, and whether the pair is emitted."""

    chosen: int
    rejected: int
    prompt: ReversedPrompt
    margin: int
    outcome: Outcome


def rpo_pairs(
    vectors: Sequence[Follows],
    play: Sequence[int],
    reversible: Sequence[bool],
    non_reversible: NonReversible = "drop",
) -> list[RpoPair]:
    """Both directions of every two distinct vectors (i over j, then j over i, for i < j).

    `vectors` are the turn's distinct follow vectors. A pair is skipped in "skip" mode when its chosen
    fails a constraint that has no reversal, and not emitted when its margin is 0 (the only
    differences were left out of the prompt).
    """
    prompts = [reversed_prompt(vector, play, reversible) for vector in vectors]
    pairs = []
    for i, j in combinations(range(len(vectors)), 2):
        for chosen, rejected in ((i, j), (j, i)):
            prompt = prompts[chosen]
            margin = rpo_margin(vectors[chosen], vectors[rejected], prompt)
            outcome: Outcome = "emit"
            if non_reversible == "skip" and prompt.left_out:
                outcome = "skip"
            elif margin == 0:
                outcome = "zero_margin"
            pairs.append(RpoPair(chosen, rejected, prompt, margin, outcome))
    return pairs


def prompt_constraints(
    constraints: Sequence[str],
    reversed_constraints: Sequence[str | None],
    prompt: ReversedPrompt,
    play: Sequence[int],
    which: PromptConstraints = "triggered",
) -> list[str]:
    """The constraint texts of a pair's prompt, in profile order.

    "triggered" lists only the constraints in play; "all" also keeps the others as written.
    """
    stated = dict(prompt.stated)
    texts = []
    for k, text in enumerate(constraints):
        if k in stated:
            texts.append(reversed_constraints[k] if stated[k] else text)  # type: ignore[arg-type]
        elif which == "all" and k not in play:
            texts.append(text)
    return texts


def dpo_pairs(vectors: Sequence[Follows]) -> list[tuple[int, int]]:
    """(chosen, rejected) for every two vectors whose scores differ, the higher score chosen."""
    pairs = []
    for i, j in combinations(range(len(vectors)), 2):
        a, b = score(vectors[i]), score(vectors[j])
        if a != b:
            pairs.append((i, j) if a > b else (j, i))
    return pairs


def dpo_gap(chosen: Follows, rejected: Follows) -> int:
    """A DPO pair's gap: how many more constraints the chosen follows."""
    return score(chosen) - score(rejected)


def kto_pick(vectors: Sequence[Follows]) -> tuple[int, int] | None:
    """(best, worst) by score, the first on ties, or None when the scores do not differ."""
    if not vectors:
        return None
    scores = [score(vector) for vector in vectors]
    best, worst = scores.index(max(scores)), scores.index(min(scores))
    return (best, worst) if scores[best] > scores[worst] else None


def kto_constraints(vector: Follows, play: Sequence[int], desirable: bool) -> list[int]:
    """The constraints in a KTO record's prompt: those in play that the response follows
    (desirable) or fails (undesirable)."""
    return [k for k in play if vector[k] is desirable]
