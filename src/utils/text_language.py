"""Is a text Chinese or English: the one rule every part of the toolkit uses.

Prompts are written in two languages, so every decision about a text's language (a profile's
scaffold, SysBank's language column, the SysBench judge's prompt) asks this module. Kana count as
CJK: a Japanese text gets the CJK scaffold rather than the English one.
"""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def text_language(text: str) -> str:
    """'zh' when CJK characters make up a real share of the letters, else 'en'.

    One CJK character carries about as much as a short English word, so a share of 30% is already
    a Chinese text with some English names or code in it; a lone Chinese name in an English
    sentence leaves it English.
    """
    cjk = len(CJK.findall(text))
    if not cjk:
        return "en"
    latin = len(_LATIN.findall(text))
    return "zh" if cjk >= 0.3 * (cjk + latin / 4) else "en"
