"""What every evaluation does to a model's answers before they are judged or checked.

Reasoning models put their thinking in `<think>…</think>` before the answer; a judge or a checker
that sees the thinking scores words the user would never read, so the block is removed first.
A run whose answers are mostly empty, cut off or all alike measures the serving setup rather than
the model, so the summary says so.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
# A chat template that opens the block itself leaves the answer starting inside it: `…</think>answer`.
_BARE_LEADING = re.compile(r"^(?:(?!<think>).)*?</think>", re.DOTALL)
# An answer cut off while thinking is thinking only: `<think>…` with no end.
_UNCLOSED = re.compile(r"^\s*<think>(?:(?!</think>).)*$", re.DOTALL)


def strip_think(text: str) -> tuple[str, bool]:
    """The answer without its thinking, and whether any was removed.

    Removes every `<think>…</think>` block, a leading `…</think>` whose opening tag the chat
    template supplied, and an opening `<think>` never closed (an answer cut off while thinking).
    """
    stripped = _BARE_LEADING.sub("", text, count=1)
    stripped = _THINK_BLOCK.sub("", stripped)
    stripped = _UNCLOSED.sub("", stripped)
    if stripped == text:
        return text, False
    return stripped.strip(), True


def answer_warnings(answers: Sequence[str], truncated: Sequence[bool]) -> list[str]:
    """One line per sign that most answers say nothing about the model (empty, cut off, all alike)."""
    total = len(answers)
    if not total:
        return []
    warnings = []
    empty = sum(not answer.strip() for answer in answers)
    if 2 * empty > total:
        warnings.append(f"{empty} of {total} answers are empty: check the served model and its chat template")
    cut = sum(bool(flag) for flag in truncated)
    if 2 * cut > total:
        warnings.append(f"{cut} of {total} answers were cut off at the token limit (finish_reason length): "
                        "raise --max_tokens")
    if total > 1:
        text, count = Counter(answer.strip() for answer in answers if answer.strip()).most_common(1)[0] \
            if total > empty else ("", 0)
        if count > 1 and 2 * count > total:
            shown = text if len(text) <= 60 else text[:57] + "..."
            warnings.append(f"{count} of {total} answers are the same text ({shown!r}): the model ignores "
                            "its input")
    return warnings
