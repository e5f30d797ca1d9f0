"""The trained models an experiment compares ("arms"), each built from its seed's shared parts.

A seed's base policy, its preference samples (detail file) and the held-out sessions are made
once and shared by every arm and every experiment of that seed (`SeedParts`); an arm changes only
what it names (method, pair subset, prompt constraints, γ), and trains from that base with the
budget's steps, learning rate and seed. Each finished arm is cached under
`seed<N>/arms/<method>-<key>/result.json`, so an arm that two experiments share (RPO at the budget's
γ on all pairs) is trained once, and a killed experiment resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from rpo.demo.evaluation import evaluate
from rpo.demo.pipeline import (
    BASE_FIELDS,
    SAMPLE_FIELDS,
    Budget,
    cached_base,
    fingerprint,
    held_out_sessions,
    reusable,
    sample_detail,
    sample_profiles,
    self_play_sessions,
)
from rpo.demo.training import train
from rpo.eval.metrics import Session
from rpo.utils.dataset_registry import register_dataset
from rpo.utils.io import JsonArrayWriter, write_json
from rpo.utils.pairs.build import (
    EmptyGapBucket,
    build_dpo_dataset,
    build_kto_dataset,
    build_rpo_dataset,
    build_rpo_gap_buckets,
)
from rpo.utils.pairs.records import read_sessions
from rpo.utils.pairs.rule import score
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.schema import SelfPlaySession

METHODS = ("base", "sft", "dpo", "kto", "rpo")
RPO_DATA = ("all", "gap_ge3", "gap_2", "gap_1")
# Held-out results depend on these besides the base and the preference samples.
EVAL_FIELDS = ("eval_profiles", "max_new_tokens")
TRAIN_FIELDS = ("pref_steps", "pref_lr")


class EmptyArmData(RuntimeError):
    """The seed's samples give an arm no training records (a gap bucket with no pairs, say)."""


@dataclass(frozen=True)
class Arm:
    """One model of an experiment: how it is trained from the seed's base, on which of its data.

    `data` picks RPO's pairs (all, or one of paper Table 2's equal-size gap buckets);
    `max_pairs` caps a dataset with a seeded sample; `rpo_gamma` None means the budget's γ.
    """

    name: str
    method: str = "rpo"
    data: str = "all"
    prompt_constraints: str = "triggered"
    rpo_gamma: float | None = None
    max_pairs: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"arm {self.name}: method must be one of {', '.join(METHODS)}")
        if self.data not in RPO_DATA or (self.data != "all" and self.method != "rpo"):
            raise ValueError(f"arm {self.name}: data {self.data!r} is for RPO only, one of {', '.join(RPO_DATA)}")

    def gamma(self, budget: Budget) -> float:
        return budget.rpo_gamma if self.rpo_gamma is None else self.rpo_gamma

    def spec(self, budget: Budget) -> dict:
        """What the arm's model depends on besides the seed's shared parts (its cache key)."""
        spec = {key: value for key, value in asdict(self).items() if key != "name"}
        spec["rpo_gamma"] = self.gamma(budget) if self.method == "rpo" else None
        return {**spec, **{name: getattr(budget, name) for name in TRAIN_FIELDS}}


@dataclass
class SeedParts:
    """What every arm of a seed shares: base policy, preference samples, held-out sessions."""

    seed: int
    work: Path
    base: Path
    detail: Path
    sessions: list[SelfPlaySession]  # the sampled (preference) sessions
    held_out: list[SelfPlaySession]
    key: str  # digest of seed, base, sampling and evaluation settings

    @property
    def desc(self) -> str:
        return f"[experiments] seed {self.seed}"


def seed_parts(seed: int, budget: Budget, work: Path, split: str) -> SeedParts:
    """The seed's base policy and preference samples, reused from `work` when their settings match."""
    desc = f"[experiments] seed {seed}"
    base = cached_base(seed, budget, work, desc)
    shared = {
        "seed": seed,
        "split": split,
        **{name: getattr(budget, name) for name in BASE_FIELDS + SAMPLE_FIELDS + EVAL_FIELDS},
    }
    sessions = asyncio.run(self_play_sessions(sample_profiles(seed, budget), seed, budget.turns))
    detail, marker = work / "detail.jsonl", work / "detail.json"
    if reusable(marker, shared, detail):
        print(f"{desc}: preference samples reused from {detail}", flush=True)
    else:
        sample_detail(base, sessions, seed, budget, detail, desc)
        write_json(marker, shared)
    return SeedParts(seed, work, base, detail, sessions, held_out_sessions(split, budget), fingerprint(shared))


