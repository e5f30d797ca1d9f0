"""Jinja2 prompt templates (files under `src/utils/prompts/`, never Python string constants)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE_DIR = Path(__file__).parent


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(name: str, **variables: Any) -> str:
    """Render `prompts/<name>` (e.g. `judge.en.j2`) with the given variables."""
    return environment().get_template(name).render(**variables).strip()


def render_lang(stem: str, lang: str, **variables: Any) -> str:
    """Render `<stem>.<lang>.j2`, e.g. `render_lang("judge", "zh", ...)`."""
    return render(f"{stem}.{lang}.j2", **variables)
