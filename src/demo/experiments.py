"""The paper's claims tested in the demo world: `python -m rpo.demo.experiments NAME [--seeds 0,1,2]`.

NAME is one of `gap` (paper Table 2), `gamma` (Table 6), `methods` (Table 1's ordering), `prompt`
(triggered vs all constraints in RPO prompts) and `online` (iterative RPO, the paper's future
work). Every arm of a seed trains from the same cached base policy with the same steps, learning
rate and seed, on data from the same preference samples, and is scored on the same held-out
sessions; only the factor the experiment names changes. Each experiment writes
`{output_dir}/NAME.json` (per seed and arm: CSR, ISR, SSR, training records; per arm: mean and sd
over seeds, and the paired difference to the reference arm with a 95% interval over seeds × sessions),
a figure (`{output_dir}/NAME.png`, or `--figure_path`; a run changes no tracked file) and prints a table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from rpo.demo.arms import (
    Arm,
    EmptyArmData,
    SeedParts,
    judged_result,
    result_path,
    run_arm,
    seed_parts,
    train_arm,
)
from rpo.demo.by_constraints import by_constraints
from rpo.demo.pipeline import FULL, QUICK, Budget, fingerprint, sample_detail
from rpo.eval.crossed import crossed_difference, seeds_needed
from rpo.eval.metrics import METRICS, Session, bootstrap_ci95, score
from rpo.utils import cli
from rpo.utils.io import InputError, atomic_write, exit_on_input_error, output_lock, write_json
from rpo.utils.pairs.build import build_rpo_dataset

METRIC_NAMES = tuple(METRICS)
QUICK_NOTE = "QUICK mode is a smoke test at toy size: these numbers mean nothing."
ONLINE_RESULT_VERSION = 2  # 2: each round keeps its judged sessions (the curve's intervals)
POWER_TARGET = 0.015  # the half-width a powered comparison should reach: ±1.5 points
POWER_SESSIONS = (100, 300, 1000)


@dataclass(frozen=True)
class Experiment:
    """Arms to train and compare; each claim `(better, worse)` reads "better beats worse"."""

    name: str
    question: str
    arms: tuple[Arm, ...]
    reference: str
    claims: tuple[tuple[str, str], ...]


BASE = Arm("base", "base")
GAMMAS = (0.0, 0.05, 0.1, 0.2)
EXPERIMENTS = {
    experiment.name: experiment
    for experiment in (
        Experiment(
            "gap", "paper Table 2: RPO on pairs with larger gaps trains better (equal-size sets)",
            (BASE, Arm("g>=3", data="gap_ge3"), Arm("g=2", data="gap_2"), Arm("g=1", data="gap_1")),
            reference="g=1", claims=(("g>=3", "g=1"), ("g=2", "g=1"), ("g>=3", "g=2")),
        ),
        Experiment(
            "gamma", "paper Table 6: a small positive margin γ beats γ = 0 on the same RPO pairs",
            (BASE, *(Arm(f"γ={gamma:g}", rpo_gamma=gamma) for gamma in GAMMAS)),
            reference="γ=0", claims=tuple((f"γ={gamma:g}", "γ=0") for gamma in GAMMAS[1:]),
        ),
        Experiment(
            "methods", "paper Table 1's ordering: RPO > KTO, DPO > base (with SFT on the best samples)",
            (BASE, Arm("SFT", "sft"), Arm("DPO", "dpo"), Arm("KTO", "kto"), Arm("RPO")),
            reference="base",
            claims=(("RPO", "KTO"), ("DPO", "base"), ("RPO", "DPO"), ("KTO", "base"), ("SFT", "base"),
                    ("RPO", "base")),
        ),
        Experiment(
            "prompt", "RPO prompts holding only the turn's triggered constraints beat prompts holding all",
            (BASE, Arm("triggered"), Arm("all", prompt_constraints="all")),
            reference="all", claims=(("triggered", "all"),),
        ),
        Experiment(
            "online", "iterative RPO (sample, judge, reverse, train from the current policy, K rounds) "
                      "beats offline RPO with the same pairs and steps",
            (BASE, Arm("offline"), Arm("online")),  # both trained by `run_online`, which sets their pairs
            reference="offline", claims=(("online", "offline"),),
        ),
    )
}


def chunks(items: list, count: int) -> list[list]:
    """`items` cut into `count` contiguous, nearly equal parts."""
    size, extra = divmod(len(items), count)
    bounds = [k * size + min(k, extra) for k in range(count + 1)]
    return [items[bounds[k] : bounds[k + 1]] for k in range(count)]


def subset_detail(detail: Path, session_ids: set[str], path: Path) -> Path:
    """The lines of `detail` whose session is in `session_ids`, as a detail file of their own."""
    lines = [line for line in detail.read_text().splitlines() if json.loads(line)["session_id"] in session_ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run_online(parts: SeedParts, budget: Budget, rounds: int, keep: bool) -> dict[str, dict]:
    """Online RPO against offline RPO with as many pairs and steps, for one seed.

    The sampled sessions are cut into `rounds` parts. Round 1 trains the base on the pairs of its
    part's base samples; each later round samples its part from the policy the previous round left,
    judges and reverses, and trains that policy on the new pairs. Every round gets `pref_steps /
    rounds` steps and at most 1/rounds of the offline pool's pairs; the offline arm trains the base
    for `pref_steps` on a sample of the whole base detail with as many pairs as the rounds used.
    """
    key = fingerprint([parts.key, {name: getattr(budget, name) for name in ("pref_steps", "pref_lr", "rpo_gamma")},
                       rounds, ONLINE_RESULT_VERSION])
    root = parts.work / "online" / key
    finished = root / "result.json"
    if finished.exists():
        online = json.loads(finished.read_text())
        used = sum(entry["records"] for entry in online["rounds"])
        return {"offline": run_arm(Arm("offline", max_pairs=used), parts, budget, keep), "online": online}
    pool = build_rpo_dataset(parts.detail, root / "pool", "demo_rpo").pairs
    quota = max(1, pool // rounds)
    steps = [budget.pref_steps // rounds + (r < budget.pref_steps % rounds) for r in range(rounds)]
    curve: list[dict] = []
    model = parts.base
    for number, (sessions, round_steps) in enumerate(zip(chunks(parts.sessions, rounds), steps), 1):
        round_dir = root / f"round{number}"
        result_file = round_dir / "result.json"
        ids = {session.session_id for session in sessions}
        if result_file.exists() and ((round_dir / "model" / "config.json").exists() or number == rounds):
            curve.append(json.loads(result_file.read_text()))
            model = round_dir / "model"
            continue
        if number == 1:
            detail = subset_detail(parts.detail, ids, round_dir / "detail.jsonl")
        else:
            detail = sample_detail(model, sessions, parts.seed, budget, round_dir / "detail.jsonl",
                                   f"{parts.desc}: online round {number}")
        arm = Arm(f"online round {number}", max_pairs=quota)
        model, records = train_arm(arm, model, detail, round_dir, budget, parts.seed, parts.desc,
                                   steps=round_steps)
        entry = {"round": number, "steps": round_steps, **judged_result(model, parts, budget, records)}
        write_json(result_file, entry)
        curve.append(entry)
    used = sum(entry["records"] for entry in curve)
    offline = run_arm(Arm("offline", max_pairs=used), parts, budget, keep)
    if not keep:
        for number in range(1, rounds + 1):
            shutil.rmtree(root / f"round{number}" / "model", ignore_errors=True)
    rounds_summary = [
        {"round": entry["round"], "steps": entry["steps"], "records": entry["records"],
         "metrics": {name: round(value, 4) for name, value in score(entry["judged"]["own"]).items()},
         "judged": entry["judged"]["own"]}
        for entry in curve
    ]
    online = {**curve[-1], "records": used, "rounds": rounds_summary}
    write_json(finished, online)
    return {"offline": offline, "online": online}


def run_seed(experiment: Experiment, parts: SeedParts, budget: Budget, jobs: int, rounds: int,
             keep: bool) -> dict[str, dict]:
    """Every arm's result for one seed, `jobs` trainings at a time (each with its share of the cores)."""
    plain = [arm for arm in experiment.arms if experiment.name != "online" or arm.method == "base"]
    to_train = [arm for arm in plain if arm.method != "base" and not result_path(parts, arm, budget).exists()]
    workers = max(1, min(jobs, len(to_train)))
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    def built(arm: Arm) -> dict | None:
        try:
            return run_arm(arm, parts, budget, keep, threads)
        except EmptyArmData as err:
            print(f"{parts.desc}: arm {arm.name} not built: {err}; the other arms go on", flush=True)
            return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = {arm.name: result for arm, result in zip(plain, pool.map(built, plain)) if result is not None}
    if experiment.name == "online":  # one round after the other: each training gets every core
        results.update(run_online(parts, budget, rounds, keep))
    return results


