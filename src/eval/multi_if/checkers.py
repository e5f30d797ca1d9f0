"""The verifiable instructions of IFEval and Multi-IF: which ids exist, which arguments each needs,
and the checker object that decides one instruction for one response.

Both benchmarks register the same 25 instruction ids. IFEval's rules are lm-eval's checkers as
shipped. Multi-IF's own checker module differs from them in four places, re-expressed here:
- `length_constraints:number_words` and `length_constraints:number_sentences` count by the
  language of the response (`rpo.eval.multi_if.language`);
- `startend:quotation` also accepts a response wrapped in `“…”` or `「…」`;
- `keywords:frequency` with a keyword that is not a valid regular expression is not followed
  (the IFEval checker raises instead).
Both rule sets count the character given for `keywords:letter_frequency` even outside a-z, where
the benchmarks' checkers draw a random letter (the only place where no checker can be repeated).
An argument the checkers would replace by a random choice (absent, null, out of range), a
regular expression they would fail on, or an argument they do not take cannot be checked; such an
instruction is refused with one line before anything is scored (`argument_problem`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

from rpo.eval.multi_if import language
from rpo.eval.nltk_data import ensure_punkt

Rules = Literal["ifeval", "multi_if"]

RELATIONS = ("less than", "at least")


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "expected a number"
    return None


def _count(value: Any) -> str | None:
    return _number(value) or (None if value >= 0 else "expected a number >= 0")


def _relation(value: Any) -> str | None:
    return None if value in RELATIONS else f"expected one of {', '.join(map(repr, RELATIONS))}"


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "expected a string"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "expected a non-empty string"


def _pattern(build: Callable[[str], str] = str) -> Callable[[Any], str | None]:
    """A string that, as the checker places it in its regular expression, compiles."""
    def check(value: Any) -> str | None:
        if problem := _string(value):
            return problem
        try:
            re.compile(build(value))
        except re.error as err:
            return f"not a valid regular expression ({err})"
        return None

    return check


def _patterns(build: Callable[[str], str] = str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, list) or not value:
            return "expected a non-empty list of strings"
        return next((f"{item!r}: {problem}" for item in value if (problem := _pattern(build)(item))), None)

    return check


def _postscript_pattern(marker: str) -> str:
    marker = marker.strip()
    return "" if marker in ("P.S.", "P.P.S") else r"\s*" + marker.lower() + r".*$"


def _letter(value: Any) -> str | None:
    if isinstance(value, str) and len(value) == 1:
        return None
    return "expected one character (the checker would pick a random letter instead)"


def _language(value: Any) -> str | None:
    from lm_eval.tasks.ifeval.instructions_util import LANGUAGE_CODES

    return None if value in LANGUAGE_CODES else f"expected one of the codes {', '.join(LANGUAGE_CODES)}"


# id -> the arguments its checker takes, each with its validity check. All are required: the
# checkers draw a random value for any that is missing (and for an empty keyword or letter, a
# negative count, an nth paragraph out of range); an empty phrase or marker they take as given.
ARGUMENTS: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "keywords:existence": {"keywords": _patterns()},
    "keywords:frequency": {"keyword": _text, "frequency": _count, "relation": _relation},
    "keywords:forbidden_words": {"forbidden_words": _patterns(lambda word: rf"\b{word}\b")},
    "keywords:letter_frequency": {"letter": _letter, "let_frequency": _count, "let_relation": _relation},
    "language:response_language": {"language": _language},
    "length_constraints:number_sentences": {"num_sentences": _count, "relation": _relation},
    "length_constraints:number_paragraphs": {"num_paragraphs": _count},
    "length_constraints:number_words": {"num_words": _count, "relation": _relation},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs": _count, "nth_paragraph": _count,
                                                    "first_word": _string},
    "detectable_content:number_placeholders": {"num_placeholders": _count},
    "detectable_content:postscript": {"postscript_marker": _pattern(_postscript_pattern)},
    "detectable_format:number_bullet_lists": {"num_bullets": _count},
    "detectable_format:constrained_response": {},
    "detectable_format:number_highlighted_sections": {"num_highlights": _count},
    "detectable_format:multiple_sections": {"section_spliter": _pattern(lambda mark: rf"\s?{mark.strip()}\s?\d+\s?"),
                                            "num_sections": _count},
    "detectable_format:json_format": {},
    "detectable_format:title": {},
    "combination:two_responses": {},
    "combination:repeat_prompt": {"prompt_to_repeat": _text},
    "startend:end_checker": {"end_phrase": _string},
    "startend:quotation": {},
    "change_case:capital_word_frequency": {"capital_frequency": _number, "capital_relation": _relation},
    "change_case:english_capital": {},
    "change_case:english_lowercase": {},
    "punctuation:no_comma": {},
}


def given_arguments(kwargs: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """The arguments the checker is built with: lm-eval drops empty values, Multi-IF passes all."""
    return {k: v for k, v in kwargs.items() if v} if rules == "ifeval" else dict(kwargs)


def argument_problem(instruction_id: str, kwargs: dict[str, Any], rules: Rules) -> str | None:
    """Why this instruction cannot be checked, or None when it can."""
    if instruction_id not in ARGUMENTS:
        return f"instruction id {instruction_id!r} is not one the checker knows"
    expected = ARGUMENTS[instruction_id]
    given = given_arguments(kwargs, rules)
    if unknown := sorted(set(given) - set(expected)):
        return f"{instruction_id}: argument {unknown[0]!r} is not one its checker takes"
    for name, check in expected.items():
        if name not in given or given[name] is None:
            return f"{instruction_id}: argument {name!r} is missing (the checker would draw it at random)"
        if problem := check(given[name]):
            return f"{instruction_id}: argument {name!r}={given[name]!r}: {problem}"
    if instruction_id == "keywords:frequency" and rules == "ifeval" and (
            problem := _pattern(str.strip)(given["keyword"])):  # IFEval's checker raises on it
        return f"{instruction_id}: argument 'keyword'={given['keyword']!r}: {problem}"
    if instruction_id == "length_constraints:nth_paragraph_first_word" and not (
            1 <= given["nth_paragraph"] <= given["num_paragraphs"]):
        return f"{instruction_id}: argument 'nth_paragraph' must lie in 1..num_paragraphs"
    return None


@lru_cache(maxsize=1)
def _checker_classes() -> dict[Rules, dict[str, type]]:
    """Per rule set, the checker class of each id (the Punkt model must be in place first)."""
    ensure_punkt()
    language._langdetect()  # seeds langdetect before any checker detects a language
    from lm_eval.tasks.ifeval import instructions, instructions_registry

    class NumberOfWords(instructions.NumberOfWords):
        def check_following(self, value: str) -> bool:
            count = language.count_words(value)
            return count < self._num_words if self._comparison_relation == RELATIONS[0] else count >= self._num_words

    class NumberOfSentences(instructions.NumberOfSentences):
        def check_following(self, value: str) -> bool:
            count = language.count_sentences(value)
            threshold = self._num_sentences_threshold
            return count < threshold if self._comparison_relation == RELATIONS[0] else count >= threshold

    class QuotationChecker(instructions.QuotationChecker):
        def check_following(self, value: str) -> bool:
            value = value.strip()
            return len(value) > 1 and (value[0], value[-1]) in {('"', '"'), ("“", "”"), ("「", "」")}

    class LetterFrequencyChecker(instructions.LetterFrequencyChecker):
        """Counts the character given, whatever it is; the benchmarks' checkers replace a character
        outside a-z (IFEval asks for `#` and `!`) by a random letter, a verdict no one can repeat."""

        def build_description(self, *, letter: str, let_frequency: Any, let_relation: str) -> str:
            description = super().build_description(letter="a", let_frequency=let_frequency,
                                                    let_relation=let_relation)
            self._letter = letter.lower()
            return description

    class KeywordFrequencyChecker(instructions.KeywordFrequencyChecker):
        def check_following(self, value: str) -> bool:
            try:
                return super().check_following(value)
            except re.error:
                return False

    ifeval = {**{iid: instructions_registry.INSTRUCTION_DICT[iid] for iid in ARGUMENTS},
              "keywords:letter_frequency": LetterFrequencyChecker}
    multi_if = {**ifeval,
                "length_constraints:number_words": NumberOfWords,
                "length_constraints:number_sentences": NumberOfSentences,
                "startend:quotation": QuotationChecker,
                "keywords:frequency": KeywordFrequencyChecker}
    return {"ifeval": ifeval, "multi_if": multi_if}


def build_checker(instruction_id: str, kwargs: dict[str, Any], rules: Rules) -> Any:
    """The checker of one instruction, ready for `check_following(response)`."""
    checker = _checker_classes()[rules][instruction_id](instruction_id)
    checker.build_description(**given_arguments(kwargs, rules))
    return checker
