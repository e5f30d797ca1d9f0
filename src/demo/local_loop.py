"""The whole RPO loop on this machine, through the toolkit's own commands: `make e2e`.

    python -m rpo.demo.local_loop run [--output_dir=out/e2e] [--size=small|smallest]
    python -m rpo.demo.local_loop world --output_dir=out/world [--profiles=12] [--eval_dialogues=8]

`run` does what a user would do by hand, each step with the command a user would type:
1. the demo world writes system profiles, a SysBench-format evaluation file on held-out profiles,
   and the texts a tokenizer is trained on (`world`);
2. `src/utils/tiny_model.py --texts` builds a tiny random model with that tokenizer, leaning towards
   ending its replies (`--eos_scale=5`: about half of them end before the 32-token cap, so samples
   cut at the cap, which are never paired, do not take all of them);
3. `python -m rpo.demo.judge_server` serves the rule roles, `src/utils/local_service.py` serves the
   tiny model with `llamafactory-cli api`;
4. the data stages: self-play (`conf/pipeline/local_selfplay.yaml`), sampling and judging
   (`conf/pipeline/local.yaml`), the RPO pairs;
5. `llamafactory-cli train` trains DPO and RPO from the tiny model (`conf/cpu/{dpo,rpo}.yaml` with
   the model, data and a step budget filled in), both at once, one core each;
6. `src/eval/sysbench.py run` evaluates the base, DPO and RPO models (each served in turn) with the
   rule judge, and `src/eval/compare.py` lays them side by side as the paper's Table 1 does.

Everything is written under `--output_dir` (git-ignored `out/`), the pipeline configs included:
they are the shipped ones with the ports and the cache moved there. The tiny model starts from
random weights, so the figures show that the loop runs end to end, not what RPO achieves: for
that, see `make demo`, whose policy first learns the world.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from rpo.demo.constraints import MaxWords, MinWords, parse
from rpo.demo.rules import triggered
from rpo.demo.world import ResponseWriter, make_profile, make_query
from rpo.eval.compare import format_table
from rpo.utils import cli
from rpo.utils.io import InputError, atomic_write, exit_on_input_error, write_json
from rpo.utils.local_service import LocalService, ServiceError, free_port, is_healthy, start_service
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.schema import ProfileCore, SystemProfile

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MARKER = ".local_loop"  # marks an output folder this command made, so that a rerun may clear it
EVAL_SEED_OFFSET = 10_000
STRADDLED_LIMITS = (10, 14)
PORT_ATTEMPTS = 3  # a free port can be taken by another program before a server binds it  # word limits near the length of a random tiny model's replies  # held-out profiles come from another seed stream than the training ones


@dataclass(frozen=True)
class LoopSize:
    """How much of everything: profiles, turns, samples, evaluation dialogues, training steps."""

    profiles: int
    turns: int
    samples: int
    eval_dialogues: int
    eval_turns: int
    steps: int


SIZES = {
    "small": LoopSize(profiles=12, turns=3, samples=4, eval_dialogues=8, eval_turns=5, steps=20),
    "smallest": LoopSize(profiles=3, turns=2, samples=8, eval_dialogues=2, eval_turns=2, steps=2),
}


class LoopError(RuntimeError):
    """A step of the loop failed; the message names the step and where its output is."""


# -- the world's files ---------------------------------------------------------------------------


def _profile(rng: random.Random, index: int, prefix: str) -> SystemProfile:
    core = make_profile(rng, index, profile_id=f"{prefix}-{index}")
    return SystemProfile(**core.model_dump())


def _training_profile(rng: random.Random, index: int) -> SystemProfile:
    """A profile with a reversible word limit that the tiny model's replies straddle.

    A random tiny model writes random words, about 13 of them in the 32 tokens that
    `conf/pipeline/local.yaml` allows (3 to 19 seen), so the one constraint its samples of a turn
    reliably differ on is a word limit near that length: with one in every profile, every turn
    has about even odds on it for each sample, and the loop builds DPO and RPO pairs from its
    very first samples.
    """
    while True:
        profile = _profile(rng, index, "local")
        limits = [parse(text) for text in profile.constraints]
        if any(isinstance(c, MaxWords | MinWords) and STRADDLED_LIMITS[0] <= c.limit <= STRADDLED_LIMITS[1]
               for c in limits):
            return profile


def _dialogue(rng: random.Random, writer: ResponseWriter, profile: SystemProfile, turns: int) -> dict:
    """One SysBench-format dialogue: each turn's criteria are the constraints its query puts in play."""
    system_prompt = render_system_prompt(ProfileCore(**profile.model_dump()), lang="en")
    constraints = [parse(text) for text in profile.constraints]
    messages, infos = [{"role": "system", "content": system_prompt}], {}
    while len(infos) < turns:
        query = make_query(rng, profile)
        if query in infos:  # SysBench keys a turn's criteria by its query
            continue
        in_play = triggered(profile.constraints, query)
        reference = writer.write(constraints, query, [True] * len(constraints))
        messages += [{"role": "user", "content": query}, {"role": "assistant", "content": reference}]
        infos[query] = {"alignment": "align", "criteria": {
            str(number): {"criteria_id": number, "criteria_content": profile.constraints[k],
                          "criteria_type": constraints[k].family}
            for number, k in enumerate(in_play, start=1)
        }}
    return {"system_id": profile.id, "system_prompt": system_prompt, "messages": messages,
            "prompt_infos": infos, "rounds_related": False}


