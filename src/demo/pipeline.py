"""The demo's seed-level pipeline, shared by `rpo.demo.run` and `rpo.demo.experiments`.

One seed fixes the world's SFT and sampling profiles, the tiny model's initial weights and every
trainer's seed; the held-out profiles come from fixed streams of their own, so every seed (and
every arm of an experiment) is scored on the same dev or eval set.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from rpo.demo.constraints import parse
from rpo.demo.rules import OracleResponder, RuleJudge, RuleReverser, RuleTriggerSelector, WorldUserSimulator
from rpo.demo.training import train
from rpo.demo.world import ResponseWriter, make_profile, make_query
from rpo.utils.dataset_registry import register_dataset
from rpo.utils.io import JsonArrayWriter, write_json
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.schema import ProfileCore, SelfPlaySession
from rpo.utils.stages.sampling import sample_sessions
from rpo.utils.tiny_model import build_tiny_model

# Held-out profile streams do not depend on the training seed: every seed is scored on the same set.
EVAL_STREAM, DEV_STREAM = 1_000_003, 2_000_003


@dataclass(frozen=True)
class Budget:
    """Sizes and training budget. Chosen on the dev split (`--split dev`), never on eval."""

    sft_profiles: int = 1200
    sample_profiles: int = 160
    eval_profiles: int = 100
    turns: int = 3
    min_constraints: int = 3
    max_constraints: int = 5
    follow_prob: float = 0.7
    sft_epochs: float = 12.0
    pref_steps: int = 120
    pref_lr: float = 1.0e-4
    rpo_gamma: float = 0.05  # RPO only (`--rpo_gamma 0` is DPO on the reversed pairs)
    samples_per_turn: int = 5
    hidden: int = 128
    layers: int = 4
    vocab: int = 1024
    log_steps: int = 10  # trainer log (loss, RPO margin) every this many steps
    max_new_tokens: int = 64  # per reply, sampled or greedy


FULL = Budget()
# A smoke test of every stage: as small as the stages allow, nothing measured.
QUICK = Budget(sft_profiles=120, sample_profiles=20, eval_profiles=12, sft_epochs=1.0, pref_steps=6,
               hidden=64, layers=2, vocab=512, log_steps=2, max_new_tokens=32)
# What the base policy depends on: a cached base is reused only when these and the seed match.
BASE_FIELDS = ("sft_profiles", "turns", "min_constraints", "max_constraints", "follow_prob", "sft_epochs",
               "hidden", "layers", "vocab")
# What the preference samples depend on, beyond the base.
SAMPLE_FIELDS = ("sample_profiles", "samples_per_turn", "max_new_tokens")


def fingerprint(payload: object) -> str:
    """A short stable digest of a JSON-able description (cache keys)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def world_profiles(stream: int, count: int, prefix: str, budget: Budget) -> list[ProfileCore]:
    rng = random.Random(stream)
    return [
        make_profile(rng, i, f"{prefix}-{i}", budget.min_constraints, budget.max_constraints) for i in range(count)
    ]


def sft_dataset(profiles: list[ProfileCore], seed: int, budget: Budget, data_dir: Path) -> None:
    """Multi-turn demonstrations that follow each constraint only with probability `follow_prob`."""
    rng = random.Random(seed)
    writer = ResponseWriter(rng)
    with JsonArrayWriter(data_dir / "demo_sft.json") as out:
        for profile in profiles:
            constraints = [parse(text) for text in profile.constraints]
            conversation = [{"from": "system", "value": render_system_prompt(profile)}]
            for _ in range(budget.turns):
                query = make_query(rng, profile)
                target = [rng.random() < budget.follow_prob for _ in constraints]
                conversation += [
                    {"from": "human", "value": query},
                    {"from": "gpt", "value": writer.write(constraints, query, target)},
                ]
            out.write({"conversations": conversation})
    register_dataset(data_dir, "demo_sft", "sft")


def world_texts(profiles: list[ProfileCore], seed: int) -> list[str]:
    """Text to train the tokenizer on: prompts, queries and both-way responses of the world."""
    rng = random.Random(seed)
    writer = ResponseWriter(rng)
    texts = []
    for profile in profiles:
        constraints = [parse(t) for t in profile.constraints]
        reversed_texts = [c.reverse().text for c in constraints if c.reverse() is not None]
        query = make_query(rng, profile)
        texts += [render_system_prompt(profile), query, "\n".join(reversed_texts)]
        texts.append(writer.write(constraints, query, [rng.random() < 0.5 for _ in constraints]))
    return texts


async def self_play_sessions(profiles: list[ProfileCore], seed: int, turns: int) -> list[SelfPlaySession]:
    """Self-play with the rule user, the oracle responder and the rule judge (references)."""
    from rpo.utils.stages.selfplay import self_play

    judge = RuleJudge()
    sessions = []
    for i, profile in enumerate(profiles):
        sessions.append(
            await self_play(
                profile, WorldUserSimulator(seed * 100_000 + i), OracleResponder(seed * 100_000 + i), judge,
                max_turns=turns, threshold=1.0, session_id=profile.id, lang="en", trigger=RuleTriggerSelector(),
            )
        )
    return [s for s in sessions if s.turns]


