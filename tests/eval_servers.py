"""Scripted model-under-test and judge answers for the evaluation tests.

Handlers for `tests.scripted_server.ScriptedServer`:
- `replay_model(answers)`: answers each request with the recorded answer to its last user message;
- `replay_judge(verdicts)`: answers a SysBench judge prompt with the verdicts recorded for the turn
  it asks about (found by the query and answer quoted in the prompt), in varied but valid formats
  (fenced `json`, SysBench's `'''json` fence, bare JSON with integer keys); a turn without recorded
  verdicts gets an answer that is not JSON, so it ends up unjudged;
- `follow_all(request)`: a judge that finds every criterion followed (`ok` to anything else);
- `make_checkout(dir, data)`: a stand-in SysBench checkout (`datas/...json` and a `utils.py` whose
  `get_eval_pattern` is written for these tests, behind an import of a module that does not exist);
  `standin_judge(verdicts)` answers its requests in the form SysBench's script reads
  (`'''json` fence, Python dict literal, integer keys);
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TURN = re.compile(r"<user>\n(.*?)\n</user>\n<assistant>\n(.*?)\n</assistant>", re.DOTALL)
_CRITERIA = re.compile(r"<criteria>\n(.*?)</criteria>", re.DOTALL)


def judged_turn(prompt: str) -> tuple[str, str]:
    """The (query, answer) of the turn a judge prompt asks about: the last quoted turn."""
    return _TURN.findall(prompt)[-1]


def criteria_ids(prompt: str) -> list[str]:
    block = _CRITERIA.search(prompt).group(1)
    return [line.split(".", 1)[0] for line in block.splitlines() if line.strip()]


def _last_user(request: dict[str, Any]) -> str:
    return [m["content"] for m in request["messages"] if m["role"] == "user"][-1]


def replay_model(answers: dict[str, str]) -> Callable[[dict[str, Any]], str]:
    return lambda request: answers[_last_user(request)]


def replay_judge(verdicts: dict[tuple[str, str], dict[str, str]]) -> Callable[[dict[str, Any]], str]:
    styles = itertools.cycle(range(3))

    def handle(request: dict[str, Any]) -> str:
        recorded = verdicts.get(judged_turn(request["messages"][0]["content"]))
        if recorded is None:
            return "I cannot judge this turn."
        style = next(styles)
        if style == 0:
            return "```json\n" + json.dumps({"评判理由": "ok", "评判结果": recorded}, ensure_ascii=False) + "\n```"
        if style == 1:
            return "'''json\n" + json.dumps({"评判理由": "ok", "评判结果": recorded}, ensure_ascii=False) + "\n'''"
        body = ", ".join(f'{k}: "{v}"' for k, v in recorded.items())
        return f'判断如下：{{"评判理由": "ok", "评判结果": {{{body}}}}}'

    return handle


STANDIN_UTILS = """\
import module_the_toolkit_never_imports  # a heavy import of the real file's kind


def helper_it_never_runs():
    raise RuntimeError("only get_eval_pattern is taken")


def get_eval_pattern(messages, criteria):
    lines = ["STAND-IN JUDGE REQUEST"]
    lines += ["[" + m["role"] + "] " + m["content"] for m in messages]
    lines += ["RULE " + str(c["criteria_id"]) + " " + c["criteria_content"] + " / " + c["criteria_type"]
              for c in criteria.values()]
    return "\\n".join(lines)
"""


def make_checkout(directory: Path, data: Path) -> Path:
    (directory / "datas").mkdir(parents=True)
    shutil.copy(data, directory / "datas" / "system_benchmark_eval_datas.json")
    (directory / "utils.py").write_text(STANDIN_UTILS, encoding="utf-8")
    return directory


def standin_turn(prompt: str) -> tuple[str, str]:
    """The (query, answer) a stand-in request asks about: its last user and assistant lines."""
    lines = prompt.splitlines()
    query = [line[7:] for line in lines if line.startswith("[user] ")][-1]
    answer = [line[12:] for line in lines if line.startswith("[assistant] ")][-1]
    return query, answer


def standin_judge(verdicts: dict[tuple[str, str], dict[str, str]]) -> Callable[[dict[str, Any]], str]:
    def handle(request: dict[str, Any]) -> str:
        recorded = verdicts.get(standin_turn(request["messages"][0]["content"]))
        if recorded is None:
            return "no verdict for this turn"
        return "'''json\n" + repr({"评判理由": "ok", "评判结果": {int(k): v for k, v in recorded.items()}}) + "\n'''"

    return handle


def follow_all(request: dict[str, Any]) -> str:
    prompt = request["messages"][0]["content"]
    if not _CRITERIA.search(prompt):
        return "ok"  # not a judge prompt
    ids = criteria_ids(prompt)
    return json.dumps({"评判理由": "all followed", "评判结果": {i: "是" for i in ids}}, ensure_ascii=False)