def write_world(output_dir: str | Path, profiles: int = 12, eval_dialogues: int = 8, eval_turns: int = 5,
                seed: int = 0) -> dict[str, str]:
    """Write the world's files; returns their paths by name.

    - `profiles.jsonl`: system profiles for self-play (`SystemProfile` records), each with a word
      limit (see `_training_profile`);
    - `sysbench_eval.json`: held-out dialogues in SysBench's release format, reference answers
      that follow every constraint;
    - `texts.jsonl`: system prompts, queries and answers of the world, one per line, for
      `tiny_model.py --texts`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    train = [_training_profile(rng, i) for i in range(profiles)]
    eval_rng = random.Random(seed + EVAL_SEED_OFFSET)
    writer = ResponseWriter(random.Random(seed + 1))
    dialogues = [_dialogue(eval_rng, writer, _profile(eval_rng, i, "held-out"), eval_turns)
                 for i in range(eval_dialogues)]
    text_rng = random.Random(seed + 2)
    texts = []
    for i in range(200):  # enough of the world's words for a tokenizer
        profile = _profile(text_rng, i, "text")
        query = make_query(text_rng, profile)
        texts += [render_system_prompt(ProfileCore(**profile.model_dump()), lang="en"), query,
                  writer.write([parse(c) for c in profile.constraints], query, [True] * len(profile.constraints))]
    paths = {"profiles": output_dir / "profiles.jsonl", "eval": output_dir / "sysbench_eval.json",
             "texts": output_dir / "texts.jsonl"}
    _write_text(paths["profiles"], "".join(p.model_dump_json() + "\n" for p in train))
    write_json(paths["eval"], dialogues)
    _write_text(paths["texts"], "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts))
    return {name: str(path) for name, path in paths.items()}


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


# -- running the steps ---------------------------------------------------------------------------


class Loop:
    """One run of the loop in `out`: steps, their logs and timings, the servers it started."""

    def __init__(self, out: Path, size: LoopSize, quiet: bool):
        self.out = out
        self.size = size
        self.quiet = quiet
        self.timings: list[tuple[str, float]] = []
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "DISABLE_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}

    def say(self, text: str) -> None:
        print(f"[e2e] {text}", flush=True)

    def command(self, step: str, argv: list[str], log_name: str | None = None) -> subprocess.CompletedProcess:
        """Run one command from the repository root; its output goes to the terminal (or, with
        `quiet` or `log_name`, to `logs/<name>.log`)."""
        started = time.monotonic()
        self.say(f"{step}: {' '.join(_shown(a) for a in argv)}")
        log_path = self.out / "logs" / f"{log_name or step.replace(' ', '_')}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        to_log = self.quiet or log_name is not None
        with open(log_path, "wb") as log:
            result = subprocess.run(argv, check=False, cwd=ROOT, env=self.env, stdout=log if to_log else None,
                                    stderr=subprocess.STDOUT if to_log else None)
        self.timings.append((step, time.monotonic() - started))
        if result.returncode != 0:
            where = f"; its output: {log_path}" if to_log else ""
            raise LoopError(f"{step} failed (exit {result.returncode}){where}")
        return result

    def python(self, step: str, script: str, *args: str, log_name: str | None = None) -> None:
        self.command(step, [sys.executable, script, *args], log_name)

    def pipeline_configs(self, judge_port: int) -> dict[str, Path]:
        """The shipped local configs with the rule server's port and a cache inside the run folder
        (the policy's port is filled in by `policy_config` for each policy server)."""
        written = {}
        for name in ("local", "local_selfplay"):
            raw = yaml.safe_load((ROOT / "conf" / "pipeline" / f"{name}.yaml").read_text(encoding="utf-8"))
            raw["cache_dir"] = str(self.out / "cache")
            raw["default"]["base_url"] = f"http://127.0.0.1:{judge_port}/v1"
            written[name] = self.out / "conf" / f"{name}.yaml"
            _write_text(written[name], yaml.safe_dump(raw, sort_keys=False))
        return written

    def serve_policy(self, model: Path, adapter: Path | None, name: str) -> LocalService:
        """`local_service.py start --backend=llamafactory`: the model (with an adapter) as `policy`,
        on a port free at that moment (another, when something takes it first)."""
        started = time.monotonic()
        what = f"{model.name} + adapter {adapter.name}" if adapter else model.name
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = free_port()
            self.say(f"serve {name}: python src/utils/local_service.py start --backend=llamafactory ({what}, "
                     f"port {port})")
            try:
                service = start_service("llamafactory", str(model), port=port, name=f"e2e-{name}", template="chatml",
                                        served_model_name="policy", adapter=str(adapter) if adapter else None,
                                        state_dir=self.out / "services", timeout_s=300)
            except ServiceError as err:
                if attempt < PORT_ATTEMPTS and "already in use" in str(err).lower():
                    continue
                raise LoopError(f"serve {name} failed: {' '.join(str(err).split())[:400]}") from None
            self.timings.append((f"serve {name}", time.monotonic() - started))
            return service
        raise AssertionError("unreachable")

    def train(self, methods: list[str], model: Path, data: Path) -> dict[str, Path]:
        """Train every method at once, one CPU thread each; returns the adapters' folders."""
        started = time.monotonic()
        procs, adapters = [], {}
        for method in methods:
            settings = yaml.safe_load((ROOT / "conf" / "cpu" / f"{method}.yaml").read_text(encoding="utf-8"))
            adapters[method] = self.out / "saves" / method
            settings.update({
                "model_name_or_path": str(model), "template": "chatml", "dataset": method, "dataset_dir": str(data),
                "output_dir": str(adapters[method]), "max_steps": self.size.steps, "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 1, "cutoff_len": 512, "preprocessing_num_workers": 1,
                "save_steps": self.size.steps, "plot_loss": False, "val_size": 0.0, "eval_strategy": "no",
            })
            settings.pop("eval_steps", None)
            settings.pop("per_device_eval_batch_size", None)
            config = self.out / "conf" / f"train_{method}.yaml"
            _write_text(config, yaml.safe_dump(settings, sort_keys=False))
            log_path = self.out / "logs" / f"train_{method}.log"
            self.say(f"train {method}: llamafactory-cli train {_shown(str(config))} (output: {_shown(str(log_path))})")
            env = {**self.env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            log = open(log_path, "wb")  # noqa: SIM115 - closed once the process ends
            procs.append((method, log, log_path, subprocess.Popen(
                [str(BIN / "llamafactory-cli"), "train", str(config)], cwd=self.out, env=env,
                stdout=log, stderr=subprocess.STDOUT)))
        failures = []
        for method, log, log_path, proc in procs:
            if proc.wait() != 0:
                failures.append(f"train {method} failed (exit {proc.returncode}); its output: {log_path}")
            log.close()
        self.timings.append((f"train {' and '.join(methods)}", time.monotonic() - started))
        if failures:
            raise LoopError("; ".join(failures))
        return adapters

    def evaluate(self, name: str, data: str, config: Path, log: bool = False) -> None:
        """`sysbench.py run` with the model under test as the config's `response` role, greedy."""
        self.python(f"evaluate {name}", "src/eval/sysbench.py", "run", f"--data={data}",
                    f"--output_dir={self.out / 'eval' / name / 'sysbench'}", f"--config={config}",
                    "--judge_model=rule-judge", "--temperature=0", "--concurrency=4",
                    log_name=f"evaluate_{name}" if log else None)

    def policy_config(self, config: Path, port: int, name: str) -> Path:
        """A copy of `config` whose `response` role is the policy server on `port`."""
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
        raw["roles"]["response"]["base_url"] = f"http://127.0.0.1:{port}/v1"
        path = self.out / "conf" / f"{config.stem}_{name}.yaml"
        _write_text(path, yaml.safe_dump(raw, sort_keys=False))
        return path


def _shown(argument: str) -> str:
    """An argument as the user would type it: paths inside the repository relative to its root."""
    return argument.replace(f"{ROOT}{os.sep}", "")


def _keep(services: dict[str, LocalService], name: str, future: Future) -> None:
    """Record a server that started, so that it is stopped even when another step failed meanwhile."""
    if not future.cancelled() and future.exception() is None:
        services[name] = future.result()


def _same_answers(paths: list[Path]) -> bool:
    """Whether every run answered every turn with the same text."""
    def answers(path: Path) -> dict:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {(str(row.get("system_id")), row.get("turn")): row.get("response") for row in rows}

    first, *others = (answers(path) for path in paths)
    return all(other == first for other in others)


def _start_judge(loop: Loop) -> tuple[subprocess.Popen, int]:
    """The rule roles' server on a port free at that moment (another, when something takes it first)."""
    started = time.monotonic()
    log_path = loop.out / "logs" / "judge_server.log"
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        loop.say(f"serve the rule roles: python -m rpo.demo.judge_server --port={port}")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "rpo.demo.judge_server", f"--port={port}"], cwd=ROOT,
                                    env=loop.env, stdout=log, stderr=subprocess.STDOUT)
        while not is_healthy(f"http://127.0.0.1:{port}/v1", timeout_s=1.0):
            if proc.poll() is not None or time.monotonic() - started > 60:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.1)
        else:
            loop.timings.append(("serve the rule roles", time.monotonic() - started))
            return proc, port
        if attempt == PORT_ATTEMPTS or "already in use" not in log_path.read_text(errors="replace").lower():
            raise LoopError(f"the rule roles' server did not start; its output: {log_path}")
    raise AssertionError("unreachable")


