"""Which language a prompt is written in: given, configured, or detected from the profile."""

from __future__ import annotations

from pydantic import BaseModel
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


def pick_lang(lang: str | None, config: BaseModel) -> str | None:
    """`--lang`, else the pipeline config's `language:` when the file sets it, else None (each
    profile's own language: a config that names no language never overrides a profile's)."""
    if lang:
        return lang
    return getattr(config, "language", None) if "language" in config.model_fields_set else None