def sample_profiles(seed: int, budget: Budget) -> list[ProfileCore]:
    """The profiles whose sessions the base policy is sampled on (preference data)."""
    return world_profiles(seed * 10 + 2, budget.sample_profiles, "train", budget)


def held_out_sessions(split: str, budget: Budget) -> list[SelfPlaySession]:
    """The dev or eval sessions: the same for every seed, so methods and seeds are scored alike."""
    stream = DEV_STREAM if split == "dev" else EVAL_STREAM
    return asyncio.run(self_play_sessions(world_profiles(stream, budget.eval_profiles, split, budget), stream,
                                          budget.turns))


def build_world(seed: int, budget: Budget, work: Path) -> Path:
    """The seed's SFT demonstrations (in `work/data`) and its random tiny Llama with a tokenizer
    trained on the world's texts; returns the untrained model's directory."""
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    sft_profiles = world_profiles(seed * 10 + 1, budget.sft_profiles, "sft", budget)
    sft_dataset(sft_profiles, seed, budget, data_dir)
    return build_tiny_model(work / "models" / "init", texts=world_texts(sft_profiles[:400], seed),
                            vocab_size=budget.vocab, hidden_size=budget.hidden, num_layers=budget.layers,
                            intermediate_size=budget.hidden * 4, seed=seed)


def base_key(seed: int, budget: Budget) -> dict:
    """What a base policy was made with (`work/base.json`): a base is reused only where this matches."""
    return {"seed": seed, **{name: getattr(budget, name) for name in BASE_FIELDS}}


def train_base(seed: int, budget: Budget, work: Path, init: Path, desc: str) -> Path:
    """The base policy: LLaMA-Factory SFT of `init` on the noisy demonstrations. Its settings are recorded
    beside it, so that experiments run in the same folder reuse it (`make demo`'s base included); the
    record is removed first, so a run killed while training never leaves it beside a half-made model."""
    marker = work / "base.json"
    marker.unlink(missing_ok=True)
    model = train("sft", work, "base", f"{desc}: sft", model_name_or_path=str(init),
                  dataset_dir=str(work / "data"), num_train_epochs=budget.sft_epochs,
                  logging_steps=budget.log_steps, seed=seed)
    write_json(marker, base_key(seed, budget))
    return model


def reusable(marker: Path, key: dict, artifact: Path) -> bool:
    """Whether `artifact` was made with the settings `key`, as its `marker` file records.

    A stale marker is removed, so that a run killed while remaking the artifact never leaves an
    old marker beside a half-made one; `write_json(marker, key)` records the new one when done.
    """
    if marker.exists() and json.loads(marker.read_text()) == key and artifact.exists():
        return True
    marker.unlink(missing_ok=True)
    return False


def cached_base(seed: int, budget: Budget, work: Path, desc: str) -> Path:
    """`build_world` and `train_base`, reused when a base of the same seed and base fields is in `work`."""
    model = work / "models" / "base"
    if reusable(work / "base.json", base_key(seed, budget), model / "config.json"):
        print(f"{desc}: base policy reused from {model}", flush=True)
        return model
    return train_base(seed, budget, work, build_world(seed, budget, work), desc)


def demonstrator_detail(seed: int, budget: Budget, detail_path: Path) -> Path:
    """The seed's preference samples with the noisy demonstrator (each constraint followed with
    probability `follow_prob`, what the base is trained to imitate) in place of the base policy: the
    sampling stage as `sample_detail` runs it, without training, to check what pairs a budget can give."""
    sessions = asyncio.run(self_play_sessions(sample_profiles(seed, budget), seed, budget.turns))
    detail_path.unlink(missing_ok=True)
    asyncio.run(sample_sessions(sessions, OracleResponder(seed, budget.follow_prob), RuleJudge(), RuleReverser(),
                                n=budget.samples_per_turn, concurrency=64, output_path=detail_path, lang="en",
                                desc=None, trigger=RuleTriggerSelector()))
    return detail_path


def sample_detail(model: Path, sessions: list[SelfPlaySession], seed: int, budget: Budget, detail_path: Path,
                  desc: str) -> Path:
    """`samples_per_turn` samples per turn from `model`, judged on each turn's triggered constraints
    and reversed by the rules, written as a fresh detail file."""
    from rpo.demo.policy import LocalPolicy

    detail_path.unlink(missing_ok=True)
    policy = LocalPolicy(model, seed=seed, max_new_tokens=budget.max_new_tokens)
    asyncio.run(sample_sessions(sessions, policy, RuleJudge(), RuleReverser(), n=budget.samples_per_turn,
                                concurrency=64, output_path=detail_path, lang="en", desc=f"{desc}: sampling",
                                trigger=RuleTriggerSelector()))
    return detail_path
