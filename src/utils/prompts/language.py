"""Which language a prompt is written in: given, configured, or detected from the profile."""

from __future__ import annotations

from rpo.utils.llm.config import PipelineConfig
from rpo.utils.schema import ProfileCore
from rpo.utils.text_language import text_language


def detect_lang(profile: ProfileCore) -> str:
    """The language of the profile's text as a reader sees it (`rpo.utils.text_language`)."""
    return text_language(" ".join([profile.name, profile.description, *profile.skills, *profile.constraints]))


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
