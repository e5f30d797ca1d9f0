"""SysBench evaluation: answer its dialogues, judge every turn as SysBench does, score, compare judges.

    python src/eval/sysbench.py run (--sysbench_dir=CHECKOUT | --data=FILE) --output_dir=DIR --model=NAME
        --base_url=URL [--api_key_env=VAR] [--judge_model=NAME] [--judge_base_url=URL]
        [--judge_api_key_env=VAR] [--history=own|reference] [--concurrency=N] [--config=conf/pipeline/X.yaml]
        [--limit=N] [--temperature=T] [--top_p=P] [--max_tokens=N] [--keep_think]
    python src/eval/sysbench.py score --eval_file=FILE_OR_DIR [--json]
    python src/eval/sysbench.py agree --eval_file=FILE_OR_DIR --judge_model=NAME [--judge_base_url=URL] [--json]

`score` reads a run directory of this toolkit or SysBench's own evaluation output (a JSON array of
dialogues with `eval_results`), so runs made with SysBench's scripts score the same way. A result
computed from less than every turn is reported as incomplete, without figures, and exits 1.
"""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path
from typing import Any

from rpo.eval.answers import answer_warnings
from rpo.eval.common import build_config, exclusive_output, model_flags, print_json, writer_running
from rpo.eval.run_record import RUN_FILE, check_or_record, file_sha256
from rpo.eval.sysbench.agree import agree_report, format_agreement, rejudge
from rpo.eval.sysbench.checkout import checkout_data, load_pattern_builder
from rpo.eval.sysbench.data import load_dialogues, load_judged
from rpo.eval.sysbench.judge import SYSBENCH_JUDGE_MODEL, own_protocol, sysbench_protocol
from rpo.eval.sysbench.metrics import format_report, sysbench_metrics
from rpo.eval.sysbench.run import HISTORIES, RunSettings, run_sysbench
from rpo.utils import cli
from rpo.utils.io import InputError, exit_on_input_error, write_json

JUDGE_MAX_TOKENS = 4096  # SysBench sets no limit; this one is far above any judge answer
PARTIAL_FIGURES = ("ci95", "by_type", "by_turn", "streak", "by_alignment", "by_dialogue")
OWN_JUDGE_NOTE = ("judge prompt: this project's own, not SysBench's: the figures are not comparable with "
                  "SysBench's published ones (run with --sysbench_dir for its judge)")


def judge_note(judge: dict[str, Any] | None) -> str:
    if not judge:
        return "judge: not recorded"
    if judge.get("prompt") == "own":
        return f"judge {judge.get('model')}: {OWN_JUDGE_NOTE}"
    return f"judge {judge.get('model') or 'as recorded'}: SysBench's own judge request"


def _settings_of(eval_file: Path) -> dict[str, Any] | None:
    record = (eval_file if eval_file.is_dir() else eval_file.parent) / RUN_FILE
    if eval_file.suffix == ".json" or not record.is_file():
        return None
    try:
        settings = jsonlib.loads(record.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, jsonlib.JSONDecodeError, RecursionError):
        raise InputError(f"{record}: not a run record") from None
    return settings if isinstance(settings, dict) else None


@exit_on_input_error
def score(eval_file: str, json: bool = False, bootstrap_rounds: int = 1000) -> None:
    """CSR / ISR / SSR (with 95% bootstrap intervals) and breakdowns of a finished evaluation."""
    path = Path(eval_file)
    dialogues = load_judged(path)
    settings = _settings_of(path)
    run_dir = path if path.is_dir() else path.parent
    missing = 0
    if settings is not None and isinstance(settings.get("turns"), int):
        missing = max(settings["turns"] - sum(map(len, dialogues)), 0)
    metrics = sysbench_metrics(dialogues, rounds=bootstrap_rounds, missing=missing)
    if settings is None and path.suffix == ".json":
        metrics["judge"] = {"model": None, "prompt": "sysbench"}
    elif settings is not None:
        metrics.update({k: settings[k] for k in ("judge", "history", "decoding", "data_sha256") if k in settings})
    notes = [judge_note(metrics.get("judge"))]
    if settings is not None and writer_running(run_dir):
        metrics = {k: v for k, v in metrics.items() if k not in PARTIAL_FIGURES}
        metrics.setdefault("incomplete", "a run is still writing this folder")
        notes.append(f"a run is still writing {run_dir}: these are partial results")
        metrics.update(complete=False, CSR=None, ISR=None, SSR=None)
    if json:
        print_json(metrics)
    else:
        print(format_report(metrics, notes))
    if not metrics["complete"]:
        print(f"error: {eval_file}: {metrics['incomplete']}: no figure is a result", file=sys.stderr)
        sys.exit(1)


