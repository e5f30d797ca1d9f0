"""Self-play: a simulated user asks, a strong model answers, the judge keeps the turns that follow
the profile; the sessions it writes are the SFT data and the history for sampling.

The work behind `src/dsc/sft_data_construction.py`; the offline demo runs the same `self_play`
with its rule roles."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rpo.utils.dataset_registry import register_dataset
from rpo.utils.io import JsonArrayWriter, JsonlAppender, completed_keys, read_jsonl, refuse_other_settings
from rpo.utils.llm.client import LLMError
from rpo.utils.llm.concurrency import bounded_map
from rpo.utils.prompts import render_lang
from rpo.utils.prompts.language import resolve_lang
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.roles.protocols import Judge, Refiner, Reply, Responder, TriggerSelector, UserSimulator
from rpo.utils.roles.trigger import judge_in_play
from rpo.utils.schema import (
    Messages,
    ProfileCore,
    SelfPlaySession,
    SelfPlayTurn,
    SystemProfile,
    UserProfile,
)
from rpo.utils.stages.outcome import note_failure
from rpo.utils.stages.refinement import Judged, best_of, judge_replies, refine_best
from rpo.utils.stats import Tally, counter

UNJUDGED_ENDS = ("unjudged", "trigger_unknown")
"""End reasons that say nothing about the profile: the judge or the trigger selector gave no answer.
(A turn whose candidates were all cut off by the token cap ends the session as "truncated": a
rerun would only repeat it, so the session is written and counted.)"""


@dataclass
class SelfPlayStats(Tally):
    """Why sessions ended and how many turns they kept."""

    sessions: int = counter("sessions")
    written: int = counter("written")
    skipped: int = counter("skipped (already done)")
    empty_sessions: int = counter("with no kept turn")
    turns: int = counter("turns kept")
    refinements: int = counter("refinements")
    below_threshold: int = counter("sessions ended below threshold")
    unjudged: int = counter("turns left unjudged")
    truncated: int = counter("candidates truncated by the token cap (never kept)")
    trigger_unknown: int = counter("turns with triggers unknown")
    failed: int = counter("failed, not recorded (a rerun retries them)")
    first_failure: str = ""


def response_messages(
    profile: ProfileCore, history: Messages, query: str, lang: str, triggered: list[int] | None
) -> Messages:
    """System prompt, history, then the query with the constraints it triggers restated after it.

    Only the triggered constraints are restated, as the authors do: restating a conditional rule
    the query does not meet would pull the reference answer toward it. Without a selection
    (`triggered=None`) every constraint is in play and restated; an empty selection restates none.
    """
    restated = profile.constraints if triggered is None else [profile.constraints[k] for k in triggered]
    return [
        {"role": "system", "content": render_system_prompt(profile, lang=lang)},
        *history,
        {"role": "user", "content": render_lang("response", lang, query=query, constraints=restated)},
    ]


async def self_play(
    profile: ProfileCore,
    user_sim: UserSimulator,
    responder: Responder,
    judge: Judge,
    max_turns: int = 5,
    refiner: Refiner | None = None,
    threshold: float = 0.8,
    max_refines: int = 3,
    n_candidates: int = 1,
    session_id: str | None = None,
    lang: str | None = None,
    stats: SelfPlayStats | None = None,
    trigger: TriggerSelector | None = None,
) -> SelfPlaySession:
    """Run one session (see the module docstring for when turns are kept and sessions end).

    With a `trigger` selector, each turn's triggered constraints are selected once (shared by the
    candidates and their rewrites), only they are judged and count toward `threshold`, and the turn
    stores them as `triggered`. A turn whose selection stays unknown ends the session
    (`end_reason` "trigger_unknown"): judging it as if every constraint were in play would keep a
    turn on the wrong evidence. A candidate the token cap cut off is never judged nor kept; when
    every candidate was cut off the session ends ("truncated"). The session records its prompt
    language (`lang`), which sampling and pair construction then use.
    """
    stats = stats if stats is not None else SelfPlayStats()
    lang = resolve_lang(lang, profile)
    history: Messages = []
    turns: list[SelfPlayTurn] = []
    end_reason = "max_turns"
    for turn_index in range(max_turns):
        query = await user_sim.next_query(profile, history, turn_index)
        triggered = None
        if trigger is not None:
            triggered = await trigger.select(profile, history, query)
            if triggered is None:
                stats.trigger_unknown += 1
                end_reason = "trigger_unknown"
                break

        judge_one = partial(judge_in_play, judge, profile, triggered, history, query)

        messages = response_messages(profile, history, query, lang, triggered)
        replies = await responder.respond(messages, n_candidates)
        pool = await judge_replies(replies, judge_one)
        stats.truncated += sum(reply.truncated for reply in replies)
        best = best_of(pool)
        if best is None:
            unjudged = not replies or any(not reply.truncated for reply in replies)
            stats.unjudged += int(unjudged)
            end_reason = "unjudged" if unjudged else "truncated"
            break
        rewrites: list[Judged] = []
        if refiner is not None:
            refine_one = partial(_rewrite, refiner, profile, history, query)
            best, rewrites = await refine_best(best, refine_one, judge_one, threshold, max_refines)
        stats.refinements += len(rewrites)
        stats.truncated += sum(rewrite.reply.truncated for rewrite in rewrites)
        if best.rate < threshold:
            stats.below_threshold += 1
            end_reason = "below_threshold"
            break
        selection = {} if triggered is None else {"triggered": triggered}
        turns.append(
            SelfPlayTurn(
                query=query,
                reference_response=best.reply.text,
                **selection,
                follows=best.verdicts.follows,
                refinements=len(rewrites),
            )
        )
        history = [*history, {"role": "user", "content": query}, {"role": "assistant", "content": best.reply.text}]
    stats.sessions += 1
    stats.turns += len(turns)
    stats.empty_sessions += int(not turns)
    sid = session_id or getattr(profile, "id", None) or profile.name
    return SelfPlaySession(session_id=sid, profile=profile, turns=turns, end_reason=end_reason, lang=lang)


def sft_record(session: SelfPlaySession, lang: str | None = None) -> dict[str, Any] | None:
    """One sharegpt conversation for a session with kept turns (None for an empty session), its
    system prompt in the language the session was played in (`lang` only for sessions that did not
    record one)."""
    if not session.turns:
        return None
    messages = [{"from": "system", "value": render_system_prompt(session.profile, lang=session.lang or lang)}]
    for turn in session.turns:
        messages += [
            {"from": "human", "value": turn.query},
            {"from": "gpt", "value": turn.reference_response},
        ]
    return {"conversations": messages, "session_id": session.session_id}


def build_sft_dataset(
    sessions_path: str | Path, output_dir: str | Path, dataset_name: str, lang: str | None = None
) -> int:
    """Write `{output_dir}/{dataset_name}.json` from a sessions JSONL and register it; returns the count."""
    output_dir = Path(output_dir)
    with JsonArrayWriter(output_dir / f"{dataset_name}.json") as writer:
        for session in read_jsonl(sessions_path, SelfPlaySession, unique="session_id"):
            record = sft_record(session, lang)
            if record is not None:
                writer.write(record)
    register_dataset(output_dir, dataset_name, "sft")
    return writer.count


async def _rewrite(refiner: Refiner, profile: ProfileCore, history: Messages, query: str, current: Judged) -> Reply:
    return await refiner.refine(profile, history, query, current.reply.text, current.verdicts)


@dataclass(frozen=True)
class SelfPlayRoles:
    """The roles a self-play run uses, built by its caller (the CLI, or the demo with rule roles).

    `user_for(user, session_id)` makes the simulated user of one session (a persona, or None for
    the default one); the session id lets it draw its tone reproducibly.
    """

    responder: Responder
    judge: Judge
    user_for: Callable[[UserProfile | None, str], UserSimulator]
    refiner: Refiner | None = None
    trigger: TriggerSelector | None = None


async def run_self_play(
    profiles: Iterable[tuple[int, SystemProfile]],
    users: list[UserProfile],
    roles: SelfPlayRoles,
    output_path: Path,
    max_turns: int,
    threshold: float,
    max_refines: int,
    n_candidates: int,
    concurrency: int,
    lang: str | None,
    settings: dict[str, Any] | None = None,
) -> SelfPlayStats:
    """Self-play every (index, profile) not yet in `output_path`, appending each session as it ends.

    `settings` (models, turns, thresholds) are stored on every session; a resume with other values
    is refused before any call.

    The index (position in the unsharded input) picks the user profile, round-robin. With
    `roles.trigger`, that role selects each turn's triggered constraints (see `self_play`).
    The output is locked before what is already done is read, so a second run cannot double it.
    """
    stats = SelfPlayStats()

    async def play(item: tuple[int, SystemProfile]) -> SelfPlaySession | None:
        """The session, or None (counted as failed) when a request failed for good or nothing could
        be judged: such a session is not written, so a rerun plays it again."""
        index, profile = item
        user = users[index % len(users)] if users else None
        try:
            session = await self_play(
                profile,
                roles.user_for(user, profile.id),
                roles.responder,
                roles.judge,
                max_turns=max_turns,
                refiner=roles.refiner,
                threshold=threshold,
                max_refines=max_refines,
                n_candidates=n_candidates,
                session_id=profile.id,
                lang=lang,
                stats=stats,
                trigger=roles.trigger,
            )
        except LLMError as err:
            note_failure(stats, profile.id, err)
            return None
        if not session.turns and session.end_reason in UNJUDGED_ENDS:
            note_failure(stats, profile.id, f"no turn could be judged ({session.end_reason})")
            return None
        return session.model_copy(update={"user_id": user.id if user else None, **(settings or {})})

    with JsonlAppender(output_path) as out:
        refuse_other_settings(output_path, settings or {})
        done = completed_keys(output_path, lambda obj: obj.get("session_id"))
        todo = []
        for index, profile in profiles:
            if profile.id in done:
                stats.skipped += 1
            else:
                todo.append((index, profile))
        async for _, session in bounded_map(play, todo, concurrency, desc="self-play", unit="session"):
            if session is not None:
                out.write(session)
                stats.written += 1
    return stats