def verdict(interval: list[float]) -> str:
    low, high = interval
    return "supported" if low > 0 else "reversed" if high < 0 else "inconclusive"


def claim_verdict(per_metric: dict[str, str]) -> str:
    """Supported: some metric's interval favours the claim and none opposes it; not supported: the
    reverse; mixed: both; inconclusive: every interval holds 0."""
    favour = [m for m, v in per_metric.items() if v == "supported"]
    against = [m for m, v in per_metric.items() if v == "reversed"]
    if favour and against:
        return f"mixed (supported on {', '.join(favour)}, reversed on {', '.join(against)})"
    if favour:
        return f"supported on {', '.join(favour)}"
    if against:
        return f"not supported (reversed on {', '.join(against)})"
    return "inconclusive"


def paired(judged: dict[int, dict[str, list[Session]]], first: str, second: str) -> dict[str, dict] | None:
    """Paired differences first − second over seeds × held-out sessions, per metric, from the seeds
    where both arms were built (None when there is none), with the interval of `rpo.eval.crossed`."""
    seeds = [seed for seed in judged if first in judged[seed] and second in judged[seed]]
    if not seeds:
        return None
    grid = [list(zip(judged[seed][first], judged[seed][second], strict=True)) for seed in seeds]
    return {name: crossed_difference(grid, name) for name in METRIC_NAMES}


