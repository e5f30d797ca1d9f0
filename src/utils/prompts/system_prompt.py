"""The one way a profile becomes a system prompt.

Every stage (self-play, sampling, pair construction, evaluation) renders prompts here, so a model is
trained and evaluated on exactly the prompt layout it was sampled with. Pair construction passes its
own constraint list (kept, reversed or left-out constraints), numbered afresh.
"""

from __future__ import annotations

from functools import cache

import jinja2
from rpo.utils.prompts import environment
from rpo.utils.prompts.language import detect_lang
from rpo.utils.schema import ProfileCore


def render_system_prompt(
    profile: ProfileCore, constraints: list[str] | None = None, lang: str | None = None
) -> str:
    """Render name, description, skills and numbered constraints (default: the profile's own)."""
    return (
        _template(lang or detect_lang(profile))
        .render(
            role_name=profile.name,
            description=profile.description,
            skills=profile.skills,
            constraints=profile.constraints if constraints is None else constraints,
        )
        .strip()
    )


@cache
def _template(lang: str) -> jinja2.Template:
    """`system_prompt.<lang>.j2`, loaded once: pair construction renders it per session."""
    return environment().get_template(f"system_prompt.{lang}.j2")
