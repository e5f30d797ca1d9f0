"""Which language a prompt is written in: given, configured, or detected from the profile."""

from __future__ import annotations

import re

from rpo.utils.llm.config import PipelineConfig
from rpo.utils.schema import ProfileCore

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff01-\uff60]")


def detect_lang(profile: ProfileCore) -> str:
    """ "zh" when any CJK character appears in the profile's text, else "en"."""
    texts = [profile.name, profile.description, *profile.skills, *profile.constraints]
    return "zh" if any(_CJK.search(text) for text in texts) else "en"


def resolve_lang(lang: str | None, profile: ProfileCore) -> str:
    """The prompt language: the one given, else detected from the profile's text."""
    if lang:
        return lang
    return detect_lang(profile)


def pick_lang(lang: str | None, config: PipelineConfig) -> str | None:
    """`--lang`, else the config's `language:` when it is set, else None (detected per profile)."""
    if lang:
        return lang
    return config.language if "language" in config.model_fields_set else None
