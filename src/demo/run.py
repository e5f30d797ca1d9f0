"""The whole RPO loop offline on CPU: `python -m rpo.demo.run [--quick] [--seeds 0,1]`.

World → tiny base policy (LLaMA-Factory SFT) → self-play sessions → 5 samples per turn from the
policy, rule judge, rule reverser (`rpo.utils.stages.sampling.sample_sessions`) → DPO baseline
and RPO datasets (`rpo.utils.pairs`) → DPO and RPO trained from the same base with the same
budget (`llamafactory-cli train`, RPO through the margin patch) → CSR/ISR/SSR of base, DPO and
RPO on held-out profiles, each turn scored on the constraints its query triggers, with the
policy's own history (SysBench's setting) and with the reference history → `out/demo/report.json`,
a figure and a printed table.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import fire
from rpo.demo.constraints import parse
from rpo.demo.evaluation import HISTORIES, evaluate
from rpo.demo.rules import OracleResponder, RuleJudge, RuleReverser, RuleTriggerSelector, WorldUserSimulator
from rpo.demo.training import train
from rpo.demo.world import ResponseWriter, make_profile, make_query
from rpo.eval.metrics import Session, bootstrap_ci95, score
from rpo.utils.io import JsonArrayWriter, update_dataset_info, write_json
from rpo.utils.pairs.build import build_dpo_dataset, build_rpo_dataset
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.schema import ProfileCore, SelfPlaySession
from rpo.utils.stages.sampling import sample_sessions
from rpo.utils.stages.selfplay import self_play
from rpo.utils.tiny_model import build_tiny_model
from tqdm import tqdm

FIGURE = Path("img/demo_results.png")
METHODS = ("base", "dpo", "rpo")
METRIC_NAMES = ("CSR", "ISR", "SSR")
QUICK_NOTE = ("QUICK mode is a smoke test: toy sizes and a few training steps, so these numbers mean "
              "nothing (equal metrics for base, DPO and RPO are expected); run `make demo` for a measurement.")
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


async def self_play_sessions(profiles: list[ProfileCore], seed: int, turns: int) -> list[SelfPlaySession]:
    """Self-play with the rule user, the oracle responder and the rule judge (references)."""
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


def run_seed(seed: int, budget: Budget, work: Path, split: str, timings: dict[str, float]) -> dict:
    from rpo.demo.policy import LocalPolicy

    prefix = f"[demo] seed {seed}"

    def lap(stage: str, started: float) -> None:
        timings[stage] = timings.get(stage, 0.0) + round(time.monotonic() - started, 1)
        print(f"{prefix}: {stage} done in {time.monotonic() - started:.0f} s", flush=True)

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
    base = train("sft", work, "base", f"{prefix}: sft", model_name_or_path=str(init), dataset_dir=str(data_dir),
                 num_train_epochs=budget.sft_epochs, logging_steps=budget.log_steps, seed=seed)
    lap("sft", started)

    started = time.monotonic()
    sessions = asyncio.run(self_play_sessions(sample_profiles, seed, budget.turns))
    detail_path = work / "detail.jsonl"
    detail_path.unlink(missing_ok=True)
    policy = LocalPolicy(base, seed=seed, max_new_tokens=budget.max_new_tokens)
    asyncio.run(sample_sessions(sessions, policy, RuleJudge(), RuleReverser(), n=budget.samples_per_turn,
                                concurrency=64, output_path=detail_path, lang="en", desc=f"{prefix}: sampling",
                                trigger=RuleTriggerSelector()))
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
        models[method] = train(method, work, method, f"{prefix}: {method}", model_name_or_path=str(base),
                               dataset_dir=str(data_dir), max_steps=budget.pref_steps, learning_rate=budget.pref_lr,
                               logging_steps=budget.log_steps, seed=seed, **margin)
        lap(method, started)

    started = time.monotonic()
    eval_sessions = asyncio.run(self_play_sessions(held_out, EVAL_STREAM if split == "eval" else DEV_STREAM,
                                                   budget.turns))
    judged = {}
    for method in tqdm(METHODS, desc=f"{prefix}: evaluation", unit="model"):
        judged[method] = evaluate(LocalPolicy(models[method], max_new_tokens=budget.max_new_tokens), eval_sessions)
    lap("evaluation", started)
    return {
        "judged": judged,
        "pairs": {"dpo": dpo_counts.pairs, "rpo": rpo_counts.pairs},
        "sample_efficiency": rpo_counts.efficiency.as_dict(),
        "eval_turns": sum(len(s.turns) for s in eval_sessions),
    }


def summarise(judged_per_seed: dict[int, list[Session]]) -> dict:
    """Mean metrics over seeds, a bootstrap interval over the pooled sessions, and each seed's metrics."""
    per_seed = {seed: score(sessions) for seed, sessions in judged_per_seed.items()}
    entry: dict = {name: round(statistics.fmean(r[name] for r in per_seed.values()), 4) for name in METRIC_NAMES}
    entry["ci95"] = bootstrap_ci95([session for sessions in judged_per_seed.values() for session in sessions])
    if len(per_seed) > 1:
        entry["spread"] = {n: round(statistics.stdev(r[n] for r in per_seed.values()), 4) for n in METRIC_NAMES}
    entry["per_seed"] = {str(s): {k: round(v, 4) for k, v in r.items()} for s, r in per_seed.items()}
    return entry


