"""Compare evaluation runs side by side, as the paper's Table 1 lays them out, with a figure.

    python src/eval/compare.py DIR [DIR ...] [--figure=img/eval_compare.png] [--json]

Each DIR is one model (its name labels the row): a run directory of `sysbench.py run` or
`multi_if.py run` (its `metrics.json`), or a folder holding such run directories one level down
(say `base/sysbench` and `base/multi_if`). Columns: SysBench CSR / ISR / SSR and Multi-IF's mean
accuracy per step, each with its 95% bootstrap interval.
"""

from __future__ import annotations

import json as jsonlib
import os
import tempfile
from pathlib import Path
from typing import Any

from rpo.eval.common import pct_ci, print_json, table
from rpo.utils import cli
from rpo.utils.io import InputError, exit_on_input_error

SYSBENCH_METRICS = ("CSR", "ISR", "SSR")
DEFAULT_FIGURE = "img/eval_compare.png"


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        metrics = jsonlib.loads(path.read_text(encoding="utf-8"))
    except jsonlib.JSONDecodeError as err:
        raise InputError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(metrics, dict) or not ({"CSR", "steps"} & set(metrics)):
        raise InputError(f"{path}: not the metrics.json of a SysBench or Multi-IF run")
    return metrics


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """`{"name", "sysbench": metrics | None, "multi_if": metrics | None}` of one model's folder."""
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
        row[kind] = metrics
    return row


def comparison(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The compared numbers (fractions) and intervals, one entry per run."""
    steps = max((len(r["multi_if"]["steps"]) for r in runs if r["multi_if"]), default=0)
    out = []
    for run in runs:
        entry: dict[str, Any] = {"name": run["name"]}
        if run["sysbench"]:
            entry["sysbench"] = {m: {"value": run["sysbench"][m], "ci95": run["sysbench"]["ci95"][m]}
                                 for m in SYSBENCH_METRICS}
        if run["multi_if"]:
            cis = run["multi_if"].get("ci95") or [{} for _ in run["multi_if"]["steps"]]
            entry["multi_if"] = [{"value": s["mean"], "ci95": ci.get("mean")}
                                 for s, ci in zip(run["multi_if"]["steps"], cis)]
        out.append(entry)
    return {"runs": out, "multi_if_steps": steps}


def format_table(result: dict[str, Any]) -> str:
    steps = result["multi_if_steps"]
    header = ["model", *[f"SysBench {m}" for m in SYSBENCH_METRICS], *[f"Multi-IF turn {k}" for k in range(1, steps + 1)]]
    rows = []
    for entry in result["runs"]:
        sysbench = entry.get("sysbench")
        cells = [pct_ci(sysbench[m]["value"], sysbench[m]["ci95"]) if sysbench else "-" for m in SYSBENCH_METRICS]
        multi_if = entry.get("multi_if") or []
        cells += [pct_ci(multi_if[k]["value"], multi_if[k]["ci95"]) if k < len(multi_if) else "-"
                  for k in range(steps)]
        rows.append([entry["name"], *cells])
    return table(header, rows)


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
                       [[(s["value"], s["ci95"]) for s in e["multi_if"]] + [(0.0, None)] * (steps - len(e["multi_if"]))
                        for e in with_multi_if]))
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