def interval_over_sessions(per_seed: list[list[Session]]) -> dict[str, list[float]]:
    """95% bootstrap interval of each metric's mean over seeds, resampling the held-out sessions: every
    seed is scored on the same sessions, so a session is drawn with its answers under every seed."""
    units = list(zip(*per_seed, strict=True))

    def mean_over_seeds(metric):
        return lambda drawn: statistics.fmean(metric([unit[k] for unit in drawn]) for k in range(len(per_seed)))

    return bootstrap_ci95(units, {name: mean_over_seeds(metric) for name, metric in METRICS.items()})


def power(differences: dict[str, dict]) -> dict[str, dict[str, int | None]] | None:
    """Per metric, the seeds a 95% interval of ±`POWER_TARGET` would take with each of `POWER_SESSIONS`
    held-out sessions, projected from this run's variance components (None from one seed, which has no
    seed variance to project from; a None count: more than 1,000 seeds)."""
    if any(difference["components"] is None for difference in differences.values()):
        return None
    return {name: {str(sessions): seeds_needed(difference["components"], sessions, POWER_TARGET)
                   for sessions in POWER_SESSIONS} for name, difference in differences.items()}


def summarise(experiment: Experiment, results: dict[int, dict[str, dict]], details: Sequence[Path] = ()) -> dict:
    """Per seed and arm metrics; per arm mean, sd, 95% interval and paired difference to the reference;
    claims; with the seeds' detail files and both DPO and RPO among the arms, the split by constraints in
    play. An arm that some seed could not build is summarised over the seeds that built it."""
    seeds = sorted(results)
    shared = {}
    for seed in seeds:
        starts = {(result["base"], tuple(result["held_out"])) for result in results[seed].values()}
        if len(starts) != 1:
            raise RuntimeError(f"seed {seed}: the arms do not share one base and one held-out set: {starts}")
        base, held_out = starts.pop()
        shared[str(seed)] = {"base": base, "held_out": list(held_out)}
    judged = {seed: {arm: result["judged"]["own"] for arm, result in results[seed].items()} for seed in seeds}
    per_seed = {
        str(seed): {arm: {**{k: round(v, 4) for k, v in score(sessions).items()},
                          "records": results[seed][arm]["records"]} for arm, sessions in judged[seed].items()}
        for seed in seeds
    }
    arms = {}
    for arm in (a.name for a in experiment.arms):
        built = [seed for seed in seeds if arm in judged[seed]]
        entry: dict = {"seeds": built}
        if built:
            values = [per_seed[str(seed)][arm] for seed in built]
            entry.update({name: round(statistics.fmean(v[name] for v in values), 4) for name in METRIC_NAMES})
            entry["sd"] = {name: round(statistics.stdev(v[name] for v in values), 4) if len(values) > 1 else 0.0
                           for name in METRIC_NAMES}
            entry["ci95"] = interval_over_sessions([judged[seed][arm] for seed in built])
            entry["records"] = round(statistics.fmean(v["records"] for v in values), 1)
            if arm != experiment.reference and (difference := paired(judged, arm, experiment.reference)):
                entry["vs_reference"] = difference
        arms[arm] = entry
    claims = []
    for better, worse in experiment.claims:
        differences = paired(judged, better, worse)
        if differences is None:
            claims.append({"claim": f"{better} > {worse}", "difference": None, "verdicts": None,
                           "verdict": "not built (no seed has both arms)"})
            continue
        per_metric = {name: verdict(differences[name]["ci95"]) for name in METRIC_NAMES}
        claims.append({"claim": f"{better} > {worse}", "difference": differences, "verdicts": per_metric,
                       "verdict": claim_verdict(per_metric), "seeds_for_target": power(differences)})
    report: dict = {"experiment": experiment.name, "question": experiment.question,
                    "reference": experiment.reference, "arms": arms, "claims": claims, "per_seed": per_seed,
                    "shared": shared}
    if details and {"RPO", "DPO"} <= {arm.name for arm in experiment.arms}:
        report["by_constraints"] = by_constraints(details, judged, "RPO", "DPO")
    if experiment.name == "online":
        curves = {seed: results[seed]["online"]["rounds"] for seed in seeds}
        report["curve"] = {str(seed): [{key: value for key, value in entry.items() if key != "judged"}
                                       for entry in curve] for seed, curve in curves.items()}
        report["curve_ci95"] = [interval_over_sessions([curves[seed][k]["judged"] for seed in seeds])
                                for k in range(len(curves[seeds[0]]))]
    return report