def _prepare(out: Path) -> None:
    """An empty output folder, or one this command made before (cleared)."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise InputError(f"--output_dir {out}: not empty and not made by this command; give another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / MARKER, "made by python -m rpo.demo.local_loop run; cleared by its next run\n")
    (out / "logs").mkdir()


def run_loop(output_dir: str | Path = "out/e2e", size: str = "small", quiet: bool = False, seed: int = 0) -> dict:
    """Run every step (see the module docstring); returns the comparison and the timings."""
    if size not in SIZES:
        raise InputError(f"--size: expected one of {', '.join(SIZES)}, got {size!r}")
    shape = SIZES[size]
    out = Path(output_dir).resolve()
    _prepare(out)
    loop = Loop(out, shape, quiet)
    total = time.monotonic()
    world = write_world(out / "world", shape.profiles, shape.eval_dialogues, shape.eval_turns, seed)
    loop.say(f"world: {shape.profiles} profiles, {shape.eval_dialogues} held-out dialogues of {shape.eval_turns} "
             f"turns -> {_shown(str(out / 'world'))}")
    model = out / "models" / "tiny"
    data = out / "data"
    loop.python("build the tiny model", "src/utils/tiny_model.py", str(model), f"--texts={world['texts']}",
                "--vocab_size=1024", "--eos_scale=5", log_name="tiny_model")
    judge, judge_port = _start_judge(loop)
    configs = loop.pipeline_configs(judge_port)
    services: dict[str, LocalService] = {}
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:  # the policy server starts while self-play runs
            base = pool.submit(loop.serve_policy, model, None, "base")
            base.add_done_callback(lambda future: _keep(services, "base", future))
            loop.python("self-play", "src/dsc/sft_data_construction.py", f"--profiles={world['profiles']}",
                        f"--config={configs['local_selfplay']}", f"--sessions_path={data / 'sessions.jsonl'}",
                        f"--output_dir={data}", f"--max_turns={shape.turns}", "--n_candidates=2")
            base.result()
        local = loop.policy_config(configs["local"], services["base"].state.port, "base")
        loop.python("sample and judge", "src/dsc/dpo_data_construction.py", f"--config={local}",
                    f"--sessions_path={data / 'sessions.jsonl'}", f"--detail_path={data / 'detail.jsonl'}",
                    f"--output_dir={data}", f"--n={shape.samples}")
        loop.evaluate("base", world["eval"], local)
        services.pop("base").stop()
        loop.python("RPO pairs", "src/dsc/rpo_data_construction.py", f"--detail_path={data / 'detail.jsonl'}",
                    f"--output_dir={data}", "--dataset_name=rpo")
        adapters = loop.train(["dpo", "rpo"], model, data)
        with ThreadPoolExecutor(max_workers=2) as pool:  # both tuned models served and evaluated at once
            starting = {m: pool.submit(loop.serve_policy, model, adapters[m], m) for m in adapters}
            for method, future in starting.items():
                future.add_done_callback(lambda done, m=method: _keep(services, m, done))
            for future in starting.values():
                future.result()
            evaluations = [pool.submit(loop.evaluate, m, world["eval"],
                                       loop.policy_config(configs["local"], services[m].state.port, m), True)
                           for m in adapters]
            for future in evaluations:
                future.result()
    finally:
        for service in services.values():
            service.stop()
        judge.terminate()
        judge.wait(timeout=30)
    runs = [str(out / "eval" / name) for name in ("base", "dpo", "rpo")]
    loop.command("compare", [sys.executable, "src/eval/compare.py", *runs, f"--figure={out / 'compare.png'}",
                             "--json"], log_name="compare")
    comparison = json.loads((out / "logs" / "compare.log").read_text(encoding="utf-8"))
    print(format_table(comparison), flush=True)
    if _same_answers([out / "eval" / name / "sysbench" / "responses.jsonl" for name in ("base", "dpo", "rpo")]):
        loop.say(f"note: base, DPO and RPO gave the same answer to every turn: {shape.steps} steps from a random "
                 "tiny model do not move its greedy replies. The loop ran end to end; what RPO does is shown by "
                 "`make demo`, whose policy first learns the world")
    report = {"size": asdict(shape), "comparison": comparison,
              "timings_s": {step: round(seconds, 1) for step, seconds in loop.timings},
              "total_s": round(time.monotonic() - total, 1)}
    write_json(out / "report.json", report)
    loop.say(f"done in {report['total_s']} s: comparison above, report {_shown(str(out / 'report.json'))}, "
             f"figure {_shown(str(out / 'compare.png'))}")
    return report


@exit_on_input_error
def run(output_dir: str = "out/e2e", size: str = "small", quiet: bool = False, seed: int = 0) -> None:
    """Run the loop; a failed step stops it with one line naming the step and its log."""
    try:
        run_loop(output_dir, size, quiet, seed)
    except LoopError as err:
        print(f"[e2e] error: {err}", file=sys.stderr)
        sys.exit(1)


@exit_on_input_error
def world(output_dir: str, profiles: int = 12, eval_dialogues: int = 8, eval_turns: int = 5, seed: int = 0) -> None:
    """Write the world's profiles, SysBench-format evaluation file and tokenizer texts."""
    for name, path in write_world(output_dir, profiles, eval_dialogues, eval_turns, seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    cli.run({"run": run, "world": world})
