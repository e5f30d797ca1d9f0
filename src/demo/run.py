"""The whole RPO loop offline on CPU: `python -m rpo.demo.run [--quick] [--seeds 0,1]`.

World → tiny base policy (LLaMA-Factory SFT) → self-play sessions → 5 samples per turn from the
policy, rule judge, rule reverser (`rpo.dsc.dpo_data_construction.sample_sessions`) → DPO
baseline and RPO datasets (`rpo.utils.pairs`) → DPO and RPO trained from the same base with the
same budget (`llamafactory-cli train`, RPO through the margin patch) → CSR/ISR/SSR of base, DPO
and RPO on held-out profiles → `out/demo/report.json`, a figure and a printed table.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import fire
import yaml
from rpo.demo.constraints import parse
from rpo.eval.metrics import Session, bootstrap_ci95, score
from rpo.demo.rules import OracleResponder, RuleJudge, RuleReverser, WorldUserSimulator
from rpo.demo.world import ResponseWriter, make_profile, make_query
from rpo.dsc.dpo_data_construction import policy_messages, sample_sessions
from rpo.dsc.sft_data_construction import SelfPlaySession, self_play
from rpo.utils.io import JsonArrayWriter, update_dataset_info, write_json
from rpo.utils.pairs import build_dpo_dataset, build_rpo_dataset
from rpo.utils.records import ProfileCore
from rpo.utils.system_prompt import render_system_prompt
from rpo.utils.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf" / "demo"
BIN = Path(sys.executable).parent
METHODS = ("base", "dpo", "rpo")
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


FULL = Budget()
QUICK = Budget(sft_profiles=250, sample_profiles=30, eval_profiles=24, sft_epochs=2.0, pref_steps=20,
               hidden=64, layers=2, vocab=512)


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
    update_dataset_info(data_dir, "demo_sft", {"file_name": "demo_sft.json", "formatting": "sharegpt"})


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


def train(config: str, work: Path, name: str, **overrides) -> Path:
    """`llamafactory-cli train` on a filled-in copy of `conf/demo/<config>.yaml`; returns the output dir."""
    settings = yaml.safe_load((CONF / f"{config}.yaml").read_text())
    output_dir = work / "models" / name
    settings.update({"output_dir": str(output_dir), **overrides})
    config_path = work / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DISABLE_VERSION_CHECK": "1"}
    log_path = work / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.run([str(BIN / "llamafactory-cli"), "train", str(config_path)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, cwd=work, check=False)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"training {name} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    return output_dir


async def self_play_sessions(profiles: list[ProfileCore], seed: int, turns: int) -> list[SelfPlaySession]:
    """Self-play with the rule user, the oracle responder and the rule judge (references)."""
    judge = RuleJudge()
    sessions = []
    for i, profile in enumerate(profiles):
        sessions.append(
            await self_play(
                profile, WorldUserSimulator(seed * 100_000 + i), OracleResponder(seed * 100_000 + i), judge,
                max_turns=turns, threshold=1.0, session_id=profile.id, lang="en",
            )
        )
    return [s for s in sessions if s.turns]


def evaluate(model_dir: Path, sessions: list[SelfPlaySession]) -> list[Session]:
    """Greedy reply per turn (history = reference replies), judged by rules."""
    from rpo.demo.policy import LocalPolicy

    policy = LocalPolicy(model_dir)
    prompts, keys = [], []
    for s_index, session in enumerate(sessions):
        for t_index in range(len(session.turns)):
            prompts.append(policy_messages(session, t_index, "en"))
            keys.append((s_index, t_index))
    replies = policy.generate(prompts, greedy=True)
    judged: list[Session] = [[[] for _ in s.turns] for s in sessions]
    for (s_index, t_index), reply in zip(keys, replies):
        session = sessions[s_index]
        query = session.turns[t_index].query
        judged[s_index][t_index] = [parse(c).check(query, reply) for c in session.profile.constraints]
    return judged


def run_seed(seed: int, budget: Budget, work: Path, split: str, timings: dict[str, float]) -> dict:
    from rpo.demo.policy import LocalPolicy

    def lap(stage: str, started: float) -> None:
        timings[stage] = timings.get(stage, 0.0) + round(time.monotonic() - started, 1)
        print(f"[demo] seed {seed}: {stage} done in {time.monotonic() - started:.0f} s", flush=True)

    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    data_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    sft_profiles = world_profiles(seed * 10 + 1, budget.sft_profiles, "sft", budget)
    sample_profiles = world_profiles(seed * 10 + 2, budget.sample_profiles, "train", budget)
    held_out = world_profiles(DEV_STREAM if split == "dev" else EVAL_STREAM, budget.eval_profiles, split, budget)
    sft_dataset(sft_profiles, seed, budget, data_dir)
    init = build_tiny_model(work / "models" / "init", texts=world_texts(sft_profiles[:400], seed),
                            vocab_size=budget.vocab, hidden_size=budget.hidden, num_layers=budget.layers,
                            intermediate_size=budget.hidden * 4, seed=seed)
    lap("world", started)

    started = time.monotonic()
    base = train("sft", work, "base", model_name_or_path=str(init), dataset_dir=str(data_dir),
                 num_train_epochs=budget.sft_epochs, seed=seed)
    lap("sft", started)

    started = time.monotonic()
    sessions = asyncio.run(self_play_sessions(sample_profiles, seed, budget.turns))
    detail_path = work / "detail.jsonl"
    detail_path.unlink(missing_ok=True)
    policy = LocalPolicy(base, seed=seed)
    asyncio.run(sample_sessions(sessions, policy, RuleJudge(), RuleReverser(), n=budget.samples_per_turn,
                                concurrency=64, output_path=detail_path, lang="en", desc=None))
    lap("sampling", started)

    started = time.monotonic()
    dpo_counts = build_dpo_dataset(detail_path, data_dir, "demo_dpo")
    rpo_counts = build_rpo_dataset(detail_path, data_dir, "demo_rpo")
    lap("pairs", started)

    models = {"base": base}
    for method, counts in (("dpo", dpo_counts), ("rpo", rpo_counts)):
        started = time.monotonic()
        if counts.pairs == 0:
            raise RuntimeError(f"no {method} pairs were built: the base policy's samples never differ")
        margin = {"rpo_gamma": budget.rpo_gamma} if method == "rpo" else {}
        models[method] = train(method, work, method, model_name_or_path=str(base), dataset_dir=str(data_dir),
                               max_steps=budget.pref_steps, learning_rate=budget.pref_lr, seed=seed, **margin)
        lap(method, started)

    started = time.monotonic()
    eval_sessions = asyncio.run(self_play_sessions(held_out, EVAL_STREAM if split == "eval" else DEV_STREAM,
                                                   budget.turns))
    judged = {method: evaluate(models[method], eval_sessions) for method in METHODS}
    lap("evaluation", started)
    return {
        "judged": judged,
        "pairs": {"dpo": dpo_counts.pairs, "rpo": rpo_counts.pairs},
        "sample_efficiency": rpo_counts.efficiency.as_dict(),
        "eval_turns": sum(len(s.turns) for s in eval_sessions),
    }


def aggregate(results: dict[int, dict], seeds: list[int]) -> dict:
    methods = {}
    for method in METHODS:
        per_seed = [score(results[s]["judged"][method]) for s in seeds]
        entry = {name: round(statistics.fmean(r[name] for r in per_seed), 4) for name in ("CSR", "ISR", "SSR")}
        pooled = [session for s in seeds for session in results[s]["judged"][method]]
        entry["ci95"] = bootstrap_ci95(pooled)
        if len(seeds) > 1:
            entry["spread"] = {n: round(statistics.stdev(r[n] for r in per_seed), 4) for n in ("CSR", "ISR", "SSR")}
        entry["per_seed"] = {str(s): {k: round(v, 4) for k, v in r.items()} for s, r in zip(seeds, per_seed)}
        methods[method] = entry
    efficiency = {
        kind: {q: round(statistics.fmean(results[s]["sample_efficiency"][kind][q] for s in seeds), 4)
               for q in ("valid", "dominated", "perfect")}
        for kind in ("direct", "reverse")
    }
    pairs = {m: int(statistics.fmean(results[s]["pairs"][m] for s in seeds)) for m in ("dpo", "rpo")}
    return {"methods": methods, "sample_efficiency": efficiency, "pairs": pairs}


def table(report: dict) -> str:
    lines = [f"{'method':<6} {'CSR':>7} {'ISR':>7} {'SSR':>7}   ISR 95% CI"]
    for method in METHODS:
        m = report["methods"][method]
        lo, hi = m["ci95"]["ISR"]
        lines.append(f"{method:<6} {m['CSR']:>7.3f} {m['ISR']:>7.3f} {m['SSR']:>7.3f}   [{lo:.3f}, {hi:.3f}]")
    eff = report["sample_efficiency"]
    lines.append("")
    lines.append(f"{'pairing':<8} {'valid':>6} {'dominated':>9} {'perfect':>7}")
    for kind in ("direct", "reverse"):
        lines.append(f"{kind:<8} {eff[kind]['valid']:>6.2f} {eff[kind]['dominated']:>9.2f} {eff[kind]['perfect']:>7.2f}")
    lines.append(f"pairs: dpo {report['pairs']['dpo']}, rpo {report['pairs']['rpo']}; "
                 f"seeds {report['seeds']}; {report['minutes']} min")
    return "\n".join(lines)


def figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("CSR", "ISR", "SSR")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.26
    for i, method in enumerate(METHODS):
        m = report["methods"][method]
        values = [m[n] for n in names]
        errors = [[v - m["ci95"][n][0] for v, n in zip(values, names)], [m["ci95"][n][1] - v for v, n in zip(values, names)]]
        ax.bar([x + (i - 1) * width for x in range(3)], values, width, yerr=errors, capsize=3, label=method.upper())
    ax.set_xticks(range(3), names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate (95% CI)")
    ax.set_title(f"Offline demo: held-out profiles, seeds {report['seeds']}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(quick: bool = False, seeds: str | int | tuple = "0", output_dir: str = "out/demo",
         figure_path: str = "img/demo_results.png", split: str = "eval", keep: bool = False,
         **overrides) -> None:
    """Run the demo; `--split dev` scores the development profiles (for calibration) instead of eval.

    Any `Budget` field can be overridden (`--pref_lr 1e-3`); it applies to DPO and RPO alike, except
    `--rpo_gamma` (a γ sweep is one run per value).
    """
    began = time.monotonic()
    if split not in ("eval", "dev"):
        raise SystemExit(f"--split: expected eval or dev, got {split!r}")
    seed_list = [int(s) for s in (seeds if isinstance(seeds, tuple) else str(seeds).split(","))]
    unknown = set(overrides) - {f.name for f in fields(Budget)}
    if unknown:
        raise SystemExit(f"unknown budget options: {', '.join(sorted(unknown))}")
    budget = replace(QUICK if quick else FULL, **overrides)
    output = Path(output_dir).resolve()
    timings: dict[str, float] = {}
    results = {seed: run_seed(seed, budget, output / f"seed{seed}", split, timings) for seed in seed_list}
    report = aggregate(results, seed_list)
    report.update(
        seeds=seed_list,
        minutes=round((time.monotonic() - began) / 60, 2),
        split=split,
        eval_turns=results[seed_list[0]]["eval_turns"],
        budget=asdict(budget),
        timings_s=timings,
        quick=quick,
    )
    write_json(output / "report.json", report)
    figure(report, Path(figure_path))
    if not keep:
        for seed in seed_list:
            shutil.rmtree(output / f"seed{seed}" / "models", ignore_errors=True)
    print(table(report))


if __name__ == "__main__":
    fire.Fire(main)
