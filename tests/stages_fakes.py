"""A deterministic scripted "LLM world" for the stage tests: one ScriptedServer handler, roles told
apart by model name. Verdicts and replies are pure functions of the request text, so reruns match."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

ROLES = ("profile", "user", "response", "judge", "critic", "reverse", "trigger")
_RULE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
_LISTED = re.compile(r"^(\d+)\. (.*)$", re.MULTILINE)


def digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def rules_in(prompt: str) -> list[str]:
    """The numbered rules a prompt shows: a `<rules>` block, else a system prompt's constraint list."""
    if "<system_prompt>" in prompt:
        listed = between(prompt, "<system_prompt>", "</system_prompt>").split("# Constraints", 1)[-1]
        return [m.group(2).strip() for m in _LISTED.finditer(listed)]
    block = prompt.split("<rules>", 1)[1].split("</rules>", 1)[0] if "<rules>" in prompt else prompt
    return [m.group(2).strip() for m in _RULE.finditer(block)]


def between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def fake_follows(response: str, constraint: str) -> bool:
    return digest(response + "|" + constraint) % 4 != 0


def fake_triggered(query: str, constraints: list[str]) -> list[int]:
    """1-based numbers of the rules in play: "audience" rules are conditional (in play for half the
    queries), every other rule is unconditional."""
    return [k for k, c in enumerate(constraints, 1) if "audience" not in c or digest(query) % 2 == 0]


def world(request: dict[str, Any]) -> str | list[str]:
    """The handler: what each role's model answers."""
    role = request["model"]
    messages = request["messages"]
    prompt = messages[-1]["content"] if role == "response" else messages[0]["content"]
    n = int(request.get("n") or 1)
    if role == "trigger" or (role == "judge" and "<response>" not in prompt):  # trigger on judge's endpoint
        query = between(prompt, "<query>", "</query>")
        return json.dumps({"reason": "checked", "triggered": fake_triggered(query, rules_in(prompt))})
    if role == "judge":
        response = between(prompt, "<response>", "</response>")
        return json.dumps(
            [
                {"constraint": c, "reason": "checked", "follows": fake_follows(response, c)}
                for c in rules_in(prompt)
            ]
        )
    if role == "reverse":
        return json.dumps(
            [
                {"index": i, "constraint": c, "reversed": None if "audience" in c else f"Do not: {c}"}
                for i, c in enumerate(rules_in(prompt), 1)
            ]
        )
    if role == "user" and "<message>" in prompt:  # a query that opened like an earlier one, reworded
        return f"Reworded: {between(prompt, '<message>', '</message>')}"
    if role == "user":
        turn = re.search(r"\((\d+) earlier turn", prompt).group(1)
        return f'User: "question {turn} #{digest(prompt) % 1000}"'
    if role == "critic":
        return "Fix the broken rules."
    if role == "response":
        key = digest(json.dumps(messages))
        return [f"answer {key % 100000}-{i}" for i in range(n)]
    if role == "profile":
        if "<persona>" in prompt:
            return f"A vivid portrait of {between(prompt, '<persona>', '</persona>')}."
        seed = between(prompt, "<seed>", "</seed>")
        return json.dumps(
            {
                "Name": f"Bot for {seed}",
                "Description": f"Helps with {seed}.",
                "Skill": ["one", "two"],
                "Constraints": [f"Rule {k} for {seed}." for k in range(6)],
            }
        )
    raise AssertionError(f"unexpected model {role!r}")


def write_config(
    path: Path, base_url: str, cache_dir: Path | None, concurrency: int = 4, response_url: str | None = None
) -> Path:
    roles = {role: {"model": role} for role in ROLES}
    if response_url:
        roles["response"] = {"model": "policy", "base_url": response_url, "max_tokens": 8}
    config = {
        "concurrency": concurrency,
        "retry_base_s": 0,
        "max_retries": 2,
        "language": "en",
        "cache_dir": str(cache_dir) if cache_dir else None,
        "default": {"base_url": base_url, "api_key_env": None, "temperature": 0.0, "max_tokens": 64},
        "roles": roles,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def profile_record(k: int, n_constraints: int = 3) -> dict[str, Any]:
    constraints = [f"Constraint {j} of profile {k}." for j in range(n_constraints - 1)] + [
        "The audience is kids."
    ]
    return {
        "id": f"p{k}",
        "name": f"Bot {k}",
        "description": f"Bot number {k}.",
        "skills": ["chat"],
        "constraints": constraints,
    }


def session_record(k: int, turns: int = 2) -> dict[str, Any]:
    return {
        "session_id": f"s{k}",
        "profile": profile_record(k),
        "turns": [{"query": f"q{k}.{t}", "reference_response": f"ref{k}.{t}"} for t in range(turns)],
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
