"""Load SysBank release files into normalised `SystemProfile` records.

The release writes its profiles in two key languages (`Name`/`名称`, ...), carries its own
misspellings (`Skils`, `desription`) and sometimes only the flat `system_prompt` text; all of it is
mapped to one form here so every other part of the toolkit sees a single record type. A bad record,
a repeated id, an empty file or one that is not UTF-8 stops the load with a one-line `InputError`
naming file, line and field: nothing is silently dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rpo.utils.io import InputError, describe_validation_error, iter_lines, json_line_object, record_label
from rpo.utils.schema import SystemProfile
from rpo.utils.text_language import text_language

SAMPLE_PATH = Path(__file__).resolve().parent / "sample.jsonl"

# Release keys inside `structure_system_prompt`, in the order they are tried.
NAME_KEYS = ("Name", "名称", "name")
DESCRIPTION_KEYS = ("Description", "描述", "Desription", "description")
SKILL_KEYS = ("Skills", "Skils", "Skill", "技能", "skills")
CONSTRAINT_KEYS = ("Constraints", "约束", "Constraint", "constraints")

NORMALISED_FIELDS = ("id", "source", "name", "description", "skills", "constraints", "system_prompt",
                     "inspired_corpus", "gen_model")

def profile_language(profile: SystemProfile) -> str:
    """Language of a profile, judged on the text a reader sees."""
    return text_language(" ".join([profile.name, profile.description, *profile.constraints]))


# ---------------------------------------------------------------- flat system_prompt text

_HEADING = re.compile(r"^\s*#{1,6}\s*(?P<title>[^:：]*?)\s*[:：]?\s*$")
_FIELD = re.compile(
    r"^\s*(?:[-*]\s*)?(?P<key>Name|名称|名字|Description|Desription|描述)\s*[:：]\s*(?P<value>.*)$",
    re.IGNORECASE,
)
_ITEM = re.compile(r"^\s*(?:\d+\s*[.、．)）]|[-*•·])\s*(?P<text>.+?)\s*$")
_SKILL_TITLES = {"skills", "skils", "skill", "技能"}
_CONSTRAINT_TITLES = {"constraints", "constraint", "约束", "限制"}


def parse_flat_prompt(text: str) -> dict[str, Any]:
    """Read name, description, skills and constraints out of a flat release `system_prompt`.

    The release renders profiles as `## Profile:` with `Name:`/`Description:` lines (or
    `名称:`/`描述:`), then `## Skills:`/`## 技能:` and `## Constraints:`/`## 约束:` numbered lists.
    Returns the fields found; the caller decides which are required.
    """
    fields: dict[str, Any] = {}
    section = ""
    current_key = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        heading = _HEADING.match(line)
        if heading:
            title = heading.group("title").strip().lower()
            section = "skills" if title in _SKILL_TITLES else "constraints" if title in _CONSTRAINT_TITLES else ""
            current_key = ""
            if section:
                fields.setdefault(section, [])
            continue
        if section:
            item = _ITEM.match(line)
            if item:
                fields[section].append(item.group("text"))
            elif fields[section]:
                fields[section][-1] += " " + line
            else:
                fields[section].append(line)
            continue
        field = _FIELD.match(line)
        if field:
            key = field.group("key").lower()
            current_key = "name" if key in {"name", "名称", "名字"} else "description"
            fields[current_key] = field.group("value").strip()
        elif current_key == "description":
            fields["description"] += "\n" + line
    return fields


# ---------------------------------------------------------------- one release record


@dataclass(frozen=True)
class Location:
    """Where a record came from, for messages and `show`."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}: line {self.line}"


def _first_key(obj: dict[str, Any], keys: Iterable[str]) -> tuple[str, Any] | None:
    for key in keys:
        if key in obj:
            return key, obj[key]
    return None


def _string_list(value: Any, field: str) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(f"field {field}: expected a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise TypeError(f"field {field}[{i}]: expected a string, got {type(item).__name__}")
    return [item.strip() for item in value if item.strip()]


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"field {field}: expected a string, got {type(value).__name__}")
    return value.strip()


def _optional_text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    return _text(value, key)


def _from_structure(structure: Any) -> dict[str, Any]:
    if not isinstance(structure, dict):
        raise TypeError(f"field structure_system_prompt: expected an object, got {type(structure).__name__}")
    out: dict[str, Any] = {}
    name = _first_key(structure, NAME_KEYS)
    if name is None:
        raise ValueError("field structure_system_prompt.Name: missing (looked for Name, 名称)")
    out["name"] = _text(name[1], f"structure_system_prompt.{name[0]}")
    description = _first_key(structure, DESCRIPTION_KEYS)
    if description is not None:
        out["description"] = _text(description[1], f"structure_system_prompt.{description[0]}")
    skills = _first_key(structure, SKILL_KEYS)
    if skills is not None:
        out["skills"] = _string_list(skills[1], f"structure_system_prompt.{skills[0]}")
    constraints = _first_key(structure, CONSTRAINT_KEYS)
    if constraints is None:
        raise ValueError("field structure_system_prompt.Constraints: missing (looked for Constraints, 约束)")
    out["constraints"] = _string_list(constraints[1], f"structure_system_prompt.{constraints[0]}")
    return out