@exit_on_input_error
def run(
    output_dir: str,
    data: str | None = None,
    sysbench_dir: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    judge_api_key_env: str | None = None,
    history: str = "own",
    concurrency: int | None = 16,
    config: str | None = None,
    limit: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    keep_think: bool = False,
) -> None:
    """Answer every turn with the model under test, judge each turn, write and print the metrics."""
    if history not in HISTORIES:
        raise InputError(f"--history: expected one of {', '.join(HISTORIES)}, got {history!r}")
    if data is None and sysbench_dir is None:
        raise InputError("give --sysbench_dir (a checkout of SysBench) or --data (its data file)")
    data_path = Path(data) if data is not None else checkout_data(sysbench_dir)
    protocol = (sysbench_protocol(load_pattern_builder(sysbench_dir), history) if sysbench_dir
                else own_protocol(history))
    dialogues = load_dialogues(data_path)[:limit] if limit else load_dialogues(data_path)
    with exclusive_output(output_dir) as out:
        judge_flags: dict[str, Any] = {"model": judge_model, "base_url": judge_base_url,
                                       "api_key_env": judge_api_key_env}
        if not config:
            judge_flags.update(model=judge_model or SYSBENCH_JUDGE_MODEL, max_tokens=JUDGE_MAX_TOKENS)
        pipeline = build_config(
            config,
            {
                "response": model_flags(model, base_url, api_key_env, temperature, top_p, max_tokens, config),
                "judge": judge_flags,
            },
            concurrency,
            out / "cache",
        )
        response_role = pipeline.role("response")
        judge = {"model": pipeline.role("judge").model, "prompt": protocol.prompt}
        decoding = {"temperature": response_role.temperature, "top_p": response_role.top_p,
                    "max_tokens": response_role.max_tokens}
        settings = {
            "benchmark": "sysbench", "data_sha256": file_sha256(data_path), "limit": limit,
            "turns": sum(len(d.queries) for d in dialogues), "model": response_role.model,
            "decoding": decoding, "history": history, "keep_think": keep_think, "judge": judge,
        }
        check_or_record(out, settings)
        from rpo.utils.llm.runner import run_calls  # the client loads only for commands that call

        outcome = run_calls(
            pipeline,
            lambda client: run_sysbench(client, dialogues, out, RunSettings(history, keep_think), protocol,
                                        pipeline.concurrency),
            resume_hint="what was answered is kept: rerun the same command to resume",
        )
        metrics = sysbench_metrics(outcome.dialogues, missing=outcome.missing)
        warnings = answer_warnings([a.response for a in outcome.answers], [a.truncated for a in outcome.answers])
        metrics.update(judge=judge, history=history, decoding=decoding, data_sha256=settings["data_sha256"],
                       think_stripped=outcome.think_stripped, failures=len(outcome.failures), warnings=warnings)
        if protocol.prompt == "own":
            metrics["judge"] = {**judge, "note": OWN_JUDGE_NOTE}
        write_json(out / "metrics.json", metrics)
    notes = [judge_note(judge), f"answers with a <think> block removed: {outcome.think_stripped}"
             + (" (--keep_think: kept)" if keep_think else "")]
    print(format_report(metrics, notes))
    for line in outcome.failures:
        print(f"failed: {line}", file=sys.stderr)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if outcome.failures or not metrics["complete"]:
        print(f"error: {metrics['unjudged']} of {metrics['turns']} turns unjudged: the figures are incomplete; "
              "rerun the same command to retry exactly those", file=sys.stderr)
        sys.exit(1)


@exit_on_input_error
def agree(
    eval_file: str,
    judge_model: str,
    judge_base_url: str | None = None,
    judge_api_key_env: str | None = None,
    config: str | None = None,
    concurrency: int | None = 16,
    output_dir: str | None = None,
    json: bool = False,
) -> None:
    """Re-judge a finished run's answers with another judge (this project's prompt); agreement and how
    the metrics move."""
    recorded = load_judged(eval_file)
    source = Path(eval_file)
    base = source / "agree" if source.is_dir() else source.with_name(source.stem + ".agree")
    out = Path(output_dir) if output_dir else base / judge_model.replace("/", "_")
    with exclusive_output(out):
        pipeline = build_config(
            config,
            {"judge": {"model": judge_model, "base_url": judge_base_url, "api_key_env": judge_api_key_env,
                       **({} if config else {"max_tokens": JUDGE_MAX_TOKENS})}},
            concurrency,
            out / "cache",
        )
        from rpo.utils.llm.runner import run_calls

        new = run_calls(
            pipeline,
            lambda client: rejudge(client, eval_file, recorded, out, own_protocol("own"), pipeline.concurrency,
                                   quiet=json),
            resume_hint="rerun the same command to resume",
        )
        report = agree_report(recorded, new)
        write_json(out / "agreement.json", report)
    if json:
        print_json(report)
    else:
        print(format_agreement(report))


if __name__ == "__main__":
    cli.run({"run": run, "score": score, "agree": agree})
