"""SysBench evaluation: answer its dialogues, judge every turn as SysBench does, score, compare judges.

    python src/eval/sysbench.py run --data=FILE --output_dir=DIR --model=NAME --base_url=URL
        [--api_key_env=VAR] [--judge_model=NAME] [--judge_base_url=URL] [--judge_api_key_env=VAR]
        [--history=own|reference] [--concurrency=N] [--config=conf/pipeline/X.yaml] [--limit=N]
    python src/eval/sysbench.py score --eval_file=FILE_OR_DIR [--json]
    python src/eval/sysbench.py agree --eval_file=FILE_OR_DIR --judge_model=NAME [--judge_base_url=URL] [--json]

`score` reads a run directory of this toolkit or SysBench's own evaluation output (a JSON array of
dialogues with `eval_results`), so runs made with SysBench's scripts score the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rpo.eval.common import build_config, exclusive_output, print_json, run_calls
from rpo.eval.sysbench_agree import agree_report, format_agreement, rejudge
from rpo.eval.sysbench_data import load_dialogues, load_judged
from rpo.eval.sysbench_metrics import format_report, sysbench_metrics
from rpo.eval.sysbench_run import HISTORIES, RunSettings, run_sysbench
from rpo.utils import cli
from rpo.utils.io import InputError, exit_on_input_error, write_json


@exit_on_input_error
def score(eval_file: str, json: bool = False, bootstrap_rounds: int = 1000) -> dict | None:
    """CSR / ISR / SSR (with 95% bootstrap intervals) and breakdowns of a finished evaluation."""
    metrics = sysbench_metrics(load_judged(eval_file), rounds=bootstrap_rounds)
    if json:
        print_json(metrics)
    else:
        print(format_report(metrics))
    return None


@exit_on_input_error
def run(
    data: str,
    output_dir: str,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    judge_model: str | None = "gpt-4o",
    judge_base_url: str | None = None,
    judge_api_key_env: str | None = None,
    history: str = "own",
    concurrency: int | None = 16,
    config: str | None = None,
    limit: int | None = None,
    lang: str = "auto",
    temperature: float | None = None,
    max_tokens: int | None = None,
    judge_attempts: int = 3,
) -> None:
    """Answer every turn with the model under test, judge each turn, write and print the metrics."""
    if history not in HISTORIES:
        raise InputError(f"--history: expected one of {', '.join(HISTORIES)}, got {history!r}")
    if lang not in ("auto", "zh", "en"):
        raise InputError(f"--lang: expected auto, zh or en, got {lang!r}")
    dialogues = load_dialogues(data)[:limit] if limit else load_dialogues(data)
    with exclusive_output(output_dir) as out:
        pipeline = build_config(
            config,
            {
                "response": {"model": model, "base_url": base_url, "api_key_env": api_key_env,
                             "temperature": temperature if temperature is not None or config else 0.0,
                             "max_tokens": max_tokens},
                "judge": {"model": judge_model, "base_url": judge_base_url, "api_key_env": judge_api_key_env,
                          **({} if config else {"temperature": 0.0, "max_tokens": 2048})},
            },
            concurrency,
            out / "cache",
        )
        settings = RunSettings(history=history, lang=lang, judge_attempts=judge_attempts)

        judged = run_calls(
            pipeline,
            lambda client: run_sysbench(client, dialogues, out, settings, pipeline.concurrency),
            "what was answered is kept: rerun the same command to resume",
        )
        metrics = sysbench_metrics(judged)
        write_json(out / "metrics.json", metrics)
    print(format_report(metrics))
    if metrics["unjudged"]:
        print(f"warning: {metrics['unjudged']} turns stayed unjudged (left out of the metrics)", file=sys.stderr)


@exit_on_input_error
def agree(
    eval_file: str,
    judge_model: str,
    judge_base_url: str | None = None,
    judge_api_key_env: str | None = None,
    config: str | None = None,
    concurrency: int | None = 16,
    output_dir: str | None = None,
    lang: str = "auto",
    judge_attempts: int = 3,
    json: bool = False,
) -> None:
    """Re-judge a finished run's answers with another judge; agreement and how the metrics move."""
    recorded = load_judged(eval_file)
    source = Path(eval_file)
    base = source / "agree" if source.is_dir() else source.with_name(source.stem + ".agree")
    out = Path(output_dir) if output_dir else base / judge_model.replace("/", "_")
    with exclusive_output(out):
        pipeline = build_config(
            config,
            {"judge": {"model": judge_model, "base_url": judge_base_url, "api_key_env": judge_api_key_env,
                       **({} if config else {"temperature": 0.0, "max_tokens": 2048})}},
            concurrency,
            out / "cache",
        )

        new = run_calls(
            pipeline,
            lambda client: rejudge(client, eval_file, recorded, out, lang, judge_attempts, pipeline.concurrency,
                                   quiet=json),
            "rerun the same command to resume",
        )
        report = agree_report(recorded, new)
        write_json(out / "agreement.json", report)
    if json:
        print_json(report)
    else:
        print(format_agreement(report))


if __name__ == "__main__":
    cli.run({"run": run, "score": score, "agree": agree})