def _from_flat(system_prompt: str) -> dict[str, Any]:
    parsed = parse_flat_prompt(system_prompt)
    if not parsed.get("name"):
        raise ValueError("field system_prompt: no 'Name:' (名称:) line and no structure_system_prompt")
    if "constraints" not in parsed:
        raise ValueError("field system_prompt: no '## Constraints:' (## 约束:) section and no structure_system_prompt")
    return parsed


def _inspired_corpus(obj: dict[str, Any]) -> str | None:
    """The release keeps the inspiring source in `inspired_corpus`, or as top-level `name` + `desription`."""
    corpus = _optional_text(obj, "inspired_corpus")
    if corpus is not None:
        return corpus
    name = _optional_text(obj, "name")
    description = _optional_text(obj, "desription")
    if description is None:
        description = _optional_text(obj, "description")
    if name is None and description is None:
        return None
    return f"Name: {name or ''}\nDescription: {description or ''}".strip()


def normalise(obj: dict[str, Any]) -> SystemProfile:
    """Map one release record (either key language), or an already normalised one, to a SystemProfile.

    Raises ValueError (bad value) or TypeError (wrong JSON type) whose message starts with `field <name>:`.
    """
    if "gptId" in obj:
        raw_id, id_field = obj["gptId"], "gptId"
    elif "id" in obj:
        raw_id, id_field = obj["id"], "id"
    else:
        raise ValueError("field gptId: missing (no gptId or id)")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
        raise ValueError(f"field {id_field}: expected a non-empty string, got {raw_id!r}")
    system_prompt = obj.get("system_prompt", "")
    if system_prompt is None:
        system_prompt = ""
    system_prompt = _text(system_prompt, "system_prompt")

    if "structure_system_prompt" in obj and obj["structure_system_prompt"] is not None:
        core = _from_structure(obj["structure_system_prompt"])
        inspired = _inspired_corpus(obj)
    elif "constraints" in obj and "structure_system_prompt" not in obj and "gptId" not in obj:
        core = {
            "name": _text(obj.get("name"), "name"),
            "description": _text(obj.get("description", ""), "description"),
            "skills": _string_list(obj.get("skills", []), "skills"),
            "constraints": _string_list(obj["constraints"], "constraints"),
        }
        inspired = _optional_text(obj, "inspired_corpus")
    elif system_prompt:
        core = _from_flat(system_prompt)
        inspired = _inspired_corpus(obj)
    else:
        raise ValueError("field structure_system_prompt: missing, and no flat system_prompt to parse")

    source = obj.get("source") or ""
    source = _text(source, "source")
    gen_model = _optional_text(obj, "gen_model")
    try:
        return SystemProfile(
            id=str(raw_id).strip(),
            source=source,
            system_prompt=system_prompt,
            inspired_corpus=inspired,
            gen_model=gen_model,
            **core,
        )
    except ValidationError as err:
        raise ValueError(describe_validation_error(err)) from None


# ---------------------------------------------------------------- files and folders


def expand_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files behind the given files and folders (folders: every `*.jsonl` / `*.jsonl.gz`, recursively)."""
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz")))
            if not found:
                raise InputError(f"{path}: folder holds no .jsonl or .jsonl.gz files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


def _records(path: Path) -> Iterator[tuple[SystemProfile, Location, str]]:
    """(profile, location, the key its id was read from) for every record of one file.

    A file with no record at all (empty, or blank lines only) is refused: it is a failed download
    or a wrong path far more often than a corpus.
    """
    records = 0
    for lineno, line in iter_lines(path):
        profile, id_key = _parse_line(line, path, lineno)
        records += 1
        yield profile, Location(str(path), lineno), id_key
    if not records:
        raise InputError(f"{path}: no records (the file is empty or holds only blank lines)")


def _parse_line(line: str, path: Path, lineno: int) -> tuple[SystemProfile, str]:
    obj = json_line_object(line, path, lineno)
    try:
        return normalise(obj), "gptId" if "gptId" in obj else "id"
    except (ValueError, TypeError) as err:
        raise InputError(f"{path}: line {lineno}{record_label(obj)}: {err}") from None


def duplicate_id(record_id: str, where: Location, first: Location, field: str = "gptId") -> InputError:
    """The error for a record whose id an earlier record already has."""
    return InputError(f"{where} (record {record_id}): field {field}: duplicate id, first seen at {first}")


def iter_profiles(paths: str | Path | Iterable[str | Path]) -> Iterator[tuple[SystemProfile, Location]]:
    """Stream (profile, location) over any number of files and folders, in the order given.

    A repeated id is refused, across files too: ids are how records are found (`show`, the web
    page's links) and they become the session ids of data construction, which must be unique.
    """
    first_seen: dict[str, Location] = {}
    for path in expand_paths(paths):
        for profile, where, id_key in _records(path):
            first = first_seen.setdefault(profile.id, where)
            if first is not where:
                raise duplicate_id(profile.id, where, first, id_key)
            yield profile, where


def load_profiles(paths: str | Path | Iterable[str | Path] = SAMPLE_PATH) -> list[SystemProfile]:
    """All profiles of the given files/folders (ids unique, as in `iter_profiles`)."""
    return [profile for profile, _ in iter_profiles(paths)]


def to_jsonl_line(profile: SystemProfile) -> str:
    """The normalised form of a profile as one JSON line."""
    return json.dumps(normalised_dict(profile), ensure_ascii=False)


def normalised_dict(profile: SystemProfile) -> dict[str, Any]:
    """The normalised fields of a profile, in their documented order."""
    return {field: getattr(profile, field) for field in NORMALISED_FIELDS}
