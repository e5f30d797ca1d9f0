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

from rpo.utils.io import InputError, JsonlAppender, Shard, completed_keys, refuse_other_settings
from rpo.utils.llm.client import LLMError
from rpo.utils.llm.concurrency import bounded_map
from rpo.utils.prompts.language import resolve_lang
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.roles.protocols import Judge, Refiner, Reply, Responder, Reverser, TriggerSelector
from rpo.utils.roles.trigger import judge_in_play
from rpo.utils.schema import Messages, SelfPlaySession, SessionDetail, Turn, Verdicts
from rpo.utils.stages.outcome import gather_or_cancel, note_failure
from rpo.utils.stages.refinement import Judged, best_of, judge_replies, refine_best
from rpo.utils.stats import Tally, counter


@dataclass(frozen=True)
class Refinement:
    """The authors' refinement in sampling: when the best of a turn's samples follows less than
    `threshold` of the constraints in play, `refiner` rewrites the best so far up to `rounds` times,
    and every rewrite joins the turn's pool (marked `refined`, with its `refine_round`)."""

    refiner: Refiner
    threshold: float = 0.7
    rounds: int = 3


@dataclass
class SamplingStats(Tally):
    """What sampling produced, and what it could not judge."""

    sessions: int = counter("sessions")
    written: int = counter("written")
    skipped: int = counter("skipped (already done)")
    turns: int = counter("turns")
    samples: int = counter("samples")
    unjudged: int = counter("unjudged")
    truncated: int = counter("truncated by the token cap (unjudged, never paired)")
    refined_turns: int = counter("turns refined")
    refined: int = counter("rewrites added to the pool")
    reversals_null: int = counter("non-reversible constraints")
    triggers_reused: int = counter("turn triggers reused from self-play")
    trigger_unknown: int = counter("turns skipped, triggers unknown")
    failed: int = counter("failed, not recorded (a rerun retries them)")
    first_failure: str = ""


def policy_messages(session: SelfPlaySession, turn_index: int, lang: str) -> Messages:
    """The policy's view of a turn: system prompt, earlier queries with reference replies, the query."""
    messages: Messages = [{"role": "system", "content": render_system_prompt(session.profile, lang=lang)}]
    for turn in session.turns[:turn_index]:
        messages += [
            {"role": "user", "content": turn.query},
            {"role": "assistant", "content": turn.reference_response},
        ]
    messages.append({"role": "user", "content": session.turns[turn_index].query})
    return messages


def session_language(session: SelfPlaySession, lang: str | None) -> str:
    """The session's one prompt language: `lang` (given or configured) else the profile's own, and
    it must be the one the session was played in when self-play recorded that (the policy, the
    judge and the pairs then all see one scaffold); a mismatch is refused, naming the session."""
    decided = resolve_lang(lang, session.profile)
    if session.lang is not None and session.lang != decided:
        raise InputError(
            f"session {session.session_id} was played with {session.lang} prompts, but this run would "
            f"sample it with {decided} prompts: set the language to {session.lang} (--lang or the config's "
            "language:) or run self-play again"
        )
    return decided


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
    lang: str,
    refinement: Refinement | None,
    stats: SamplingStats,
    trigger: TriggerSelector | None = None,
) -> Turn:
    """`n` judged samples for one turn, plus the judged rewrites of the best when `refinement` asks.

    With a `trigger` selector only the triggered constraints are judged (see `sample_sessions`).
    Samples the token cap cut off are kept with `truncated: true`, unjudged, and counted.
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

    async def judge_one(response: str) -> Verdicts:
        return await judge_in_play(judge, session.profile, triggered, history, query, response)

    started = time.monotonic()
    replies = await responder.respond(messages, n)
    sampled_s = time.monotonic() - started
    pool = await judge_replies(replies, judge_one)
    best = best_of(pool)
    if refinement is not None and best is not None:

        async def refine_one(current: Judged) -> Reply:
            return await refinement.refiner.refine(
                session.profile, history, query, current.reply.text, current.verdicts
            )

        _, rewrites = await refine_best(best, refine_one, judge_one, refinement.threshold, refinement.rounds)
        pool += rewrites
        stats.refined_turns += int(bool(rewrites))
        stats.refined += len(rewrites)
    samples: list[dict[str, Any]] = []
    for item in pool:
        sample: dict[str, Any] = {"response": item.reply.text, "follows": item.verdicts.follows}
        if item.verdicts.reasons:
            sample["judge_reasons"] = item.verdicts.reasons
        if item.reply.truncated:
            sample["truncated"] = True
        if item.round:
            sample["refined"] = True
            sample["refine_round"] = item.round
        samples.append(sample)
        stats.truncated += int(item.reply.truncated)
        stats.unjudged += int(not item.judged and not item.reply.truncated)
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
    refinement: Refinement | None = None,
    stats: SamplingStats | None = None,
    extras: dict[str, Any] | None = None,
    trigger: TriggerSelector | None = None,
) -> SessionDetail:
    """The detail record of one session: reversals plus judged samples for every turn, and the
    prompt language they were made in (`session_language`)."""
    stats = stats if stats is not None else SamplingStats()
    session_lang = session_language(session, lang)
    reversed_constraints, *turns = await gather_or_cancel(
        reverser.reverse(session.profile),
        *(
            sample_turn(session, t, responder, judge, n, session_lang, refinement, stats, trigger)
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
            "lang": session_lang,
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
    refinement: Refinement | None = None,
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

    Each record carries its prompt language (`lang`, see `session_language`), which pair
    construction renders the training prompts in. A sample the token cap cut off is written with
    `truncated: true` and no verdicts: it is counted, never judged and never paired. A session whose
    samples are all truncated is still written (a rerun would only repeat it); one with samples
    left unjudged by the judge and none judged is a failure that a rerun retries.
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
                refinement=refinement,
                stats=stats,
                extras=extras,
                trigger=trigger,
            )
        except LLMError as err:
            note_failure(stats, session.session_id, err)
            return None
        samples = [sample for turn in detail.turns for sample in turn.samples]
        if not any(sample.follows is not None or sample.truncated for sample in samples):
            note_failure(stats, session.session_id, "no sample could be judged")
            return None
        return detail

    with JsonlAppender(output_path) as out:  # locked before reading what is done: one writer only
        refuse_other_settings(output_path, extras or {})
        done = completed_keys(output_path, lambda obj: obj.get("session_id"))
        todo = []
        for session in shard.select(sessions):
            if session.session_id in done:
                stats.skipped += 1
            elif session.turns:
                session_language(session, lang)  # a language mismatch is refused before any call
                todo.append(session)
        async for _, detail in bounded_map(run, todo, concurrency, desc=desc, unit="turn",
                                              weight=lambda session: len(session.turns)):
            if detail is not None:
                out.write(detail)
                stats.written += 1
    return stats
