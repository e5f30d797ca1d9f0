"""Session details become dataset records: the pair rules applied turn by turn, counted as they go.

Records are LLaMA-Factory sharegpt dicts: the pair's system prompt, the earlier turns' queries and
reference responses, the query, then chosen and rejected (RPO with its margin, DPO without) or the
response and its `kto_tag` (KTO). Each function takes one validated `SessionDetail` and adds what it
saw to the counts it is given; `select`, where taken, is offered each emitted pair's gap in order and
keeps the pair when it returns True. Records of a turn share their message dicts (prompt, history,
answers): they are written, never changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpo.utils.io import InputError, read_jsonl
from rpo.utils.pairs.counts import DpoCounts, KtoCounts, PairCounts, RpoCounts
from rpo.utils.pairs.efficiency import direct_flags, reversed_pair_flags
from rpo.utils.pairs.rule import (
    Follows,
    NonReversible,
    PromptConstraints,
    RpoPair,
    distinct,
    dpo_gap,
    dpo_pairs,
    in_play,
    kto_constraints,
    kto_pick,
    prompt_constraints,
    rpo_pairs,
)
from rpo.utils.prompts.language import detect_lang
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.schema import SessionDetail, first_blank_constraint

Record = dict[str, Any]
Message = dict[str, str]
Select = Callable[[int], bool]


def read_sessions(detail_path: str | Path) -> Iterator[SessionDetail]:
    """The validated sessions of a detail file; an empty file, a repeated session_id and a constraint
    or reversal that states nothing (blank, a bare `1. `) are refused."""
    for session in read_jsonl(detail_path, SessionDetail, unique="session_id"):
        blank = first_blank_constraint(session.profile.constraints, session.reversed_constraints)
        if blank:
            field = blank if blank.startswith("reversed") else f"profile.{blank}"
            raise InputError(f"{detail_path}: record {session.session_id}: field {field}")
        yield session


def session_lang(session: SessionDetail) -> str:
    """The language the session's prompts were sampled in (recorded by sampling), else, for files
    written before it was recorded, the profile's own: pairs are trained on the sampled scaffold."""
    return session.lang or detect_lang(session.profile)


@dataclass(frozen=True)
class TurnPool:
    """A turn's distinct judged samples (first of each follow vector kept), ready for pairing."""

    number: int
    query: str
    play: tuple[int, ...]
    responses: list[str]
    vectors: list[Follows]
    judged: int


def _turns(session: SessionDetail, counts: PairCounts) -> Iterator[tuple[TurnPool, list[Message]]]:
    """Each turn's pool with the history before it, counting sessions, turns and samples."""
    n = len(session.profile.constraints)
    history: list[Message] = []
    counts.sessions += 1
    for number, turn in enumerate(session.turns, 1):
        follows = [sample.follows for sample in turn.samples]
        pool = distinct(follows)
        judged = sum(vector is not None for vector in follows)
        counts.turns += 1
        counts.samples += len(follows)
        counts.unjudged += len(follows) - judged
        counts.truncated += sum(sample.truncated for sample in turn.samples)
        counts.duplicates += judged - len(pool)
        yield (
            TurnPool(
                number=number,
                query=turn.query,
                play=in_play(n, turn.triggered),
                responses=[turn.samples[i].response for i in pool],
                vectors=[follows[i] for i in pool],  # type: ignore[misc]
                judged=judged,
            ),
            history,
        )
        history = [*history, _message("human", turn.query), _message("gpt", turn.reference_response)]


def _message(role: str, value: str) -> Message:
    return {"from": role, "value": value}


def _mask(indices: Sequence[int]) -> int:
    return sum(1 << k for k in indices)


def _count_table4(counts: RpoCounts, pool: TurnPool, emitted: list[RpoPair]) -> None:
    """Table 4 flags of a turn with two judged samples or more: direct pairing vs the pairs emitted."""
    if pool.judged < 2:
        return
    masks = [_mask([k for k in pool.play if vector[k]]) for vector in pool.vectors]
    valid = dominated = perfect = False
    for pair in emitted:
        kept = _mask([k for k, _ in pair.prompt.stated])
        flipped = _mask([k for k, reversed_ in pair.prompt.stated if reversed_])
        v, d, p = reversed_pair_flags(masks[pair.chosen], masks[pair.rejected], kept, flipped)
        valid, dominated, perfect = valid or v, dominated or d, perfect or p
        if valid and dominated and perfect:
            break
    direct = direct_flags(masks, _mask(pool.play))
    counts.efficiency.add_turn(len(pool.play), direct, (valid, dominated, perfect))


def _rpo_turns(
    session: SessionDetail, counts: RpoCounts, non_reversible: NonReversible
) -> Iterator[tuple[TurnPool, list[Message], list[RpoPair]]]:
    """Each turn with its history and emitted RPO pairs, counting what the rules refused."""
    reversible = [reversal is not None for reversal in session.reversed_constraints]
    for pool, history in _turns(session, counts):
        pairs = rpo_pairs(pool.vectors, pool.play, reversible, non_reversible)
        emitted = [pair for pair in pairs if pair.outcome == "emit"]
        counts.non_reversible_pairs += sum(bool(pair.prompt.left_out) for pair in pairs)
        counts.left_out_pairs += sum(bool(pair.prompt.left_out) for pair in emitted)
        counts.skipped_pairs += sum(pair.outcome == "skip" for pair in pairs)
        counts.zero_margin += sum(pair.outcome == "zero_margin" for pair in pairs)
        _count_table4(counts, pool, emitted)
        yield pool, history, emitted


