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
import shutil
import statistics
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from rpo.demo.evaluation import HISTORIES, evaluate
from rpo.demo.pipeline import (
    EVAL_STREAM,
    FULL,
    QUICK,
    Budget,
    build_world,
    held_out_sessions,
    sample_detail,
    sample_profiles,
    self_play_sessions,
    train_base,
    world_profiles,
)
from rpo.demo.training import train
from rpo.eval.metrics import Session, bootstrap_ci95, score
from rpo.utils import cli
from rpo.utils.io import write_json
from rpo.utils.pairs.build import build_dpo_dataset, build_rpo_dataset
from tqdm import tqdm

__all__ = ["EVAL_STREAM", "QUICK", "QUICK_NOTE", "main", "self_play_sessions", "world_profiles"]

METHODS = ("base", "dpo", "rpo")
METRIC_NAMES = ("CSR", "ISR", "SSR")
QUICK_NOTE = ("QUICK mode is a smoke test: toy sizes and a few training steps, so these numbers mean "
              "nothing (equal metrics for base, DPO and RPO are expected); run `make demo` for a measurement.")


def run_seed(seed: int, budget: Budget, work: Path, split: str, timings: dict[str, float]) -> dict:
    from rpo.demo.policy import LocalPolicy

    prefix = f"[demo] seed {seed}"

    def lap(stage: str, started: float) -> None:
        timings[stage] = timings.get(stage, 0.0) + round(time.monotonic() - started, 1)
        print(f"{prefix}: {stage} done in {time.monotonic() - started:.0f} s", flush=True)

    started = time.monotonic()
    init = build_world(seed, budget, work)
    lap("world", started)

    started = time.monotonic()
    base = train_base(seed, budget, work, init, prefix)
    lap("sft", started)

    started = time.monotonic()
    sessions = asyncio.run(self_play_sessions(sample_profiles(seed, budget), seed, budget.turns))
    detail_path = sample_detail(base, sessions, seed, budget, work / "detail.jsonl", prefix)
    data_dir = work / "data"
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
    eval_sessions = held_out_sessions(split, budget)
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

    The report and the figure go to `output_dir` (ignored by git): a run changes no tracked file. The
    README's figure, `img/demo_results.png`, is a full run's figure copied there deliberately.

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
    figure_file = Path(figure_path) if figure_path else output / "demo_results.png"
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
    print(f"[demo] wrote {output / 'report.json'} and {figure_file}", flush=True)


if __name__ == "__main__":
    cli.run(main)
