"""Compare evaluation runs side by side, as the paper's Table 1 lays them out, with a figure.

    python src/eval/compare.py DIR [DIR ...] [--figure=out/eval_compare.png] [--json]

Each DIR is one model (its name labels the row): a run directory of `sysbench.py run` or
`multi_if.py run` (its `metrics.json`), or a folder holding such run directories one level down
(say `base/sysbench` and `base/multi_if`). Columns as in Table 1: SysBench CSR / ISR / SSR and
their average, Multi-IF's turns 1-3 on the paper's subset (English and Chinese, weighted by rows)
and their average, each with its 95% bootstrap interval where the run has one.

Numbers are compared only when they can be: an incomplete run is refused, every figure must be a
fraction, and the notes under the table say which rows used another judge or Multi-IF subset
than the others, or a judge whose figures are not comparable with SysBench's published ones.
The figure goes under `out/` (ignored by git) unless `--figure` says otherwise.
"""

from __future__ import annotations

import json as jsonlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from rpo.eval.common import print_json
from rpo.utils import cli
from rpo.utils.io import InputError, exit_on_input_error
from rpo.utils.text_table import table

SYSBENCH_METRICS = ("CSR", "ISR", "SSR")
PAPER_STEPS = 3
DEFAULT_FIGURE = "out/eval_compare.png"


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        metrics = jsonlib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except jsonlib.JSONDecodeError as err:
        raise InputError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid JSON (nested too deeply)") from None
    if not isinstance(metrics, dict) or not ({"CSR", "steps"} & set(metrics)):
        raise InputError(f"{path}: not the metrics.json of a SysBench or Multi-IF run")
    if metrics.get("complete") is False:
        raise InputError(f"{path}: an incomplete run ({metrics.get('incomplete', 'turns unjudged')}): "
                         "finish it (rerun its command) before comparing")
    return metrics


def _field(path: Path, obj: Any, *keys: str | int) -> Any:
    """`obj[k1][k2]...`, or a one-line error naming the file and the missing field."""
    for depth, key in enumerate(keys):
        inside = isinstance(obj, dict) if isinstance(key, str) else isinstance(obj, list) and key < len(obj)
        if not inside or (isinstance(key, str) and key not in obj):
            name = ".".join(str(k) for k in keys[: depth + 1])
            raise InputError(f"{path}: field {name}: missing")
        obj = obj[key]
    return obj


