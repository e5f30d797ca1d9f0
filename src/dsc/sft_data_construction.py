"""Self-play SFT data: a simulated user and a strong model talk for up to five turns per profile.

    python src/dsc/sft_data_construction.py --profiles=data/profiles.jsonl --users=data/users.jsonl \
        --config=conf/pipeline/openai.yaml [--sessions_path=data/rpo_data/sessions.jsonl] \
        [--output_dir=data] [--dataset_name=rpo_sft] [--max_turns=5] [--shard=0/4]

Each turn (paper §5.3 and appendix D.1): the user simulator writes a query that tends to trigger
the profile's constraints; the strong model answers with the constraints restated after the query
(so they are not lost as the history grows); the judge checks every constraint. When fewer than
`threshold` (80%) of the constraints are followed, the critic/refine loop rewrites the reply up to
`max_refines` (3) times, keeping the best version. A turn that still falls short, or cannot be
judged, is dropped and ends the session there: the turns kept are exactly the ones that reached
the threshold, so they can serve as clean history for sampling. A session also ends after
`max_turns`.

Outputs: the sessions JSONL (one `SelfPlaySession` per profile, appended and resumed by
session_id; the sampling stage reads it) and, from the whole sessions file, the SFT dataset
`{output_dir}/{dataset_name}.json` in LLaMA-Factory sharegpt format with its `dataset_info.json`
entry. The training text holds the plain queries; the restated constraints are only a crutch for
the strong model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fire
from pydantic import BaseModel, ConfigDict
from rpo.utils.concurrency import bounded_map
from rpo.utils.evaluate_utils import JudgeStats, LLMJudge, follow_rate, resolve_lang
from rpo.utils.interfaces import Judge, Messages, Responder, UserSimulator
from rpo.utils.io import (
    InputError,
    JsonArrayWriter,
    JsonlAppender,
    Shard,
    completed_keys,
    exit_on_input_error,
    read_jsonl,
    update_dataset_info,
)
from rpo.utils.llm_client import LLMClient
from rpo.utils.pipeline_config import PipelineConfig
from rpo.utils.prompts import render_lang
from rpo.utils.records import ProfileCore, SystemProfile, UserProfile
from rpo.utils.roles import LLMRefiner, LLMResponder, LLMUserSimulator, Refiner
from rpo.utils.system_prompt import render_system_prompt


class SelfPlayTurn(BaseModel):
    """One kept turn: the plain query, the accepted reply, its verdicts and how many rewrites it took."""

    model_config = ConfigDict(extra="allow")

    query: str
    reference_response: str
    follows: list[bool] | None = None
    refinements: int = 0


class SelfPlaySession(BaseModel):
    """A self-play session: what the sampling stage (`dpo_data_construction`) reads."""

    model_config = ConfigDict(extra="allow")

    session_id: str
    profile: ProfileCore
    turns: list[SelfPlayTurn]
    user_id: str | None = None
    end_reason: str = ""


@dataclass
class SelfPlayStats:
    sessions: int = 0
    skipped: int = 0
    turns: int = 0
    refinements: int = 0
    below_threshold: int = 0
    unjudged: int = 0
    empty_sessions: int = 0

    def summary(self) -> str:
        return (
            f"sessions {self.sessions} (skipped, already done: {self.skipped}; with no kept turn: "
            f"{self.empty_sessions}), turns kept {self.turns}, refinements {self.refinements}, "
            f"sessions ended below threshold {self.below_threshold}, turns left unjudged {self.unjudged}"
        )


def response_messages(profile: ProfileCore, history: Messages, query: str, lang: str) -> Messages:
    """System prompt, history, then the query with the constraints restated after it."""
    return [
        {"role": "system", "content": render_system_prompt(profile, lang=lang)},
        *history,
        {
            "role": "user",
            "content": render_lang("response", lang, query=query, constraints=profile.constraints),
        },
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
) -> SelfPlaySession:
    """Run one session (see the module docstring for when turns are kept and sessions end)."""
    stats = stats if stats is not None else SelfPlayStats()
    lang = resolve_lang(lang, profile)
    history: Messages = []
    turns: list[SelfPlayTurn] = []
    end_reason = "max_turns"
    for turn_index in range(max_turns):
        query = await user_sim.next_query(profile, history, turn_index)
        candidates = await responder.respond(response_messages(profile, history, query, lang), n_candidates)
        verdicts = await asyncio.gather(*(judge.judge(profile, history, query, c) for c in candidates))
        best_rate, best, best_verdicts = max(
            ((follow_rate(v.follows), c, v) for c, v in zip(candidates, verdicts)), key=lambda t: t[0]
        )
        refinements = 0
        while best_rate < threshold and refiner is not None and refinements < max_refines:
            if best_verdicts.follows is None:
                break
            refinements += 1
            rewrite = await refiner.refine(profile, history, query, best, best_verdicts)
            rewrite_verdicts = await judge.judge(profile, history, query, rewrite)
            if rewrite_verdicts.follows is not None and follow_rate(rewrite_verdicts.follows) >= best_rate:
                best_rate, best, best_verdicts = (
                    follow_rate(rewrite_verdicts.follows),
                    rewrite,
                    rewrite_verdicts,
                )
        stats.refinements += refinements
        if best_verdicts.follows is None:
            stats.unjudged += 1
            end_reason = "unjudged"
            break
        if best_rate < threshold:
            stats.below_threshold += 1
            end_reason = "below_threshold"
            break
        turns.append(
            SelfPlayTurn(
                query=query, reference_response=best, follows=best_verdicts.follows, refinements=refinements
            )
        )
        history = [*history, {"role": "user", "content": query}, {"role": "assistant", "content": best}]
    stats.sessions += 1
    stats.turns += len(turns)
    stats.empty_sessions += int(not turns)
    sid = session_id or getattr(profile, "id", None) or profile.name
    return SelfPlaySession(session_id=sid, profile=profile, turns=turns, end_reason=end_reason)


def sft_record(session: SelfPlaySession, lang: str | None = None) -> dict[str, Any] | None:
    """One sharegpt conversation for a session with kept turns (None for an empty session)."""
    if not session.turns:
        return None
    messages = [{"from": "system", "value": render_system_prompt(session.profile, lang=lang)}]
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
        for session in read_jsonl(sessions_path, SelfPlaySession):
            record = sft_record(session, lang)
            if record is not None:
                writer.write(record)
    update_dataset_info(
        output_dir,
        dataset_name,
        {
            "file_name": f"{dataset_name}.json",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations"},
        },
    )
    return writer.count


def pick_lang(lang: str | None, config: PipelineConfig) -> str | None:
    """`--lang`, else the config's `language:` when it is set, else None (detected per profile)."""
    if lang:
        return lang
    return config.language if "language" in config.model_fields_set else None