def aggregate(results: dict[int, dict], seeds: list[int]) -> dict:
    """Headline metrics with the policy's own history (SysBench's setting), reference history beside."""
    methods = {}
    for method in METHODS:
        by_history = {h: summarise({s: results[s]["judged"][method][h] for s in seeds}) for h in HISTORIES}
        methods[method] = {**by_history["own"], "reference_history": by_history["reference"]}
    efficiency = {
        kind: {q: round(statistics.fmean(results[s]["sample_efficiency"][kind][q] for s in seeds), 4)
               for q in ("valid", "dominated", "perfect")}
        for kind in ("direct", "reverse")
    }
    pairs = {m: int(statistics.fmean(results[s]["pairs"][m] for s in seeds)) for m in ("dpo", "rpo")}
    return {"methods": methods, "sample_efficiency": efficiency, "pairs": pairs}


def table(report: dict) -> str:
    lines = []
    if report["quick"]:
        lines += [QUICK_NOTE, ""]
    lines.append(f"{report['eval_turns']} held-out turns, each scored on the constraints its query triggers")
    lines.append(f"{'':<6} {'own history (SysBench)':^37}   {'reference history':^23}")
    lines.append(f"{'method':<6} {'CSR':>7} {'ISR':>7} {'SSR':>7}   ISR 95% CI       {'CSR':>7} {'ISR':>7} {'SSR':>7}")
    for method in METHODS:
        m = report["methods"][method]
        r = m["reference_history"]
        lo, hi = m["ci95"]["ISR"]
        lines.append(f"{method:<6} {m['CSR']:>7.3f} {m['ISR']:>7.3f} {m['SSR']:>7.3f}   [{lo:.3f}, {hi:.3f}]   "
                     f"{r['CSR']:>7.3f} {r['ISR']:>7.3f} {r['SSR']:>7.3f}")
    eff = report["sample_efficiency"]
    lines.append("")
    lines.append(f"{'pairing':<8} {'valid':>6} {'dominated':>9} {'perfect':>7}")
    for kind in ("direct", "reverse"):
        lines.append(f"{kind:<8} {eff[kind]['valid']:>6.2f} {eff[kind]['dominated']:>9.2f} {eff[kind]['perfect']:>7.2f}")
    lines.append(f"pairs: dpo {report['pairs']['dpo']}, rpo {report['pairs']['rpo']}; "
                 f"seeds {report['seeds']}; {report['minutes']} min")
    if report["quick"]:
        lines += ["", QUICK_NOTE]
    return "\n".join(lines)


def figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = METRIC_NAMES
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
    ax.set_title(f"Offline demo: held-out profiles, own history, seeds {report['seeds']}"
                 + (" (QUICK: smoke test)" if report["quick"] else ""))
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(quick: bool = False, seeds: str | int | tuple = "0", output_dir: str = "out/demo",
         figure_path: str | None = None, split: str = "eval", keep: bool = False, **overrides) -> None:
    """Run the demo; `--split dev` scores the development profiles (for calibration) instead of eval.

    The figure goes to `img/demo_results.png`, the README's figure, after a full run, and next to
    the report after a QUICK run, whose toy numbers must not replace it.

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
    figure_file = Path(figure_path) if figure_path else output / "demo_results.png" if quick else FIGURE
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
        scoring="each turn on the constraints its query triggers; metrics with the policy's own history, "
                "reference_history beside",
    )
    write_json(output / "report.json", report)
    figure(report, figure_file)
    if not keep:
        for seed in seed_list:
            shutil.rmtree(output / f"seed{seed}" / "models", ignore_errors=True)
    print(table(report))


if __name__ == "__main__":
    fire.Fire(main)
