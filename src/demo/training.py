"""`llamafactory-cli train` for the demo, with the trainer's progress on the terminal.

LLaMA-Factory prints hundreds of lines per run (configs, tokenised examples, INFO messages):
all of it goes to the run's log file, and the terminal gets one progress bar per training, moved
by the trainer's own step counter and showing its latest loss.
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from tqdm import tqdm

CONF = Path(__file__).resolve().parents[2] / "conf" / "demo"
BIN = Path(sys.executable).parent
# The trainer's bar has no description ("  3%|▎   | 1/32 [00:01<00:58, ...]"); preprocessing and
# weight-loading bars have one, so they stay in the log.
TRAINER_BAR = re.compile(r"\s*\d+%\|[^|]*\|\s*(\d+)/(\d+) \[")
LOSS = re.compile(r"\{'loss': '?([-+.\deE]+)")


class TrainerProgress:
    """A tqdm bar fed with the trainer's output, in chunks of any size."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar: tqdm | None = None
        self.partial = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> None:
        *segments, self.partial = re.split(r"[\r\n]", self.partial + self.decoder.decode(chunk))
        for segment in segments:
            self._read(segment)

    def _read(self, segment: str) -> None:
        if bar := TRAINER_BAR.match(segment):
            done, total = int(bar[1]), int(bar[2])
            if self.bar is None:
                interval = 0.5 if sys.stderr.isatty() else 10.0  # a captured stderr gets few redraws
                self.bar = tqdm(total=total, desc=self.desc, unit="step", mininterval=interval, dynamic_ncols=True)
            self.bar.update(done - self.bar.n)
        elif (loss := LOSS.match(segment)) and self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss[1]}", refresh=False)

    def close(self) -> None:
        self.feed(b"\n")
        if self.bar is not None:
            self.bar.close()


def train(config: str, work: Path, name: str, desc: str, threads: int | None = None, **overrides) -> Path:
    """`llamafactory-cli train` on a filled-in copy of `conf/demo/<config>.yaml`; returns the output dir.

    The whole output is written to `<work>/<name>.log`; a failed run raises with the log's tail.
    `threads` caps PyTorch's CPU threads, so that several trainings can share the cores.
    """
    settings = yaml.safe_load((CONF / f"{config}.yaml").read_text())
    output_dir = work / "models" / name
    settings.update({"output_dir": str(output_dir), **overrides})
    config_path = work / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DISABLE_VERSION_CHECK": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    log_path = work / f"{name}.log"
    print(f"{desc}: llamafactory-cli train {config_path.name} (full output: {log_path})", flush=True)
    progress = TrainerProgress(desc)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(BIN / "llamafactory-cli"), "train", str(config_path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=work)
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(1 << 16):
            log.write(chunk)
            log.flush()
            progress.feed(chunk)
        progress.close()
        returncode = proc.wait()
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"training {name} failed (exit {returncode}); log {log_path}:\n{tail}")
    return output_dir
