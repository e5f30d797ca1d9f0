"""Which regular expressions get the short deadline, and how a stopped search is worded."""

from __future__ import annotations

import pytest

from sysbank.bank import ORDINARY_TIMEOUT_FACTOR, Bank, SearchError, backtracking_shape
from sysbank.loader import SAMPLE_PATH


@pytest.mark.parametrize(
    ("pattern", "shape"),
    [
        ("not exceed (80|120) words", None),
        (r"\d+字", None),
        ("refuse|拒绝", None),
        (r"[\s\S]*budget", None),
        ("(ab)*c", None),
        (r"(\w|\w)*#", "alternatives inside a repeat"),
        ("(a+)+b", "a repeat inside a repeat"),
        (r"(\w+\s)*x", "a repeat inside a repeat"),
        (r"(a)\1", "a backreference"),
        (r"\p{Han}+", "syntax only the regex engine reads"),
    ],
)
def test_backtracking_shape(pattern: str, shape: str | None) -> None:
    assert backtracking_shape(pattern) == shape


def test_an_ordinary_pattern_gets_the_longer_deadline_and_a_truthful_message() -> None:
    bank = Bank.load(SAMPLE_PATH)
    megabytes = len(bank._text) / 1e6
    with pytest.raises(SearchError) as err:  # a deadline no search can meet
        bank.search("not exceed (80|120) words", regex=True, timeout_s=1e-9)
    limit = 1e-9 * ORDINARY_TIMEOUT_FACTOR
    assert str(err.value) == (
        f"search for 'not exceed (80|120) words' stopped after {limit:g} s (processor time, shared with the "
        f"searches running beside it) over {megabytes:.1f} MB of prompt text; make it more specific or filter first"
    )
    assert "backtrack" not in str(err.value)
    assert bank.search("not exceed (80|120) words", regex=True) == bank.search(
        "not exceed (80|120) words", regex=True, timeout_s=0.05)  # an ordinary scan of the sample is quick
