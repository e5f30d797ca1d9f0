"""One rule decides whether a text is Chinese (CJK) or English, for prompts, SysBank and the judge."""

from rpo.utils.prompts.language import detect_lang
from rpo.utils.schema import ProfileCore
from rpo.utils.text_language import text_language


def test_text_language() -> None:
    assert text_language("Every answer must be short.") == "en"
    assert text_language("所有回复必须在150字以内，并使用 JSON 格式。") == "zh"
    assert text_language("Mention 北京 once in every answer about Chinese food please.") == "en"
    assert text_language("すべての回答は短くしてください") == "zh"  # kana-only text takes the CJK scaffold
    assert text_language("") == "en"


def test_profile_language_uses_the_same_rule() -> None:
    profile = ProfileCore(name="旅行助手", description="帮助用户规划旅行", skills=["推荐景点"], constraints=["回答少于100字"])
    assert detect_lang(profile) == "zh"
    assert detect_lang(profile.model_copy(update={"name": "Trip helper", "description": "Plans trips",
                                                    "skills": ["Suggest sights"],
                                                    "constraints": ["Mention 北京 once in every answer"]})) == "en"
