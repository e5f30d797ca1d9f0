"""What the evaluation CLIs share: endpoint config from flags, the output lock, tables and JSON output.

Nothing here loads the LLM client, so the data-reading modules that use these helpers never do; the
CLIs run their calls through `rpo.utils.llm.runner`.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rpo.utils.io import InputError, output_lock
from rpo.utils.llm.config import PipelineConfig


def build_config(
    config_path: str | None,
    roles: dict[str, dict[str, Any]],
    concurrency: int | None,
    cache_dir: str | Path,
) -> PipelineConfig:
    """Roles from `--config` (if given) with the explicit flags laid over them.

    Without a config file the cache lives in the output directory, so a rerun there makes no calls.
    """
    raw: dict[str, Any] = {"roles": {}, "cache_dir": str(cache_dir)}
    if config_path:
        raw = PipelineConfig.load(config_path).model_dump()
    for name, flags in roles.items():
        role = dict(raw["roles"].get(name) or {})
        role.update({k: v for k, v in flags.items() if v is not None})
        if "model" not in role:
            raise InputError(f"no model for the {name} role: pass its --model flag or a --config that has it")
        raw["roles"][name] = role
    if concurrency is not None:
        raw["concurrency"] = concurrency
    return PipelineConfig.from_dict(raw)


def model_flags(model: str | None, base_url: str | None, api_key_env: str | None, temperature: float | None,
                top_p: float | None, max_tokens: int | None, config: str | None) -> dict[str, Any]:
    """The model under test's role flags: greedy unless `--temperature` (or a `--config`) says otherwise."""
    return {"model": model, "base_url": base_url, "api_key_env": api_key_env,
            "temperature": temperature if temperature is not None or config else 0.0,
            "top_p": top_p, "max_tokens": max_tokens}


def refuse_other_models(path: Path, recorded: set[Any], model: str) -> None:
    """A resumed run must not mix another model's (or judge's) records into its own."""
    others = sorted(str(m) for m in recorded - {model})
    if others:
        raise InputError(f"{path}: holds records of {', '.join(others)}, not {model}: "
                         "use another --output_dir")


@contextmanager
def exclusive_output(output_dir: str | Path) -> Iterator[Path]:
    """Hold the output lock of a run directory: two runs never append to the same files."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(output_dir):
        yield output_dir


def writer_running(output_dir: str | Path) -> bool:
    """Whether a run holds the output lock of `output_dir` right now (its results are still growing)."""
    output_dir = Path(output_dir)
    lock_path = output_dir.with_name(f".{output_dir.name}.lock")
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def print_json(obj: Any) -> None:
    """One JSON object on stdout and nothing else (for `--json`)."""
    print(json.dumps(obj, ensure_ascii=False))


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def pct_ci(value: float, ci: Sequence[float] | None) -> str:
    """`74.2 [71.0, 77.3]`: a fraction and its interval as percentages."""
    return pct(value) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")
