"""Sampling and judging: n responses per turn from the policy, each judged per constraint, plus the
session's constraint reversals; the session detail records that pair construction reads.

The work behind `src/dsc/dpo_data_construction.py`. `sample_sessions` takes the role protocols,
so the offline demo runs the same code with its rule judge, rule reverser and in-process policy."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpo.utils.io import (
    JsonlAppender,
    Shard,
    completed_keys,
)
from rpo.utils.llm.client import LLMError
from rpo.utils.llm.concurrency import bounded_map
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.roles.judge import follow_rate
from rpo.utils.roles.protocols import Judge, Refiner, Responder, Reverser, TriggerSelector
from rpo.utils.roles.trigger import judge_in_play
from rpo.utils.schema import Messages, SelfPlaySession, SessionDetail, Turn
from rpo.utils.stages.outcome import gather_or_cancel, note_failure
from rpo.utils.stats import Tally, counter


@dataclass
class SamplingStats(Tally):
    """What sampling produced, and what it could not judge."""

    sessions: int = counter("sessions")
    written: int = counter("written")
    skipped: int = counter("skipped (already done)")
    turns: int = counter("turns")
    samples: int = counter("samples")
    unjudged: int = counter("unjudged")
    refined: int = counter("refined extras")
    reversals_null: int = counter("non-reversible constraints")
    triggers_reused: int = counter("turn triggers reused from self-play")
    trigger_unknown: int = counter("turns skipped, triggers unknown")
    failed: int = counter("failed, not recorded (a rerun retries them)")
    first_failure: str = ""


def policy_messages(session: SelfPlaySession, turn_index: int, lang: str | None) -> Messages:
    """The policy's view of a turn: system prompt, earlier queries with reference replies, the query."""
    messages: Messages = [{"role": "system", "content": render_system_prompt(session.profile, lang=lang)}]
    for turn in session.turns[:turn_index]:
        messages += [
            {"role": "user", "content": turn.query},
            {"role": "assistant", "content": turn.reference_response},
        ]
    messages.append({"role": "user", "content": session.turns[turn_index].query})
    return messages


async def select_triggered(
    session: SelfPlaySession,
    turn_index: int,
    history: Messages,
    trigger: TriggerSelector | None,
    stats: SamplingStats,
) -> list[int] | None:
    """The turn's triggered constraints: the self-play selection when the session carries one (same
    query, same history, so asking again would only repeat it), else the selector's answer."""
    if trigger is None:
        return None
    recorded = session.turns[turn_index].triggered
    if recorded is not None:
        stats.triggers_reused += 1
        return recorded
    return await trigger.select(session.profile, history, session.turns[turn_index].query)


async def sample_turn(
    session: SelfPlaySession,
    turn_index: int,
    responder: Responder,
    judge: Judge,
    n: int,
    lang: str | None,
    refiner: Refiner | None,
    refine_threshold: float | None,
    stats: SamplingStats,
    trigger: TriggerSelector | None = None,
) -> Turn:
    """`n` judged samples for one turn (plus a judged rewrite of the best when asked and needed).

    With a `trigger` selector only the triggered constraints are judged (see `sample_sessions`).
    """
    messages = policy_messages(session, turn_index, lang)
    history, query = messages[1:-1], messages[-1]["content"]
    turn = session.turns[turn_index]
    triggered = await select_triggered(session, turn_index, history, trigger, stats)
    if trigger is not None and triggered is None:
        stats.trigger_unknown += 1
        return Turn(
            query=turn.query, reference_response=turn.reference_response, samples=[], trigger_unknown=True
        )
    in_play = (judge, session.profile, triggered, history, query)
    started = time.monotonic()
    responses = await responder.respond(messages, n)
    sampled_s = time.monotonic() - started
    verdicts = await gather_or_cancel(*(judge_in_play(*in_play, r) for r in responses))
    refined = [False] * len(responses)
    if refiner is not None and refine_threshold is not None and responses:
        rates = [follow_rate(v.follows) for v in verdicts]
        best = max(range(len(responses)), key=rates.__getitem__)
        if verdicts[best].follows is not None and rates[best] < refine_threshold:
            rewrite = await refiner.refine(session.profile, history, query, responses[best], verdicts[best])
            responses.append(rewrite)
            verdicts.append(await judge_in_play(*in_play, rewrite))
            refined.append(True)
            stats.refined += 1
    samples: list[dict[str, Any]] = []
    for response, verdict, was_refined in zip(responses, verdicts, refined):
        sample: dict[str, Any] = {"response": response, "follows": verdict.follows}
        if verdict.reasons:
            sample["judge_reasons"] = verdict.reasons
        if was_refined:
            sample["refined"] = True
        samples.append(sample)
        stats.unjudged += int(verdict.follows is None)
    stats.samples += len(samples)
    stats.turns += 1
    selection = {} if triggered is None else {"triggered": triggered}
    return Turn(
        query=turn.query,
        reference_response=turn.reference_response,
        **selection,
        samples=samples,
        sampling_s=round(sampled_s, 3),
        judging_s=round(time.monotonic() - started - sampled_s, 3),
    )


