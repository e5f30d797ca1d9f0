"""The judge protocols without a server: SysBench's reading of an answer, its schedule, a checkout's builder."""

from __future__ import annotations

import pytest
from rpo.eval.sysbench.checkout import load_pattern_builder
from rpo.eval.sysbench.data import Criterion
from rpo.eval.sysbench.judge import TurnContext, parse_own, parse_sysbench, schedule, sysbench_protocol
from rpo.utils.io import InputError

from tests.eval_servers import make_checkout

FENCE = "'''"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (f"{FENCE}json\n{{'评判理由': 'r', '评判结果': {{1: '是', 2: '不适用'}}}}\n{FENCE}", {"1": "是", "2": "不适用"}),
        ("  ```json\n{\"评判理由\": \"r\", \"评判结果\": {\"2\": \"否\", \"1\": \"是\"}}\n```\n",
         {"1": "是", "2": "否"}),
        ('{"评判理由": "r", "评判结果": {"1": "是", "2": "是"}}', None),  # no fence: SysBench's slice breaks it
        (f"{FENCE}json\n{{'评判结果': {{1: '是', 2: '是'}}}}\n{FENCE}", None),  # no 评判理由
        (f"{FENCE}json\n{{'评判理由': 'r', '评判结果': {{1: '是'}}}}\n{FENCE}", None),  # a criterion missing
        (f"{FENCE}json\n{{'评判理由': 'r', '评判结果': {{1: '是', 2: '是', 3: '否'}}}}\n{FENCE}", None),
        (f"{FENCE}json\n{{'评判理由': 'r', '评判结果': {{1: '是', 2: 'yes'}}}}\n{FENCE}", None),
        (f"{FENCE}json\n{{'评判理由': 'r', '评判结果': {{'one': '是', 2: '是'}}}}\n{FENCE}", None),
        (f"{FENCE}json\n{{'评判理由': true, '评判结果': {{1: '是', 2: '是'}}}}\n{FENCE}", None),  # not a literal
    ],
)
def test_parse_sysbench(answer, expected):
    parsed = parse_sysbench(answer, ["1", "2"])
    assert (parsed[0] if parsed else None) == expected


def test_parse_own_is_tolerant_but_wants_every_criterion_in_sysbench_words():
    assert parse_own('判断：{"评判理由": "r", "评判结果": {1: "是", "2": " 否 "}}', ["1", "2"]) == (
        {"1": "是", "2": "否"}, "r")
    assert parse_own('{"评判结果": {"1": "是"}}', ["1", "2"]) is None
    assert parse_own('{"评判结果": {"1": "是", "2": "部分遵循"}}', ["1", "2"]) is None
    assert parse_own('{"评判结果": {"1": "是", "2": "无法判断"}}', ["1", "2"])[0] == {"1": "是", "2": "无法判断"}


def test_schedule_is_sysbench_s():
    assert schedule("own") == (0.0,) * 5 + (0.5,) * 5
    assert schedule("reference") == (0.0,) * 10


def test_checkout_builder_gets_the_conversation_and_the_raw_criteria(tmp_path):
    (tmp_path / "data.json").write_text("[]", encoding="utf-8")
    checkout = make_checkout(tmp_path / "SysBench", tmp_path / "data.json")
    protocol = sysbench_protocol(load_pattern_builder(checkout), "own")
    context = TurnContext(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
         {"role": "user", "content": "Q2"}],
        "A2", {"1": Criterion(criteria_id=1, criteria_content="C", criteria_type="T")})
    assert protocol.build(context).splitlines() == [
        "STAND-IN JUDGE REQUEST", "[system] S", "[user] Q1", "[assistant] A1", "[user] Q2", "[assistant] A2",
        "RULE 1 C / T"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (None, "no utils.py (is it a checkout of SysBench?)"),
        ("def other():\n    pass\n", "utils.py: no function get_eval_pattern"),
        ("def get_eval_pattern(:\n", "utils.py: cannot be read as Python (SyntaxError)"),
        ("import pandas\n\ndef get_eval_pattern(messages, criteria):\n    return pandas.x\n",
         "utils.py: get_eval_pattern failed (NameError: name 'pandas' is not defined)"),
        ("def get_eval_pattern(messages, criteria):\n    return 3\n", "get_eval_pattern returned int, not text"),
    ],
)
def test_checkout_problems_are_one_line(tmp_path, source, message):
    if source is not None:
        (tmp_path / "utils.py").write_text(source, encoding="utf-8")
    with pytest.raises(InputError, match=r".*") as caught:
        load_pattern_builder(tmp_path)([{"role": "system", "content": "S"}], {})
    assert message in str(caught.value) and "\n" not in str(caught.value)
