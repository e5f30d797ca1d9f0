"""Multi-IF's language-aware rules on hand-made texts whose counts are known, in each language."""

from __future__ import annotations

import pytest
from rpo.eval.multi_if import language
from rpo.eval.multi_if.checkers import argument_problem
from rpo.eval.multi_if.scoring import IFExample, check_response

# 3 sentences ending in 。！？, 26 Han characters (the marks are not words).
CHINESE = "今天的海面非常平静。海浪从北方滚滚而来！你听见海鸥叫了吗？"
# 2 lines, 4 sentences (。 and an ASCII period count too), 18 characters + 1 emoji.
CHINESE_LINES = "春风吹绿了江岸。明月照我还.\n花开了！鸟叫了🌸"
HINDI = "आज समुद्र बहुत शांत है। मछुआरे घाट पर जाल ठीक कर रहे हैं। क्या तुम सुनते हो?"
JAPANESE = "今日の海はとても穏やかです。カモメの声が聞こえますか？"
THAI = "วันนี้ทะเลสงบมาก\nคลื่นซัดมาจากทางเหนือ"


def _verdicts(instruction_id: str, kwargs: dict, response: str) -> tuple[bool, bool]:
    result = check_response(IFExample("k", "p", [instruction_id], [kwargs], "multi_if"), response)
    return result.strict[0], result.loose[0]


def test_chinese_counts_characters_and_full_stops():
    assert language.detect_language(CHINESE) == "zh-cn"
    assert language.count_words(CHINESE) == 26 and language.count_sentences(CHINESE) == 3
    assert language.count_words(CHINESE_LINES) == 19 and language.count_sentences(CHINESE_LINES) == 4


def test_japanese_counts_kana_and_kanji():
    assert language.detect_language(JAPANESE) == "ja"
    assert language.count_sentences(JAPANESE) == 2
    assert language.count_words(JAPANESE) == len(JAPANESE) - 2  # every character but 。 and ？


def test_hindi_sentences_end_at_danda():
    assert language.detect_language(HINDI) == "hi"
    assert language.count_sentences(HINDI) == 3
    assert language.count_words(HINDI) == 17  # NLTK's \w+ keeps vowel signs inside words


def test_thai_uses_pythainlp_line_by_line():
    from pythainlp.tokenize import sent_tokenize, word_tokenize

    assert language.detect_language(THAI) == "th"
    assert language.count_sentences(THAI) == sum(len(sent_tokenize(line)) for line in THAI.splitlines())
    assert language.count_words(THAI) == len(word_tokenize(THAI))


def test_european_languages_use_english_rules():
    russian = "Сегодня море очень спокойное. Волны катятся с севера! Ты слышишь чаек?"
    spanish = "El mar está tranquilo. ¿Oyes a las gaviotas?"
    assert language.count_words(russian) == 11 and language.count_sentences(russian) == 3
    assert language.count_words(spanish) == 8 and language.count_sentences(spanish) == 2


@pytest.mark.parametrize(("relation", "threshold", "expected"), [
    ("at least", 26, (True, True)), ("at least", 27, (False, False)),
    ("less than", 27, (True, True)), ("less than", 26, (False, False)),
])
def test_number_words_in_chinese(relation, threshold, expected):
    assert _verdicts("length_constraints:number_words", {"num_words": threshold, "relation": relation},
                     CHINESE) == expected


@pytest.mark.parametrize(("relation", "threshold", "expected"), [
    ("at least", 3, True), ("at least", 4, False), ("less than", 4, True), ("less than", 3, False),
])
def test_number_sentences_in_chinese_and_hindi(relation, threshold, expected):
    kwargs = {"num_sentences": threshold, "relation": relation}
    assert _verdicts("length_constraints:number_sentences", kwargs, CHINESE)[0] is expected
    assert _verdicts("length_constraints:number_sentences", kwargs, HINDI)[0] is expected


@pytest.mark.parametrize(("response", "followed"), [
    ('"The sea is calm."', True), ("“今天的海面非常平静。”", True), ("「今日の海は穏やかです。」", True),
    ("  “आज समुद्र शांत है।”\n", True), ("“今天的海面非常平静。", False), ("「半分」」x", False), ('"', False),
])
def test_quotation_accepts_cjk_marks(response, followed):
    assert _verdicts("startend:quotation", {}, response)[0] is followed