async def run_self_play(
    profiles: Iterable[tuple[int, SystemProfile]],
    users: list[UserProfile],
    client: LLMClient,
    output_path: Path,
    max_turns: int,
    threshold: float,
    max_refines: int,
    n_candidates: int,
    concurrency: int,
    lang: str | None,
) -> tuple[SelfPlayStats, JudgeStats]:
    """Self-play every (index, profile) not yet in `output_path`, appending each session as it ends.

    The index (position in the unsharded input) picks the user profile, round-robin.
    """
    stats = SelfPlayStats()
    judge_stats = JudgeStats()
    done = completed_keys(output_path, lambda obj: obj.get("session_id"))
    judge = LLMJudge(client, lang=lang, stats=judge_stats)
    responder = LLMResponder(client, role="response")
    refiner = LLMRefiner(client, lang=lang)
    todo = []
    for index, profile in profiles:
        if profile.id in done:
            stats.skipped += 1
        else:
            todo.append((index, profile))

    async def play(item: tuple[int, SystemProfile]) -> SelfPlaySession:
        index, profile = item
        user = users[index % len(users)] if users else None
        session = await self_play(
            profile,
            LLMUserSimulator(client, user, lang=lang),
            responder,
            judge,
            max_turns=max_turns,
            refiner=refiner,
            threshold=threshold,
            max_refines=max_refines,
            n_candidates=n_candidates,
            session_id=profile.id,
            lang=lang,
            stats=stats,
        )
        return session.model_copy(update={"user_id": user.id if user else None})

    with JsonlAppender(output_path) as out:
        async for _, session in bounded_map(play, todo, concurrency, desc="self-play"):
            out.write(session)
    return stats, judge_stats


@exit_on_input_error
def main(
    profiles: str | None = None,
    config: str | None = None,
    users: str | None = None,
    sessions_path: str = "data/rpo_data/sessions.jsonl",
    output_dir: str = "data",
    dataset_name: str = "rpo_sft",
    max_turns: int = 5,
    threshold: float = 0.8,
    max_refines: int = 3,
    n_candidates: int = 1,
    concurrency: int | None = None,
    shard: str | None = None,
    lang: str | None = None,
    dataset_only: bool = False,
) -> None:
    """Run self-play for every profile (resuming), then write the SFT dataset from the sessions file.

    With `--shard=k/n` each shard appends to its own sessions file and skips the dataset (merge the
    shard files, then run with `--dataset_only`). `--dataset_only` rebuilds the dataset without calls.
    """
    selected = Shard.parse(shard)
    if not dataset_only:
        if profiles is None or config is None:
            raise InputError("--profiles and --config are required (or pass --dataset_only)")
        pipeline = PipelineConfig.load(config)
        lang = pick_lang(lang, pipeline)
        user_list = list(read_jsonl(users, UserProfile)) if users else []
        profile_list = list(selected.select(enumerate(read_jsonl(profiles, SystemProfile))))
        output_path = selected.path(sessions_path)

        async def run() -> tuple[SelfPlayStats, JudgeStats, str]:
            async with LLMClient(pipeline) as client:
                result = await run_self_play(
                    profile_list,
                    user_list,
                    client,
                    output_path,
                    max_turns,
                    threshold,
                    max_refines,
                    n_candidates,
                    concurrency or pipeline.concurrency,
                    lang,
                )
                return *result, client.usage_table()

        stats, judge_stats, usage = asyncio.run(run())
        print(f"self-play: {stats.summary()}")
        print(f"judge: {judge_stats.summary()}")
        print(f"sessions written to {output_path}")
        print(usage)
        if selected.count > 1:
            print(
                "sharded run: merge the shard files, then rerun with --dataset_only to write the SFT dataset"
            )
            return
        sessions_path = str(output_path)
    count = build_sft_dataset(sessions_path, output_dir, dataset_name, lang)
    print(f"SFT dataset: {count} conversations -> {Path(output_dir) / (dataset_name + '.json')}")


if __name__ == "__main__":
    fire.Fire(main)
