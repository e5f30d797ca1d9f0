"""Sample, judge and reverse: the session detail file, then the DPO baseline pairs.

    python src/dsc/dpo_data_construction.py --config=conf/pipeline/llamafactory_api.yaml \
        [--sessions_path=data/rpo_data/sessions.jsonl] [--detail_path=data/rpo_data/detail.jsonl] \
        [--output_dir=data] [--dataset_name=dpo] [--n=5] [--refine_threshold=0.8] [--shard=0/4]

For each self-play session: reverse its constraints (one reverser call), then for every turn sample
`n` responses from the policy with the earlier turns' reference responses as history, and judge
each response on every constraint. Turns of a session are independent (the history is fixed), so
they run concurrently. Each finished session is appended to the detail JSONL (SPEC §4.2) at once;
a rerun skips the session_ids already there. The detail file feeds both the DPO baseline (built
here through `rpo.utils.pairs.build_dpo_dataset`) and `rpo_data_construction.py`.

`sample_sessions` takes the role protocols, so the offline demo runs the same code with its rule
judge, rule reverser and an in-process tiny-model responder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fire
from rpo.dsc.sft_data_construction import SelfPlaySession, pick_lang
from rpo.utils.concurrency import bounded_map
from rpo.utils.evaluate_utils import JudgeStats, LLMJudge, follow_rate
from rpo.utils.interfaces import Judge, Messages, Responder, Reverser
from rpo.utils.io import (
    InputError,
    JsonlAppender,
    Shard,
    completed_keys,
    exit_on_input_error,
    read_jsonl,
)
from rpo.utils.llm_client import LLMClient
from rpo.utils.pairs import build_dpo_dataset
from rpo.utils.pipeline_config import PipelineConfig
from rpo.utils.records import SessionDetail, Turn
from rpo.utils.reverser import LLMReverser, ReverseStats
from rpo.utils.roles import LLMRefiner, LLMResponder, Refiner
from rpo.utils.system_prompt import render_system_prompt


@dataclass
class SamplingStats:
    sessions: int = 0
    skipped: int = 0
    turns: int = 0
    samples: int = 0
    unjudged: int = 0
    refined: int = 0
    reversals_null: int = 0

    def summary(self) -> str:
        return (
            f"sessions {self.sessions} (skipped, already done: {self.skipped}), turns {self.turns}, "
            f"samples {self.samples} (unjudged {self.unjudged}, refined extras {self.refined}), "
            f"non-reversible constraints {self.reversals_null}"
        )


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
) -> Turn:
    """`n` judged samples for one turn (plus a judged rewrite of the best when asked and needed)."""
    messages = policy_messages(session, turn_index, lang)
    history, query = messages[1:-1], messages[-1]["content"]
    started = time.monotonic()
    responses = await responder.respond(messages, n)
    sampled_s = time.monotonic() - started
    verdicts = list(
        await asyncio.gather(*(judge.judge(session.profile, history, query, r) for r in responses))
    )
    refined = [False] * len(responses)
    if refiner is not None and refine_threshold is not None and responses:
        rates = [follow_rate(v.follows) for v in verdicts]
        best = max(range(len(responses)), key=rates.__getitem__)
        if verdicts[best].follows is not None and rates[best] < refine_threshold:
            rewrite = await refiner.refine(session.profile, history, query, responses[best], verdicts[best])
            responses.append(rewrite)
            verdicts.append(await judge.judge(session.profile, history, query, rewrite))
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
    turn = session.turns[turn_index]
    return Turn(
        query=turn.query,
        reference_response=turn.reference_response,
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
) -> SessionDetail:
    """The detail record of one session: reversals plus judged samples for every turn."""
    stats = stats if stats is not None else SamplingStats()
    reversed_constraints, turns = await asyncio.gather(
        reverser.reverse(session.profile),
        asyncio.gather(
            *(
                sample_turn(session, t, responder, judge, n, lang, refiner, refine_threshold, stats)
                for t in range(len(session.turns))
            )
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
) -> SamplingStats:
    """Sample every session of this shard not yet in `output_path`, appending each as it finishes.

    Sessions without turns are skipped (nothing to sample). `extras` (e.g. sampler/judge model
    names) are stored on every record. Returns the counts.
    """
    shard = shard if isinstance(shard, Shard) else Shard.parse(shard)
    stats = SamplingStats()
    done = completed_keys(output_path, lambda obj: obj.get("session_id"))
    todo = []
    for session in shard.select(sessions):
        if session.session_id in done:
            stats.skipped += 1
        elif session.turns:
            todo.append(session)

    async def run(session: SelfPlaySession) -> SessionDetail:
        return await sample_session(
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
        )

    with JsonlAppender(output_path) as out:
        async for _, detail in bounded_map(run, todo, concurrency, desc=desc):
            out.write(detail)
    return stats


@exit_on_input_error
def main(
    config: str,
    sessions_path: str = "data/rpo_data/sessions.jsonl",
    detail_path: str = "data/rpo_data/detail.jsonl",
    output_dir: str = "data",
    dataset_name: str = "dpo",
    n: int = 5,
    concurrency: int | None = None,
    shard: str | None = None,
    refine_threshold: float | None = None,
    lang: str | None = None,
) -> None:
    """Sample and judge every session (resuming), then build the DPO baseline from the detail file.

    With `--shard=k/n` each shard appends to its own detail file and skips the pair building (merge
    the shard files and run `rpo_data_construction.py` / this stage again unsharded).
    """
    if n < 1:
        raise InputError(f"--n: expected at least 1 sample per turn, got {n}")
    if refine_threshold is not None and not 0 < float(refine_threshold) <= 1:
        raise InputError(f"--refine_threshold: expected a fraction in (0, 1], got {refine_threshold}")
    selected = Shard.parse(shard)
    pipeline = PipelineConfig.load(config)
    lang = pick_lang(lang, pipeline)
    sessions = list(read_jsonl(sessions_path, SelfPlaySession))
    output_path = selected.path(detail_path)

    async def run() -> tuple[SamplingStats, JudgeStats, ReverseStats, str]:
        async with LLMClient(pipeline) as client:
            judge = LLMJudge(client, lang=lang)
            reverser = LLMReverser(client, lang=lang)
            refiner = LLMRefiner(client, lang=lang) if refine_threshold is not None else None
            extras = {
                "sampler_model": pipeline.role("response").model,
                "judge_model": pipeline.role("judge").model,
            }
            stats = await sample_sessions(
                sessions,
                LLMResponder(client),
                judge,
                reverser,
                n=n,
                concurrency=concurrency or pipeline.concurrency,
                output_path=output_path,
                shard=selected,
                lang=lang,
                refiner=refiner,
                refine_threshold=refine_threshold,
                extras=extras,
            )
            return stats, judge.stats, reverser.stats, client.usage_table()

    stats, judge_stats, reverse_stats, usage = asyncio.run(run())
    print(f"sampling: {stats.summary()}")
    print(f"judge: {judge_stats.summary()}")
    print(f"reverser: {reverse_stats.summary()}")
    print(f"detail written to {output_path}")
    print(usage)
    if selected.count > 1:
        print("sharded run: merge the shard detail files, then build the pair datasets from the merged file")
        return
    build_dpo_dataset(str(output_path), output_dir, dataset_name)


if __name__ == "__main__":
    fire.Fire(main)