def _count_rpo_pair(counts: RpoCounts, pair: RpoPair) -> None:
    counts.pairs += 1
    counts.margin_hist[pair.margin] += 1


def rpo_gaps(
    session: SessionDetail, counts: RpoCounts, non_reversible: NonReversible = "drop"
) -> Iterator[int]:
    """The margins of a session's RPO pairs, counted as `rpo_records` counts them, nothing rendered."""
    for _, _, emitted in _rpo_turns(session, counts, non_reversible):
        for pair in emitted:
            _count_rpo_pair(counts, pair)
            yield pair.margin


def rpo_records(
    session: SessionDetail,
    counts: RpoCounts,
    non_reversible: NonReversible = "drop",
    which_constraints: PromptConstraints = "triggered",
    select: Select | None = None,
) -> Iterator[Record]:
    """A session's RPO records, turn by turn, pair by pair (i over j, then j over i)."""
    profile = session.profile
    lang = session_lang(session)
    rendered: dict[tuple[str, ...], str] = {}  # a session's prompts: samples of many turns share them

    def system_prompt(pool: TurnPool, pair: RpoPair) -> str:
        texts = prompt_constraints(
            profile.constraints, session.reversed_constraints, pair.prompt, pool.play, which_constraints
        )
        key = tuple(texts)
        if key not in rendered:
            rendered[key] = render_system_prompt(profile, texts, lang)
        return rendered[key]

    for pool, history, emitted in _rpo_turns(session, counts, non_reversible):
        query = _message("human", pool.query)
        answers = [_message("gpt", response) for response in pool.responses]
        systems: dict[int, Message] = {}  # by chosen sample: its prompt is the same in all its pairs
        for pair in emitted:
            if select is not None and not select(pair.margin):
                continue
            _count_rpo_pair(counts, pair)
            if pair.chosen not in systems:
                systems[pair.chosen] = _message("system", system_prompt(pool, pair))
            yield {
                "conversations": [systems[pair.chosen], *history, query],
                "chosen": answers[pair.chosen],
                "rejected": answers[pair.rejected],
                "margin": pair.margin,
                "session_id": session.session_id,
                "turn": pool.number,
            }


def dpo_gaps(session: SessionDetail, counts: DpoCounts) -> Iterator[int]:
    """The score gaps of a session's DPO pairs, counted as `dpo_records` counts them."""
    for pool, _ in _turns(session, counts):
        for chosen, rejected in dpo_pairs(pool.vectors):
            counts.pairs += 1
            yield dpo_gap(pool.vectors[chosen], pool.vectors[rejected])


def dpo_records(session: SessionDetail, counts: DpoCounts, select: Select | None = None) -> Iterator[Record]:
    """A session's DPO baseline records: the original prompt, higher score chosen, no margin.

    The pool is the one RPO pairs (repeated follow vectors dropped), so both use the same samples.
    """
    system = _message("system", render_system_prompt(session.profile, lang=session_lang(session)))
    for pool, history in _turns(session, counts):
        for chosen, rejected in dpo_pairs(pool.vectors):
            if select is not None and not select(dpo_gap(pool.vectors[chosen], pool.vectors[rejected])):
                continue
            counts.pairs += 1
            yield {
                "conversations": [system, *history, _message("human", pool.query)],
                "chosen": _message("gpt", pool.responses[chosen]),
                "rejected": _message("gpt", pool.responses[rejected]),
                "session_id": session.session_id,
                "turn": pool.number,
            }


def kto_records(session: SessionDetail, counts: KtoCounts) -> Iterator[Record]:
    """A session's KTO records: per turn with a score gap, the best response desirable under the
    constraints it follows, the worst undesirable under those it fails."""
    profile = session.profile
    lang = session_lang(session)
    for pool, history in _turns(session, counts):
        picked = kto_pick(pool.vectors)
        if picked is None:
            continue
        for index, desirable in zip(picked, (True, False)):
            kept = kto_constraints(pool.vectors[index], pool.play, desirable)
            system = render_system_prompt(profile, [profile.constraints[k] for k in kept], lang)
            counts.pairs += 1
            counts.desirable += desirable
            counts.undesirable += not desirable
            yield {
                "conversations": [
                    _message("system", system),
                    *history,
                    _message("human", pool.query),
                    _message("gpt", pool.responses[index]),
                ],
                "kto_tag": desirable,
                "session_id": session.session_id,
                "turn": pool.number,
            }


def detail_stats(detail_path: str | Path, non_reversible: NonReversible = "drop") -> RpoCounts:
    """Counts, margins and Table 4 rates of a detail file's RPO pairs, without writing a dataset."""
    counts = RpoCounts()
    for session in read_sessions(detail_path):
        for _ in rpo_gaps(session, counts, non_reversible):
            pass
    return counts