def best_sample_sft(detail: Path, data_dir: Path, name: str) -> int:
    """SFT on the best samples: per turn, the judged sample that follows the most triggered
    constraints (the first of ties) answers under the original prompt, after the reference history.
    Returns the number of records."""
    with JsonArrayWriter(data_dir / f"{name}.json") as out:
        for session in read_sessions(detail):
            conversation = [{"from": "system", "value": render_system_prompt(session.profile)}]
            for turn in session.turns:
                judged = [sample for sample in turn.samples if sample.follows is not None]
                query = {"from": "human", "value": turn.query}
                if judged:
                    best = max(judged, key=lambda sample: score(sample.follows))
                    out.write({"conversations": [*conversation, query, {"from": "gpt", "value": best.response}]})
                conversation += [query, {"from": "gpt", "value": turn.reference_response}]
        count = out.count
    register_dataset(data_dir, name, "sft")
    return count


def arm_dataset(arm: Arm, detail: Path, data_dir: Path, seed: int) -> tuple[str, int]:
    """Build the arm's training set from the seed's detail file; returns (dataset name, records)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if arm.method == "sft":
        return "demo_sft_best", best_sample_sft(detail, data_dir, "demo_sft_best")
    if arm.method == "kto":
        name = "demo_kto"
        build_kto_dataset(detail, data_dir, name)
    elif arm.method == "dpo":
        name = "demo_dpo"
        build_dpo_dataset(detail, data_dir, name, max_pairs=arm.max_pairs, seed=seed)
    elif arm.data == "all":
        name = "demo_rpo"
        build_rpo_dataset(detail, data_dir, name, prompt_constraints=arm.prompt_constraints,
                          max_pairs=arm.max_pairs, seed=seed)
    else:
        try:
            build_rpo_gap_buckets(detail, data_dir, "demo_rpo", prompt_constraints=arm.prompt_constraints,
                                  max_pairs=arm.max_pairs, seed=seed)
        except EmptyGapBucket as err:  # a bucket without pairs: every bucket would be empty
            raise EmptyArmData(str(err)) from None
        name = f"demo_rpo_{arm.data}"
    records = len(json.loads((data_dir / f"{name}.json").read_text()))
    if records == 0:
        raise EmptyArmData(f"no training records were built from {detail}")
    return name, records


def train_arm(arm: Arm, start: Path, detail: Path, arm_dir: Path, budget: Budget, seed: int, desc: str,
              steps: int | None = None, threads: int | None = None) -> tuple[Path, int]:
    """Train `arm` from the model at `start` on its dataset from `detail`; returns (model, records)."""
    dataset, records = arm_dataset(arm, detail, arm_dir / "data", seed)
    overrides: dict = {
        "model_name_or_path": str(start), "dataset": dataset, "dataset_dir": str(arm_dir / "data"),
        "max_steps": steps or budget.pref_steps, "learning_rate": budget.pref_lr,
        "logging_steps": budget.log_steps, "seed": seed,
    }
    if arm.method == "sft":  # the preference arms' schedule, and loss on the best sample only
        overrides.update(lr_scheduler_type="constant", warmup_ratio=0.0, mask_history=True)
    if arm.method == "rpo":
        overrides["rpo_gamma"] = arm.gamma(budget)
    model = train(arm.method, arm_dir, "model", f"{desc}: {arm.name}", threads=threads, **overrides)
    return model, records


def result_path(parts: SeedParts, arm: Arm, budget: Budget) -> Path:
    return parts.work / "arms" / f"{arm.method}-{fingerprint([parts.key, arm.spec(budget)])}" / "result.json"


def judged_result(model: Path, parts: SeedParts, budget: Budget, records: int) -> dict:
    """The model's held-out sessions judged with its own history and with the reference history,
    with the base it was trained from and the held-out session ids (every arm of a seed shares them)."""
    from rpo.demo.policy import LocalPolicy

    judged: dict[str, list[Session]] = evaluate(LocalPolicy(model, max_new_tokens=budget.max_new_tokens),
                                                parts.held_out)
    held_out = [session.session_id for session in parts.held_out]
    return {"records": records, "base": str(parts.base), "held_out": held_out, "judged": judged}


def run_arm(arm: Arm, parts: SeedParts, budget: Budget, keep: bool, threads: int | None = None) -> dict:
    """The arm's cached result, or train, evaluate and cache it. The base arm is only evaluated."""
    path = result_path(parts, arm, budget)
    if path.exists():
        return json.loads(path.read_text())
    if arm.method == "base":
        result = judged_result(parts.base, parts, budget, 0)
    else:
        model, records = train_arm(arm, parts.base, parts.detail, path.parent, budget, parts.seed, parts.desc,
                                   threads=threads)
        result = judged_result(model, parts, budget, records)
        if not keep:
            shutil.rmtree(model, ignore_errors=True)
    result["arm"] = {"name": arm.name, **arm.spec(budget)}
    write_json(path, result)
    return result