def _fraction(path: Path, value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise InputError(f"{path}: field {name}: expected a fraction in [0, 1], got {jsonlib.dumps(value)}")
    return float(value)


def _interval(path: Path, value: Any, name: str) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("mean")
    if not isinstance(value, list) or len(value) != 2:
        raise InputError(f"{path}: field {name}: expected [low, high], got {jsonlib.dumps(value)}")
    return [_fraction(path, v, name) for v in value]


def _sysbench_entry(path: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for m in SYSBENCH_METRICS:
        entry[m] = {"value": _fraction(path, _field(path, metrics, m), m),
                    "ci95": _interval(path, _field(path, metrics, "ci95", m), f"ci95.{m}")}
    entry["Avg"] = {"value": sum(entry[m]["value"] for m in SYSBENCH_METRICS) / len(SYSBENCH_METRICS), "ci95": None}
    judge = metrics.get("judge") if isinstance(metrics.get("judge"), dict) else {}
    entry["judge"] = {"model": judge.get("model"), "prompt": judge.get("prompt")}
    return entry


def _multi_if_entry(path: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    root: tuple[str, ...] = ("paper",) if metrics.get("paper") is not None else ()  # else every language pooled
    base = _field(path, metrics, *root)
    if not isinstance(base, dict):
        raise InputError(f"{path}: field paper: expected an object")
    steps, intervals = _field(path, base, "steps"), base.get("ci95")
    languages = _field(path, base, "languages") if root else None
    prefix = ".".join((*root, ""))
    if not isinstance(steps, list) or not steps:
        raise InputError(f"{path}: field {prefix}steps: expected a list of steps")
    if intervals is not None and (not isinstance(intervals, list) or len(intervals) != len(steps)):
        raise InputError(f"{path}: field {prefix}ci95: expected one interval per step")
    shown = [{"value": _fraction(path, _field(path, metrics, *root, "steps", k, "mean"), f"{prefix}steps.{k}.mean"),
              "ci95": _interval(path, intervals[k], f"{prefix}ci95.{k}") if intervals else None}
             for k in range(min(len(steps), PAPER_STEPS))]
    return {"steps": shown, "Avg": {"value": sum(s["value"] for s in shown) / len(shown), "ci95": None},
            "languages": sorted(map(str, languages)) if isinstance(languages, list) else None}


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """`{"name", "sysbench": entry | None, "multi_if": entry | None}` of one model's folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: not a directory")
    found = [run_dir / "metrics.json"] if (run_dir / "metrics.json").is_file() else sorted(run_dir.glob("*/metrics.json"))
    if not found:
        raise InputError(f"{run_dir}: no metrics.json here or one level down")
    row: dict[str, Any] = {"name": run_dir.name, "sysbench": None, "multi_if": None}
    for path in found:
        metrics = _read_metrics(path)
        kind = "sysbench" if "CSR" in metrics else "multi_if"
        if row[kind] is not None:
            raise InputError(f"{run_dir}: more than one {kind} run ({path} and another)")
        row[kind] = _sysbench_entry(path, metrics) if kind == "sysbench" else _multi_if_entry(path, metrics)
    return row


def _describe_judge(judge: dict[str, Any]) -> str:
    return f"{judge['model'] or 'judge not recorded'} ({judge['prompt'] or 'prompt not recorded'})"


def comparison_notes(runs: list[dict[str, Any]]) -> list[str]:
    """Which rows cannot be read against the others or against the published tables."""
    notes = []
    judged = [r for r in runs if r["sysbench"]]
    for run in judged:
        if run["sysbench"]["judge"]["prompt"] == "own":
            notes.append(f"{run['name']}: SysBench judged with this project's own prompt, not SysBench's: "
                         "not comparable with SysBench's published figures")
        elif run["sysbench"]["judge"]["prompt"] is None:
            notes.append(f"{run['name']}: SysBench judge not recorded")
    judges = {_describe_judge(r["sysbench"]["judge"]) for r in judged}
    if len(judges) > 1:
        notes.append("SysBench judges differ between rows ("
                     + "; ".join(f"{r['name']}: {_describe_judge(r['sysbench']['judge'])}" for r in judged)
                     + "): its columns do not compare across them")
    with_multi_if = [r for r in runs if r["multi_if"]]
    for run in with_multi_if:
        if run["multi_if"]["languages"] is None:
            notes.append(f"{run['name']}: Multi-IF over every language of its file, not the paper's subset")
    subsets = {str(r["multi_if"]["languages"]) for r in with_multi_if}
    if len(subsets) > 1:
        notes.append("Multi-IF subsets differ between rows ("
                     + "; ".join(f"{r['name']}: {','.join(r['multi_if']['languages'] or ['all'])}"
                                 for r in with_multi_if) + ")")
    return notes


def comparison(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The compared numbers (fractions) and intervals, one entry per run, and the notes."""
    return {"runs": [{k: v for k, v in run.items() if v is not None} for run in runs],
            "multi_if_steps": max((len(r["multi_if"]["steps"]) for r in runs if r["multi_if"]), default=0),
            "notes": comparison_notes(runs)}


def _cell(value: dict[str, Any] | None) -> str:
    if value is None:
        return "-"
    text = f"{100 * value['value']:.2f}"
    ci = value.get("ci95")
    return text + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")


def format_table(result: dict[str, Any]) -> str:
    steps = result["multi_if_steps"]
    header = ["model", *[f"SysBench {m}" for m in (*SYSBENCH_METRICS, "Avg.")],
              *[f"Multi-IF T{k}" for k in range(1, steps + 1)], *(["Multi-IF Avg."] if steps else [])]
    rows = []
    for entry in result["runs"]:
        sysbench = entry.get("sysbench")
        cells = [_cell(sysbench[m]) if sysbench else "-" for m in (*SYSBENCH_METRICS, "Avg")]
        multi_if = entry.get("multi_if")
        if steps:
            cells += [_cell(multi_if["steps"][k]) if multi_if and k < len(multi_if["steps"]) else "-"
                      for k in range(steps)]
            cells.append(_cell(multi_if["Avg"]) if multi_if else "-")
        rows.append([entry["name"], *cells])
    lines = [table(header, rows), "(%, 95% bootstrap intervals; Avg. is the mean of the columns before it)"]
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def _bars(axis: Any, labels: list[str], runs: list[dict[str, Any]], values: list[list[tuple[float, Any]]]) -> None:
    width = 0.8 / max(len(runs), 1)
    for i, (run, series) in enumerate(zip(runs, values)):
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(labels))]
        heights = [100 * v for v, _ in series]
        errors = [[100 * (v - ci[0]) if ci else 0 for v, ci in series], [100 * (ci[1] - v) if ci else 0 for v, ci in series]]
        axis.bar(xs, heights, width, yerr=errors, capsize=3, label=run["name"])
    axis.set_xticks(range(len(labels)), labels)
    axis.set_ylabel("%")


def write_figure(result: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars with 95% intervals: SysBench's three metrics, Multi-IF's steps; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    with_sysbench = [e for e in result["runs"] if "sysbench" in e]
    with_multi_if = [e for e in result["runs"] if "multi_if" in e]
    if with_sysbench:
        panels.append(("SysBench", list(SYSBENCH_METRICS), with_sysbench,
                       [[(e["sysbench"][m]["value"], e["sysbench"][m]["ci95"]) for m in SYSBENCH_METRICS]
                        for e in with_sysbench]))
    if with_multi_if:
        steps = result["multi_if_steps"]
        panels.append(("Multi-IF (mean of four accuracies)", [f"turn {k}" for k in range(1, steps + 1)], with_multi_if,
                       [[(s["value"], s["ci95"]) for s in e["multi_if"]["steps"]]
                        + [(0.0, None)] * (steps - len(e["multi_if"]["steps"])) for e in with_multi_if]))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for axis, (title, labels, runs, values) in zip(axes[0], panels):
        _bars(axis, labels, runs, values)
        axis.set_title(title)
        axis.legend(fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=120)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        Path(tmp).unlink(missing_ok=True)
    return path


@exit_on_input_error
def main(*run_dirs: str, figure: str = DEFAULT_FIGURE, json: bool = False) -> None:
    """Print one table of the runs and write the figure."""
    if not run_dirs:
        raise InputError("give at least one run directory")
    result = comparison([load_run(d) for d in run_dirs])
    written = write_figure(result, figure)
    if json:
        print_json({**result, "figure": str(written)})
    else:
        print(format_table(result))
        print(f"\nfigure: {written}")


if __name__ == "__main__":
    cli.run(main)
