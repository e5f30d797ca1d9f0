"""System and user profile generation from seed corpora (the work behind
`src/utils/profile_generate.py`): seeds in, validated `SystemProfile` / `UserProfile` records out."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import json_repair
from rpo.utils.io import InputError, JsonlAppender, completed_keys, iter_lines
from rpo.utils.llm.client import LLMClient, LLMError
from rpo.utils.llm.concurrency import bounded_map
from rpo.utils.prompts import render_lang
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.roles.parsing import ParseFailure, ask_structured
from rpo.utils.schema import SystemProfile, UserProfile
from rpo.utils.stages.outcome import note_failure
from rpo.utils.stats import Tally, counter

_KEYS = {
    "name": ("name", "Name", "名称", "名字"),
    "description": ("description", "Description", "描述"),
    "skills": ("skills", "Skills", "Skill", "skill", "Skils", "技能"),
    "constraints": ("constraints", "Constraints", "约束", "限制"),
}
_CORPUS_TEXT_KEYS = ("inspired_corpus", "text", "corpus", "persona", "description")


@dataclass
class Seed:
    """One line of the inspiring corpus."""

    id: str
    text: str
    source: str


@dataclass
class GenerateStats(Tally):
    """Profiles written, skipped as done, and failed (not written, so a rerun tries them again)."""

    written: int = counter("written")
    skipped: int = counter("skipped (already done)")
    failed: int = counter("failed, not recorded (a rerun retries them)")
    retries: int = counter("format retries")
    first_failure: str = ""


def _seed_from_record(obj: dict[str, Any], path: Path, lineno: int) -> Seed:
    structured = (
        obj.get("structure_system_prompt") if isinstance(obj.get("structure_system_prompt"), dict) else {}
    )
    record_id = obj.get("id") or obj.get("gptId")
    if not isinstance(record_id, str | int) or record_id == "":
        raise InputError(f"{path}: line {lineno}: field id: missing (expected id or gptId)")
    parts = [obj.get(k) for k in _CORPUS_TEXT_KEYS]
    if not any(isinstance(p, str) and p.strip() for p in parts):
        parts = [
            obj.get("name"),
            *(structured.get(k) for k in ("Name", "名称", "Description", "描述")),
            obj.get("system_prompt"),
        ]
    text = next((p for p in parts if isinstance(p, str) and p.strip()), None)
    if isinstance(obj.get("name"), str) and text and obj["name"] not in text:
        text = f"{obj['name']}: {text}"
    if text is None:
        raise InputError(
            f"{path}: line {lineno} (record {record_id}): field text: no seed text "
            f"(expected one of {', '.join(_CORPUS_TEXT_KEYS)}, name, system_prompt)"
        )
    return Seed(str(record_id), text.strip(), str(obj.get("source") or path.stem))


def read_seeds(path: str | Path) -> Iterator[Seed]:
    """Seeds from a JSONL corpus (when the first line is a JSON object) or a plain text file.

    Read through `iter_lines`, so a byte-order mark, a bad byte or corrupt gzip data is handled
    the same way as in every other reader; a file with no seed is refused.
    """
    path = Path(path)
    jsonl: bool | None = None
    for lineno, line in iter_lines(path):
        if jsonl is None:
            jsonl = line.lstrip().startswith("{")
        if not jsonl:
            yield Seed(f"{path.stem}_{lineno}", line.strip(), path.stem)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{path}: line {lineno}: invalid JSON ({err.msg} at column {err.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        yield _seed_from_record(obj, path, lineno)
    if jsonl is None:
        raise InputError(f"{path}: no records (the file is empty or holds only blank lines)")


def _pick(obj: dict[str, Any], field: str) -> Any:
    for key in _KEYS[field]:
        if key in obj:
            return obj[key]
    return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.splitlines()
    if not isinstance(value, list):
        return []
    return [str(v).strip() for v in value if isinstance(v, str | int | float) and str(v).strip()]


def parse_system_profile(text: str, min_constraints: int, max_constraints: int) -> dict[str, Any]:
    """name/description/skills/constraints from a model answer (English or Chinese keys), or `ParseFailure`."""
    data = json_repair.loads(text) if text and text.strip() else None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        raise ParseFailure("no_json")
    name = _pick(data, "name")
    constraints = _strings(_pick(data, "constraints"))
    if not isinstance(name, str) or not name.strip():
        raise ParseFailure("bad_item")
    if not min_constraints <= len(constraints) <= max_constraints:
        raise ParseFailure("bad_item")
    description = _pick(data, "description")
    return {
        "name": name.strip(),
        "description": description.strip() if isinstance(description, str) else "",
        "skills": _strings(_pick(data, "skills")),
        "constraints": constraints,
    }


async def generate_system_profile(
    client: LLMClient,
    seed: Seed,
    lang: str,
    role: str = "profile",
    min_constraints: int = 6,
    max_constraints: int = 12,
    max_attempts: int = 3,
    stats: GenerateStats | None = None,
) -> SystemProfile | None:
    """One `SystemProfile` from a seed, or None when no usable answer came after the retries."""
    stats = stats if stats is not None else GenerateStats()
    prompt = render_lang(
        "profile_system",
        lang,
        corpus=seed.text,
        min_constraints=min_constraints,
        max_constraints=max_constraints,
    )

    def count_retry() -> None:
        stats.retries += 1

    fields = await ask_structured(
        client,
        role,
        prompt,
        lang,
        lambda text: parse_system_profile(text, min_constraints, max_constraints),
        expected=None,
        keys=("name", "description", "skills", "constraints"),
        max_attempts=max_attempts,
        on_retry=count_retry,
    )
    if fields is None:
        return None
    profile = SystemProfile(
        id=seed.id,
        source=seed.source,
        inspired_corpus=seed.text,
        gen_model=client.config.role(role).model,
        **fields,
    )
    profile.system_prompt = render_system_prompt(profile, lang=lang)
    return profile


async def generate_user_profile(
    client: LLMClient, seed: Seed, lang: str, role: str = "profile"
) -> UserProfile | None:
    """One `UserProfile` (the persona expanded into a portrait), or None for an empty answer."""
    prompt = render_lang("profile_user", lang, persona=seed.text)
    text = (await client.chat(role, [{"role": "user", "content": prompt}])).texts[0].strip()
    return UserProfile(id=seed.id, persona=seed.text, profile=text) if text else None


async def run_generation(
    kind: str,
    seeds: Sequence[Seed],
    client: LLMClient,
    output_path: Path,
    lang: str,
    concurrency: int,
    stats: GenerateStats,
    **options: Any,
) -> None:
    """Generate a profile per seed not yet in `output_path`, appending each as it arrives.

    The output is locked before what is already done is read, so a second run cannot double it.
    A seed whose request failed for good, or whose answer stayed unusable, is counted as failed
    and not written, so a rerun tries it again.
    """

    async def one(seed: Seed) -> SystemProfile | UserProfile | None:
        try:
            if kind == "system":
                profile = await generate_system_profile(client, seed, lang, stats=stats, **options)
            else:
                profile = await generate_user_profile(client, seed, lang, role=options.get("role", "profile"))
        except LLMError as err:
            note_failure(stats, seed.id, err)
            return None
        if profile is None:
            note_failure(stats, seed.id, "no usable answer after retries")
        return profile

    with JsonlAppender(output_path) as out:
        done = completed_keys(output_path, lambda obj: obj.get("id"))
        todo = [seed for seed in seeds if seed.id not in done]
        stats.skipped += len(seeds) - len(todo)
        async for _, profile in bounded_map(one, todo, concurrency, desc=f"{kind} profiles"):
            if profile is not None:
                out.write(profile)
                stats.written += 1