def test_ifeval_rules_stay_english_for_ifeval_files():
    kwargs = {"num_words": 10, "relation": "at least"}
    ifeval = check_response(IFExample("k", "p", ["length_constraints:number_words"], [kwargs], "ifeval"), CHINESE)
    assert ifeval.strict == [False]  # IFEval counts 3 \\w+ runs
    assert _verdicts("length_constraints:number_words", kwargs, CHINESE) == (True, True)
    quoted = "「今日の海は穏やかです。」"
    assert check_response(IFExample("k", "p", ["startend:quotation"], [{}], "ifeval"), quoted).strict == [False]


def test_keywords_letters_and_loose_variants():
    assert _verdicts("keywords:frequency", {"keyword": "海", "frequency": 3, "relation": "at least"},
                     CHINESE) == (True, True)
    assert _verdicts("keywords:frequency", {"keyword": "(", "frequency": 1, "relation": "less than"},
                     "a ( b") == (False, False)  # not a pattern: Multi-IF counts it not followed
    assert _verdicts("keywords:letter_frequency", {"letter": "a", "let_frequency": 3, "let_relation": "at least"},
                     "Banana") == (True, True)
    assert _verdicts("keywords:existence", {"keywords": ["Волны"]}, "волны катятся") == (True, True)
    # a character outside a-z is counted as given (the benchmarks' checkers would draw a random letter)
    hashtags = {"letter": "#", "let_frequency": 3, "let_relation": "at least"}
    assert _verdicts("keywords:letter_frequency", hashtags, "#sea #waves #gulls") == (True, True)
    assert _verdicts("keywords:letter_frequency", hashtags, "#sea #waves, no more tags") == (False, False)
    cyrillic = {"letter": "Ж", "let_frequency": 2, "let_relation": "at least"}
    assert check_response(IFExample("k", "p", ["keywords:letter_frequency"], [cyrillic], "ifeval"),
                          "жук и ёж").strict == [True]
    # the first line breaks lowercase; loose drops it
    assert _verdicts("change_case:english_lowercase", {}, "Sure:\nthe sea is calm and the waves are small.") == \
        (False, True)
    # Multi-IF checks a whitespace-only answer (IFEval calls it empty); it has no comma
    assert _verdicts("punctuation:no_comma", {}, "  ") == (True, False)


@pytest.mark.parametrize(("instruction_id", "kwargs", "problem"), [
    ("length_constraints:number_characters", {}, "instruction id 'length_constraints:number_characters' is not"),
    ("length_constraints:number_words", {"num_words": 5}, "argument 'relation' is missing"),
    ("length_constraints:number_words", {"num_words": "5", "relation": "at least"}, "expected a number"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at most"}, "expected one of"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least", "lang": "zh"},
     "argument 'lang' is not one its checker takes"),
    ("keywords:letter_frequency", {"letter": "ab", "let_frequency": 2, "let_relation": "at least"},
     "expected one character"),
    ("language:response_language", {"language": "zh"}, "expected one of the codes"),
    ("keywords:existence", {"keywords": ["a("]}, "not a valid regular expression"),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"},
     "must lie in 1..num_paragraphs"),
])
def test_arguments_that_cannot_be_checked_are_named(instruction_id, kwargs, problem):
    assert problem in argument_problem(instruction_id, kwargs, "multi_if")


def test_every_registered_id_accepts_its_arguments():
    assert argument_problem("startend:quotation", {}, "multi_if") is None
    assert argument_problem("detectable_content:postscript", {"postscript_marker": "P.S."}, "multi_if") is None
    # IFEval's files leave unused arguments null; lm-eval drops them
    assert argument_problem("punctuation:no_comma", {"num_words": None}, "ifeval") is None
    assert "num_words" in argument_problem("punctuation:no_comma", {"num_words": None}, "multi_if")
    frequency = {"keyword": "(", "frequency": 1, "relation": "less than"}
    assert argument_problem("keywords:frequency", frequency, "multi_if") is None
    assert "not a valid regular expression" in argument_problem("keywords:frequency", frequency, "ifeval")
    assert "not a valid regular expression" in argument_problem(
        "detectable_format:multiple_sections", {"section_spliter": "SECTION(", "num_sections": 2}, "multi_if")