def built_arms(report: dict) -> dict[str, dict]:
    """The arms some seed built, in the experiment's order."""
    return {name: arm for name, arm in report["arms"].items() if arm["seeds"]}


def interval_text(metric: str, difference: dict) -> str:
    """`ISR +0.027 [-0.004, +0.058]`: a difference with its interval, for the printed table."""
    low, high = difference["ci95"]
    return f"{metric} {difference['diff']:+.3f} [{low:+.3f}, {high:+.3f}]"


def table(report: dict) -> str:
    lines = [QUICK_NOTE, ""] if report["quick"] else []
    lines += [f"{report['experiment']}: {report['question']}",
              (f"seeds {report['seeds']}, {report['eval_sessions']} held-out sessions each ({report['split']}), "
               f"own history; mean ± sd over seeds; {report['minutes']} min"), ""]
    lines.append(f"{'arm':<10}" + "".join(f"{name:>16}" for name in METRIC_NAMES) + f"{'records':>9}")
    for name, arm in built_arms(report).items():
        cells = "".join(f"{arm[m]:>9.3f} ± {arm['sd'][m]:.3f}" for m in METRIC_NAMES)
        lines.append(f"{name:<10}{cells}{arm['records']:>9.0f}")
    missing = {name: arm["seeds"] for name, arm in report["arms"].items() if arm["seeds"] != report["seeds"]}
    for name, seeds in missing.items():
        lines.append(f"{name:<10}not built for seeds {sorted(set(report['seeds']) - set(seeds))}")
    lines += ["", "paired difference, 95% interval over seeds × sessions:"]
    for claim in report["claims"]:
        cells = "  ".join(interval_text(m, d) for m, d in (claim["difference"] or {}).items())
        lines.append(f"  {claim['claim']:<16} {cells}  -> {claim['verdict']}")
    if "by_constraints" in report:
        split = report["by_constraints"]
        lines += ["", (f"by constraints in play: Table 4 (direct valid, direct perfect, reverse perfect) and "
                      f"{split['claim']} (CSR, ISR):")]
        for group in split["groups"]:
            table4, difference = split["table4"][group], split["difference"][group]
            rates = "  ".join(f"{table4[method][quality]['rate']:.2f}" for method, quality in
                              (("direct", "valid"), ("direct", "perfect"), ("reverse", "perfect")))
            cells = "  ".join(interval_text(m, difference[m]) for m in ("CSR", "ISR"))
            lines.append(f"  {group:<4} {table4['turns']:>6} turns  {rates}  | {difference['turns']:>5} turns  {cells}")
    if "curve" in report:
        lines += ["", "online RPO per round (mean over seeds):"]
        for entry in mean_curve(report):
            lines.append(f"  round {entry['round']}: " + "  ".join(f"{m} {entry[m]:.3f}" for m in METRIC_NAMES)
                         + f"  (records {entry['records']:.0f}, steps {entry['steps']})")
    return "\n".join(lines)


