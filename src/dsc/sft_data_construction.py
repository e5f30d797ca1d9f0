"""Self-play SFT data: a simulated user and a strong model talk for up to five turns per profile.

    python src/dsc/sft_data_construction.py --profiles=data/profiles.jsonl --users=data/users.jsonl \
        --config=conf/pipeline/openai.yaml [--sessions_path=data/rpo_data/sessions.jsonl] \
        [--output_dir=data] [--dataset_name=rpo_sft] [--max_turns=5] [--shard=0/4] [--no-trigger]

Each turn (paper §5.3 and appendix D.1): the user simulator writes a query that tends to trigger
the profile's constraints; trigger selection decides which constraints the query puts in play
(the pipeline's `trigger` role, else the `judge` endpoint; `--no-trigger` puts every constraint in
play); the strong model writes `n_candidates` answers with the triggered constraints restated after
the query (so they are not lost as the history grows); the judge checks the triggered constraints.
When fewer than `threshold` (80%) of them are followed, the critic rewrites the best reply so far
up to `max_refines` (3) times. A turn that still falls short, or cannot be judged, is dropped and
ends the session there: the turns kept are exactly the ones that reached the threshold, so they can
serve as clean history for sampling. A session also ends after `max_turns`, or when every
candidate was cut off by the token cap (counted). `--strict_judge` adds the strict-and-literal
line to the judge prompt (see `rpo.utils.roles.judge`).

The simulated user takes 10 tones drawn per session, keeps queries to about 20 words (20 Chinese
characters) and rewords a query that opens like an earlier one. Each session records its prompt
language (`--lang`, else the config's explicit `language:`, else the profile's own), which the
sampling stage and pair construction then use.

Outputs: the sessions JSONL (one `SelfPlaySession` per profile, appended and resumed by
session_id; the sampling stage reads it) and, from the whole sessions file, the SFT dataset
`{output_dir}/{dataset_name}.json` in LLaMA-Factory sharegpt format with its `dataset_info.json`
entry. The training text holds the plain queries; the restated constraints are only a crutch for
the strong model.
"""

from __future__ import annotations

from pathlib import Path

from rpo.utils import cli
from rpo.utils.io import (
    InputError,
    Shard,
    exit_on_input_error,
    read_jsonl,
)
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.llm.runner import run_calls
from rpo.utils.prompts.language import pick_lang
from rpo.utils.roles.conversation import LLMRefiner, LLMResponder, LLMUserSimulator, UserStats
from rpo.utils.roles.judge import LLMJudge
from rpo.utils.roles.trigger import LLMTriggerSelector
from rpo.utils.schema import SystemProfile, UserProfile
from rpo.utils.stages.selfplay import SelfPlayRoles, SelfPlayStats, build_sft_dataset, run_self_play


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
    n_candidates: int = 5,
    concurrency: int | None = None,
    shard: str | None = None,
    lang: str | None = None,
    dataset_only: bool = False,
    trigger: bool = True,
    strict_judge: bool = False,
) -> None:
    """Run self-play for every profile (resuming), then write the SFT dataset from the sessions file.

    With `--shard=k/n` each shard appends to its own sessions file and skips the dataset (merge the
    shard files, then run with `--dataset_only`). `--dataset_only` rebuilds the dataset without calls.
    """
    max_turns = cli.integer("max_turns", max_turns, minimum=1)
    threshold = cli.fraction("threshold", threshold, allow_zero=False)
    max_refines = cli.integer("max_refines", max_refines, minimum=0)
    n_candidates = cli.integer("n_candidates", n_candidates, minimum=1)
    concurrency = cli.optional_integer("concurrency", concurrency, minimum=1)
    dataset_only = cli.switch("dataset_only", dataset_only)
    trigger = cli.switch("trigger", trigger)
    strict_judge = cli.switch("strict_judge", strict_judge)
    dataset_name = cli.name("dataset_name", dataset_name)
    cli.output_dir("output_dir", output_dir)
    selected = Shard.parse(shard)
    if not dataset_only:
        if profiles is None or config is None:
            raise InputError("--profiles and --config are required (or pass --dataset_only)")
        output_path = selected.path(cli.output_file("sessions_path", sessions_path))
        pipeline = PipelineConfig.load(config)
        lang = pick_lang(lang, pipeline)
        user_list = list(read_jsonl(users, UserProfile, unique="id")) if users else []
        profile_list = list(
            selected.select(
                enumerate(
                    cli.refuse_blank_constraints(read_jsonl(profiles, SystemProfile, unique="id"), profiles)
                )
            )
        )
        trigger_role = ("trigger" if "trigger" in pipeline.roles else "judge") if trigger else None

        role_names = ["user", "response", "judge", "critic", *([trigger_role] if trigger_role else [])]

        async def work(client: LLMClient) -> tuple[SelfPlayStats, list[str]]:
            judge = LLMJudge(client, lang=lang, strict=strict_judge)
            selector = LLMTriggerSelector(client, role=trigger_role, lang=lang) if trigger_role else None
            user_stats = UserStats()
            roles = SelfPlayRoles(
                responder=LLMResponder(client),
                judge=judge,
                user_for=lambda user, session_id: LLMUserSimulator(
                    client, user, lang=lang, session_id=session_id, stats=user_stats
                ),
                refiner=LLMRefiner(client, lang=lang),
                trigger=selector,
            )
            stats = await run_self_play(
                profile_list,
                user_list,
                roles,
                output_path,
                max_turns,
                threshold,
                max_refines,
                n_candidates,
                concurrency or pipeline.concurrency,
                lang,
                settings={  # stored on every session; a resume with other values is refused
                    "user_model": pipeline.role("user").model,
                    "response_model": pipeline.role("response").model,
                    "judge_model": pipeline.role("judge").model,
                    "max_turns": max_turns, "threshold": threshold, "max_refines": max_refines,
                    "n_candidates": n_candidates, "trigger_selection": trigger, "strict_judge": strict_judge,
                },
            )
            lines = [f"self-play: {stats.summary()}", f"user: {user_stats.summary()}",
                     f"judge: {judge.stats.summary()}"]
            if selector is not None:
                lines.append(f"trigger: {selector.stats.summary()}")
            return stats, [*lines, f"sessions written to {output_path}"]

        stats, lines = run_calls(pipeline, work, role_names)
        print("\n".join(lines))
        done = stats.written + stats.skipped
        if selected.count > 1 or not done:
            if selected.count > 1:
                print(
                    "sharded run: merge the shard files, then rerun with --dataset_only to write the SFT dataset"
                )
            cli.conclude("sessions", done, stats.failed, stats.first_failure)
            return
        sessions_path = str(output_path)
    count = build_sft_dataset(sessions_path, output_dir, dataset_name, lang)
    print(f"SFT dataset: {count} conversations -> {Path(output_dir) / (dataset_name + '.json')}")
    failed, first_failure = (0, "") if dataset_only else (stats.failed, stats.first_failure)
    cli.conclude("SFT conversations", count, failed, first_failure)


if __name__ == "__main__":
    cli.run(main)
