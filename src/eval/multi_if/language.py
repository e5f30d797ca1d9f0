"""Words and sentences counted the way Multi-IF counts them: by the language the response is in.

Multi-IF's checker detects the language of the response (not the prompt) with `langdetect` and then
counts:
- Chinese and Japanese: every Han, kana or Hangul character is a word, as is every emoji and every
  whitespace-separated run of anything else once punctuation is removed; a sentence is a run of text
  on one line up to `。！？．.!?`;
- Hindi: sentences end at `।`, `!` or `?`; words as in English;
- Thai: PyThaiNLP's default word and (line by line) sentence splitters;
- every other language, and a text whose language cannot be detected: words are NLTK's `\\w+` tokens and
  sentences come from NLTK's English Punkt model (as IFEval counts them).
`langdetect` is seeded, so a response gets the same language, and the same verdict, on every run.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

# Punctuation dropped before CJK words are counted (ASCII and full-width marks, CJK brackets and quotes).
_CJK_PUNCTUATION = re.compile("[" + re.escape("\\.!?．/_,{}<>:;$%^&*(+\"'—！，。？、`~@#￥…（）：；《》“”()[]»〔〕-「」")
                              + "]+")
# Han (basic block and extension A), hiragana and katakana, Hangul syllables: one word each.
_CJK_CHARACTER = re.compile("[\u4e00-\u9fff\u3400-\u4dbf\u3040-\u309f\u30a0-\u30ff\uac00-\ud7af]")
_CJK_SENTENCE = re.compile("[^!?。.！？．\n]+")
_HINDI_SENTENCE_END = re.compile("(?<=[।!?])")

CJK_CODES = frozenset({"zh", "zh-cn", "zh-tw", "ja"})


@lru_cache(maxsize=1)
def _langdetect() -> Any:
    import langdetect

    langdetect.DetectorFactory.seed = 0
    return langdetect


@lru_cache(maxsize=4096)
def detect_language(text: str) -> str | None:
    """langdetect's code for `text` (`en`, `zh-cn`, `hi`, ...), or None when it finds no language.

    Cached: the strict check and the first loose variant, and both counters, ask about the same text."""
    langdetect = _langdetect()
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None


def count_words(text: str) -> int:
    """Words of `text` under the rule of its detected language."""
    language = detect_language(text)
    if language == "th":
        from pythainlp.tokenize import word_tokenize

        return len(word_tokenize(text))
    if language in CJK_CODES:
        return count_cjk_words(text)
    from lm_eval.tasks.ifeval import instructions_util

    return instructions_util.count_words(text)


def count_sentences(text: str) -> int:
    """Sentences of `text` under the rule of its detected language."""
    language = detect_language(text)
    if language == "th":
        from pythainlp.tokenize import sent_tokenize

        return sum(len(sent_tokenize(line)) for line in text.splitlines())
    if language == "hi":
        return sum(bool(piece.strip()) for piece in _HINDI_SENTENCE_END.split(text))
    if language in CJK_CODES:
        return sum(len(_CJK_SENTENCE.findall(line.strip())) for line in text.splitlines())
    from lm_eval.tasks.ifeval import instructions_util

    return instructions_util.count_sentences(text)


def count_cjk_words(text: str) -> int:
    """Each CJK character and each emoji is a word; so is each space-separated run of the rest."""
    import emoji

    text = _CJK_PUNCTUATION.sub("", text)
    emojis = emoji.emoji_count(text)
    text = emoji.replace_emoji(text, "")
    characters = len(_CJK_CHARACTER.findall(text))
    return characters + emojis + len(_CJK_CHARACTER.sub(" ", text).split())