def points(value: float) -> str:
    """A difference of rates in points, signed, with a true minus sign (the README's style)."""
    return f"{100 * value:+.1f}".replace("-", "\u2212")


def readme_tables(report: dict) -> str:
    """The README's two tables for the report: each arm's mean ± sd over seeds, and each claim's paired
    difference in points with its 95% interval and verdict (Markdown, written beside the JSON)."""
    lines = ["| arm | " + " | ".join(METRIC_NAMES) + " | training records (mean) |",
             "|---|" + "---|" * (len(METRIC_NAMES) + 1)]
    for name, arm in built_arms(report).items():
        cells = " | ".join(f"{arm[m]:.3f} ± {arm['sd'][m]:.3f}" for m in METRIC_NAMES)
        records = f"{arm['records']:,.0f}" if arm["records"] else "—"
        lines.append(f"| {name} | {cells} | {records} |")
    lines += ["", "| claim (points, 95% interval) | " + " | ".join(METRIC_NAMES) + " | verdict |",
              "|---|" + "---|" * (len(METRIC_NAMES) + 1)]
    for claim in report["claims"]:
        differences = claim["difference"]
        cells = " | ".join(interval_points(differences[m]) if differences else "—" for m in METRIC_NAMES)
        lines.append(f"| {claim['claim']} | {cells} | {claim['verdict']} |")
    return "\n".join(lines + power_table(report) + per_seed_table(report) + constraints_table(report)) + "\n"


def interval_points(difference: dict) -> str:
    return f"{points(difference['diff'])} [{points(difference['ci95'][0])}, {points(difference['ci95'][1])}]"


def power_table(report: dict) -> list[str]:
    """Per claim and metric, the seeds a ±1.5-point interval would take (Markdown lines; none from one seed)."""
    rows = [(claim, metric, counts) for claim in report["claims"] if claim.get("seeds_for_target")
            for metric, counts in claim["seeds_for_target"].items()]
    if not rows:
        return []
    lines = ["", "| claim | metric | 95% half-width now (points) | seeds for ±1.5 points with "
             + " / ".join(f"{int(n):,}" for n in rows[0][2]) + " sessions |", "|---|---|---|---|"]
    for claim, metric, counts in rows:
        low, high = claim["difference"][metric]["ci95"]
        needed = " / ".join(str(count) if count is not None else "> 1,000" for count in counts.values())
        lines.append(f"| {claim['claim']} | {metric} | {50 * (high - low):.1f} | {needed} |")
    return lines


def per_seed_table(report: dict) -> list[str]:
    """The split claim's difference seed by seed, with both arms' training records (Markdown lines;
    methods only): how far the seeds spread is what the interval over seeds × sessions counts."""
    if "by_constraints" not in report:
        return []
    better, worse = report["by_constraints"]["claim"].split(" > ")
    header = " | ".join(f"{better} − {worse} {m}" for m in METRIC_NAMES)
    lines = ["", f"| seed | {header} | {worse} / {better} records |", "|---|" + "---|" * (len(METRIC_NAMES) + 1)]
    for seed, arms in report["per_seed"].items():
        if better in arms and worse in arms:
            cells = " | ".join(points(arms[better][m] - arms[worse][m]) for m in METRIC_NAMES)
            lines.append(f"| {seed} | {cells} | {arms[worse]['records']:,} / {arms[better]['records']:,} |")
    return lines


def constraints_table(report: dict) -> list[str]:
    """Table 4's rates and the claim's difference by constraints in play (Markdown lines; methods only)."""
    if "by_constraints" not in report:
        return []
    split = report["by_constraints"]
    claim = split["claim"].replace(" > ", " − ")

    def rate(entry: dict) -> str:
        return f"{entry['rate']:.2f} [{entry['ci95'][0]:.2f}, {entry['ci95'][1]:.2f}]"

    lines = ["", (f"| constraints in play | sampled turns (all seeds) | direct valid | direct perfect | reverse perfect "
                 f"| held-out turns (each seed) | {claim} CSR | {claim} ISR |"), "|---|---|---|---|---|---|---|---|"]
    for group in split["groups"]:
        table4, difference = split["table4"][group], split["difference"][group]
        lines.append(f"| {group} | {table4['turns']:,} | {rate(table4['direct']['valid'])} | "
                     f"{rate(table4['direct']['perfect'])} | {rate(table4['reverse']['perfect'])} | "
                     f"{difference['turns']:,} | {interval_points(difference['CSR'])} | "
                     f"{interval_points(difference['ISR'])} |")
    return lines