async def sample_session(
    session: SelfPlaySession,
    responder: Responder,
    judge: Judge,
    reverser: Reverser,
    n: int = 5,
    lang: str | None = None,
    refiner: Refiner | None = None,
    refine_threshold: float | None = None,
    stats: SamplingStats | None = None,
    extras: dict[str, Any] | None = None,
    trigger: TriggerSelector | None = None,
) -> SessionDetail:
    """The detail record of one session: reversals plus judged samples for every turn."""
    stats = stats if stats is not None else SamplingStats()
    reversed_constraints, *turns = await gather_or_cancel(
        reverser.reverse(session.profile),
        *(
            sample_turn(session, t, responder, judge, n, lang, refiner, refine_threshold, stats, trigger)
            for t in range(len(session.turns))
        ),
    )
    stats.sessions += 1
    stats.reversals_null += sum(r is None for r in reversed_constraints)
    profile = session.profile.model_dump(include={"name", "description", "skills", "constraints"})
    return SessionDetail.model_validate(
        {
            "session_id": session.session_id,
            "profile": profile,
            "reversed_constraints": reversed_constraints,
            "turns": [t.model_dump(exclude_unset=True) for t in turns],
            **(extras or {}),
        }
    )


async def sample_sessions(
    sessions: Iterable[SelfPlaySession],
    responder: Responder,
    judge: Judge,
    reverser: Reverser,
    n: int = 5,
    concurrency: int = 4,
    output_path: str | Path = "data/rpo_data/detail.jsonl",
    shard: Shard | str | None = None,
    lang: str | None = None,
    refiner: Refiner | None = None,
    refine_threshold: float | None = None,
    extras: dict[str, Any] | None = None,
    desc: str | None = "sampling",
    trigger: TriggerSelector | None = None,
) -> SamplingStats:
    """Sample every session of this shard not yet in `output_path`, appending each as it finishes.

    Sessions without turns are skipped (nothing to sample). `extras` (e.g. sampler/judge model
    names) are stored on every record. Returns the counts.

    With a `trigger` selector, each turn's triggered constraints are selected once, shared by all
    its samples (a turn that self-play already selected reuses that selection), only they are
    judged, and the turn stores them as `triggered`. A turn whose selection stays unknown is kept
    with no samples and `trigger_unknown: true` (its query and reference still serve as history
    for later turns) and counted; judging it as if every constraint were in play would guess.
    Without a selector every constraint is judged, as in files written before trigger selection.
    """
    shard = shard if isinstance(shard, Shard) else Shard.parse(shard)
    stats = SamplingStats()

    async def run(session: SelfPlaySession) -> SessionDetail | None:
        """The detail, or None (counted as failed, not written, retried by a rerun) when a request
        failed for good or not one sample could be judged."""
        try:
            detail = await sample_session(
                session,
                responder,
                judge,
                reverser,
                n=n,
                lang=lang,
                refiner=refiner,
                refine_threshold=refine_threshold,
                stats=stats,
                extras=extras,
                trigger=trigger,
            )
        except LLMError as err:
            note_failure(stats, session.session_id, err)
            return None
        if not any(sample.follows is not None for turn in detail.turns for sample in turn.samples):
            note_failure(stats, session.session_id, "no sample could be judged")
            return None
        return detail

    with JsonlAppender(output_path) as out:  # locked before reading what is done: one writer only
        done = completed_keys(output_path, lambda obj: obj.get("session_id"))
        todo = []
        for session in shard.select(sessions):
            if session.session_id in done:
                stats.skipped += 1
            elif session.turns:
                todo.append(session)
        async for _, detail in bounded_map(run, todo, concurrency, desc=desc):
            if detail is not None:
                out.write(detail)
                stats.written += 1
    return stats