def mean_curve(report: dict) -> list[dict]:
    """The online rounds' metrics averaged over seeds with their 95% intervals, round 0 being the base."""
    seeds = list(report["curve"])
    base = report["arms"]["base"]
    points = [{"round": 0, "records": 0, "steps": 0, **{m: base[m] for m in METRIC_NAMES}, "ci95": base["ci95"]}]
    for k, first in enumerate(report["curve"][seeds[0]]):
        rounds = [report["curve"][seed][k] for seed in seeds]
        points.append({"round": first["round"], "steps": first["steps"],
                       "records": statistics.fmean(r["records"] for r in rounds),
                       **{m: round(statistics.fmean(r["metrics"][m] for r in rounds), 4) for m in METRIC_NAMES},
                       "ci95": report["curve_ci95"][k]})
    return points


def figure_data(report: dict) -> dict:
    """What the figure draws, read from the report alone: per arm (or online round) and metric the value
    with its 95% interval, and per claim and metric the paired difference with its 95% interval."""
    data: dict = {"differences": [
        {"label": f"{claim['claim']} {metric}", "metric": metric, "diff": claim["difference"][metric]["diff"],
         "ci95": claim["difference"][metric]["ci95"]}
        for claim in report["claims"] if claim["difference"] for metric in METRIC_NAMES
    ]}
    if "curve" in report:
        data["curve"] = [{"round": p["round"], **{m: {"value": p[m], "ci95": p["ci95"][m]} for m in METRIC_NAMES}}
                         for p in mean_curve(report)]
        data["offline"] = {m: report["arms"]["offline"][m] for m in METRIC_NAMES}
    else:
        data["arms"] = {name: {m: {"value": arm[m], "ci95": arm["ci95"][m]} for m in METRIC_NAMES}
                        for name, arm in built_arms(report).items()}
    return data


def figure_digest(report: dict) -> str:
    """SHA-256 of what the figure draws; stored in the PNG so a copy can be traced to its report."""
    return hashlib.sha256(json.dumps(figure_data(report), sort_keys=True).encode()).hexdigest()


def error_bars(entries: list[dict]) -> list[list[float]]:
    """Matplotlib's asymmetric `yerr`/`xerr` for values with their intervals."""
    return [[e["value"] - e["ci95"][0] for e in entries], [e["ci95"][1] - e["value"] for e in entries]]


def figure(report: dict, path: Path) -> None:
    """Left: each arm's metrics, or the online curve, with 95% intervals over held-out sessions; right:
    the claims' paired differences with their 95% intervals over seeds × sessions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = figure_data(report)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    if "curve" in data:
        rounds = [p["round"] for p in data["curve"]]
        for k, metric in enumerate(METRIC_NAMES):
            entries = [p[metric] for p in data["curve"]]
            line = left.errorbar(rounds, [e["value"] for e in entries], yerr=error_bars(entries), marker="o",
                                 capsize=3, label=metric)
            left.axhline(data["offline"][metric], color=line[0].get_color(), linestyle="--", linewidth=1,
                         label=f"{metric} offline" if k == 0 else None)
        left.set_xlabel("round (0: base)")
    else:
        names = list(data["arms"])
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            entries = [data["arms"][name][m] for m in METRIC_NAMES]
            left.bar([x + (i - (len(names) - 1) / 2) * width for x in range(len(METRIC_NAMES))],
                     [e["value"] for e in entries], width, yerr=error_bars(entries), capsize=2, label=name)
        left.set_xticks(range(len(METRIC_NAMES)), METRIC_NAMES)
    left.legend(fontsize=8)
    left.set_ylim(0, 1)
    left.set_ylabel("rate (95% CI over held-out sessions)")
    rows = data["differences"]
    for y, row in enumerate(rows):
        entry = {"value": row["diff"], "ci95": row["ci95"]}
        right.errorbar(row["diff"], y, xerr=error_bars([entry]), fmt="o",
                       color=f"C{METRIC_NAMES.index(row['metric'])}", capsize=3)
    right.axvline(0, color="grey", linewidth=1)
    right.set_yticks(range(len(rows)), [row["label"] for row in rows], fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("paired difference (95% CI over seeds × sessions)")
    fig.suptitle(f"demo experiment '{report['experiment']}', seeds {report['seeds']}"
                 + (" (QUICK: smoke test)" if report["quick"] else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Description": f"figure_data sha256 {figure_digest(report)}"})
    plt.close(fig)


def chosen_arms(experiment: Experiment, arms: str | tuple | None) -> Experiment:
    """The experiment restricted to the named arms (the base and the reference arm always stay), with
    the claims whose two arms both remain; None keeps every arm."""
    if arms is None:
        return experiment
    names = [str(name).strip() for name in (arms if isinstance(arms, tuple) else str(arms).split(","))]
    known = [arm.name for arm in experiment.arms]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise InputError(f"--arms: {experiment.name} has arms {', '.join(known)}; got {arms!r}")
    keep = {"base", experiment.reference, *names}
    claims = tuple(claim for claim in experiment.claims if set(claim) <= keep)
    return replace(experiment, arms=tuple(arm for arm in experiment.arms if arm.name in keep), claims=claims)


def parse_seeds(seeds: str | int | tuple) -> list[int]:
    values = seeds if isinstance(seeds, tuple) else str(seeds).split(",")
    try:
        parsed = [int(value) for value in values]
    except ValueError:
        raise InputError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    if not parsed or len(set(parsed)) != len(parsed) or min(parsed) < 0:
        raise InputError(f"--seeds: expected distinct non-negative integers, got {seeds!r}")
    return parsed


@exit_on_input_error
def main(name: str, seeds: str | int | tuple = "0,1,2", output_dir: str = "out/experiments", quick: bool = False,
         split: str = "eval", jobs: int = 1, rounds: int = 3, keep: bool = False, figure_path: str | None = None,
         arms: str | tuple | None = None, **overrides) -> None:
    """Run experiment NAME over `seeds`; bases, samples and finished arms in `output_dir` are reused.

    `--arms DPO,RPO` trains only those arms (with the base and the reference arm) and tests only the
    claims between them; `--jobs 2` trains two arms at a time with one core each; `--rounds` is online RPO's K; any
    `Budget` field can be overridden (`--pref_steps 60`), for every arm alike.
    """
    began = time.monotonic()
    if name not in EXPERIMENTS:
        raise InputError(f"experiment {name!r}: expected one of {', '.join(EXPERIMENTS)}")
    if split not in ("eval", "dev"):
        raise InputError(f"--split: expected eval or dev, got {split!r}")
    unknown = set(overrides) - {f.name for f in fields(Budget)}
    if unknown:
        raise InputError(f"unknown budget options: {', '.join(sorted(unknown))}")
    if not isinstance(jobs, int) or jobs < 1 or not isinstance(rounds, int) or rounds < 2:
        raise InputError(f"--jobs must be an integer >= 1 and --rounds >= 2, got {jobs!r} and {rounds!r}")
    experiment, seed_list = chosen_arms(EXPERIMENTS[name], arms), parse_seeds(seeds)
    budget = replace(QUICK if quick else FULL, **overrides)
    output = Path(output_dir).resolve()
    results: dict[int, dict[str, dict]] = {}
    details: list[Path] = []
    held_out = 0
    for seed in seed_list:
        work = output / f"seed{seed}"
        with output_lock(work):
            parts = seed_parts(seed, budget, work, split)
            held_out = len(parts.held_out)
            results[seed] = run_seed(experiment, parts, budget, jobs, rounds, keep)
            details.append(parts.detail)
    report = summarise(experiment, results, details)
    for entry in report["shared"].values():  # the report holds no path of this machine
        entry["base"] = os.path.relpath(entry["base"], output)
    report.update(seeds=seed_list, split=split, eval_sessions=held_out, quick=quick, budget=asdict(budget),
                  rounds=rounds if name == "online" else None, minutes=round((time.monotonic() - began) / 60, 2))
    write_json(output / f"{name}.json", report)
    with atomic_write(output / f"{name}.md") as tables:
        tables.write(readme_tables(report))
    figure_file = Path(figure_path) if figure_path else output / f"{name}.png"
    figure(report, figure_file)
    print(table(report))


if __name__ == "__main__":
    cli.run(main)
