"""Pair construction against the authors' released algorithm, and its peak memory as the input grows.

    python benchmarks/pair_construction.py [--sessions=2000] [--turns=3] [--samples=5] [--seed=0]
        [--repeats=3]

Generates a synthetic detail file (5-10 constraints a session, some without reversal, random follow
vectors) in a temp dir, then times whole processes (interpreter start, imports, reading, pairing,
writing):

- authors: the RPO pair construction as the authors released it (`src/dsc/rpo_data_construction.py`
  of their repository), re-expressed here on this toolkit's detail format: the detail file loaded
  whole; per turn, samples with repeated verdicts removed by their loop (which redoes the removal
  once per sample); for every two samples that differ, each failed constraint's reversal looked up
  by fuzzy matching the constraint against every constraint of the reversal map (`fuzz.ratio`,
  rapidfuzz's, the fastest implementation of the score they used); pairs sorted by difference; a deep
  copy of the structured profile flattened into each record's system prompt; all records held in a
  list, sorted by margin and saved with `json.dump(indent=4)` through a temp file. Where a constraint
  has no reversal (their data had none such) the constraint stays as written;
- build: `build_rpo_dataset` on the same file (validation, pairing, Table 4 statistics, streaming
  output).

Both run on the full input and on a quarter of it. Prints the best time of each over the repeats,
the ratio build / authors (target <= 0.5) and each process's own peak RSS at both sizes (target:
the build's does not grow with the input).
"""

from __future__ import annotations

import copy
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import fire

WORDS = [
    "reply",
    "answer",
    "summary",
    "budget",
    "travel",
    "recipe",
    "garden",
    "invoice",
    "meeting",
    "report",
    "schedule",
    "weather",
    "story",
    "plan",
    "route",
    "lesson",
    "review",
    "draft",
    "email",
    "table",
    "bullet",
    "number",
    "question",
    "example",
    "reason",
    "detail",
    "step",
]


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


def generate(path: str, sessions: int = 2000, turns: int = 3, samples: int = 5, seed: int = 0) -> None:
    """Write a synthetic session detail file."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for s in range(sessions):
            n = rng.randint(5, 10)
            constraints = [f"Rule {k + 1}: {_text(rng, 10)}" for k in range(n)]
            record = {
                "session_id": f"bench_{s}",
                "profile": {
                    "name": f"Assistant {s}",
                    "description": _text(rng, 25),
                    "skills": [_text(rng, 6) for _ in range(3)],
                    "constraints": constraints,
                },
                "reversed_constraints": [None if rng.random() < 0.1 else f"Not {c}" for c in constraints],
                "turns": [
                    {
                        "query": _text(rng, 20),
                        "reference_response": _text(rng, 40),
                        "samples": [
                            {"response": _text(rng, 40), "follows": [rng.random() < 0.7 for _ in range(n)]}
                            for _ in range(samples)
                        ],
                    }
                    for _ in range(turns)
                ],
            }
            fh.write(json.dumps(record) + "\n")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the authors' released algorithm, re-expressed ---------------------------------------------


def _most_similar(target: str, candidates: list[str]) -> str | None:
    """The candidate with the highest fuzzy ratio to `target` (the first of equals)."""
    from rapidfuzz import fuzz

    best, best_similarity = None, 0.0
    for candidate in candidates:
        similarity = fuzz.ratio(target, candidate)
        if best_similarity < similarity:
            best, best_similarity = candidate, similarity
    return best


def _without_repeated_verdicts(evaluations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Their removal of samples with the same verdicts, run once per sample as released."""
    unique: list[dict[str, Any]] = []
    for _ in evaluations:
        seen: set[tuple[bool, ...]] = set()
        unique = []
        for item in evaluations:
            verdicts = tuple(point["result"] for point in item["detail"])
            if verdicts not in seen:
                unique.append(item)
                seen.add(verdicts)
    return unique


def _flat_profile(profile: dict[str, Any]) -> str:
    skills = "\n".join(f"{i + 1}. {skill}" for i, skill in enumerate(profile["skills"]))
    constraints = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(profile["constraints"]))
    return (
        f"## profile:\nName: {profile['name']}\nDescription: {profile['description']}\n\n"
        f"## Skills:\n{skills}\n\n## Constraints:\n{constraints}"
    )


def _perfect_for(item: dict[str, Any], reversal_map: dict[str, str | None]) -> list[str]:
    """The constraints that make a sample perfect: its failed ones replaced by the reversal of the
    most similar constraint in the map."""
    out = []
    for point in item["detail"]:
        if point["result"]:
            out.append(point["constraint"])
        else:
            reversal = reversal_map[_most_similar(point["constraint"], list(reversal_map))]  # type: ignore[index]
            out.append(point["constraint"] if reversal is None else reversal)
    return out


def authors(detail_path: str, output_path: str) -> None:
    """The authors' pair construction on a detail file; prints its record count and peak RSS."""
    with open(detail_path, encoding="utf-8") as fh:
        sessions = [json.loads(line) for line in fh if line.strip()]
    records: list[dict[str, Any]] = []
    for session in sessions:
        profile = session["profile"]
        reversal_map = dict(zip(profile["constraints"], session["reversed_constraints"]))
        structured = {k: profile.get(k, "") for k in ("name", "description", "skills", "constraints")}
        messages: list[dict[str, str]] = []
        for tid, turn in enumerate(session["turns"]):
            messages.append({"from": "human", "value": turn["query"]})
            evaluations = [
                {
                    "response": sample["response"],
                    "detail": [
                        {"constraint": c, "result": f}
                        for c, f in zip(profile["constraints"], sample["follows"])
                    ],
                }
                for sample in turn["samples"]
                if sample["follows"] is not None
            ]
            evaluations = _without_repeated_verdicts(evaluations)
            pairs = []
            for first, second in combinations(evaluations, 2):
                differing = [
                    (a, b) for a, b in zip(first["detail"], second["detail"]) if a["result"] != b["result"]
                ]
                if not differing:
                    continue
                pairs.append(
                    {
                        "difference_count": len(differing),
                        "response1": first["response"],
                        "response2": second["response"],
                        "constraints1": _perfect_for(first, reversal_map),
                        "constraints2": _perfect_for(second, reversal_map),
                    }
                )
            pairs.sort(key=lambda pair: pair["difference_count"], reverse=True)
            for pair in pairs:
                for chosen, rejected in ((1, 2), (2, 1)):
                    prompt = copy.deepcopy(structured)
                    prompt["constraints"] = pair[f"constraints{chosen}"]
                    records.append(
                        {
                            "conversations": [{"from": "system", "value": _flat_profile(prompt)}, *messages],
                            "chosen": {"from": "gpt", "value": pair[f"response{chosen}"]},
                            "rejected": {"from": "gpt", "value": pair[f"response{rejected}"]},
                            "margin": pair["difference_count"],
                            "sid": session["session_id"],
                            "tid": tid + 1,
                        }
                    )
            messages.append({"from": "gpt", "value": turn["reference_response"]})
    records.sort(key=lambda record: record["margin"], reverse=True)
    temp = f"{output_path}.temp"
    with open(temp, "w", encoding="utf-8") as fh:
        json.dump(records, fh, indent=4, ensure_ascii=False)
    os.replace(temp, output_path)
    print(json.dumps({"records": len(records), "peak_rss_mib": _peak_rss_mib()}))


# --- this toolkit --------------------------------------------------------------------------------


def build(detail_path: str, output_dir: str) -> None:
    """Build the RPO dataset; prints its record count and peak RSS."""
    from rpo.utils.pairs.build import build_rpo_dataset

    counts = build_rpo_dataset(detail_path, output_dir, "rpo")
    print(json.dumps({"records": counts.pairs, "peak_rss_mib": _peak_rss_mib()}))


def _timed(*args: str) -> tuple[float, dict[str, Any]]:
    """Run a subcommand in a fresh process: (wall seconds, what it printed)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, json.loads(out.strip().splitlines()[-1])


def main(sessions: int = 2000, turns: int = 3, samples: int = 5, seed: int = 0, repeats: int = 3) -> None:
    """Authors' algorithm and build alternately `repeats` times on the full input (the best of each
    counts: the machine is shared), then once each on a quarter of it."""
    with tempfile.TemporaryDirectory(prefix="pair_bench_") as tmp:
        root = Path(tmp)
        detail, small = root / "detail.jsonl", root / "small.jsonl"
        generate(str(detail), sessions, turns, samples, seed)
        generate(str(small), sessions // 4, turns, samples, seed)

        def run_build(path: Path) -> tuple[float, dict[str, Any]]:
            result = _timed("build", str(path), str(root / "out"))
            (root / "out" / "rpo.json").unlink()
            return result

        def run_authors(path: Path) -> tuple[float, dict[str, Any]]:
            result = _timed("authors", str(path), str(root / "authors.json"))
            (root / "authors.json").unlink()
            return result

        builds, authored = [], []
        for _ in range(repeats):
            builds.append(run_build(detail))
            authored.append(run_authors(detail))
        build_s, author_s = min(s for s, _ in builds), min(s for s, _ in authored)
        small_build, small_authors = run_build(small), run_authors(small)

        print(
            f"input: {sessions} sessions x {turns} turns x {samples} samples, {detail.stat().st_size / 2**20:.0f} MiB"
        )
        print(f"records: build {builds[0][1]['records']}, authors {authored[0][1]['records']}")
        print(f"authors' algorithm: {author_s:.2f} s (runs: {_times(authored)})")
        print(f"build_rpo_dataset: {build_s:.2f} s (runs: {_times(builds)})")
        print(f"ratio build / authors: {build_s / author_s:.2f}x (target <= 0.5x)")
        print(
            f"peak RSS, build: {builds[0][1]['peak_rss_mib']:.0f} MiB at {sessions} sessions, "
            f"{small_build[1]['peak_rss_mib']:.0f} MiB at {sessions // 4}"
        )
        print(
            f"peak RSS, authors: {authored[0][1]['peak_rss_mib']:.0f} MiB at {sessions} sessions, "
            f"{small_authors[1]['peak_rss_mib']:.0f} MiB at {sessions // 4}"
        )


def _times(runs: list[tuple[float, dict[str, Any]]]) -> str:
    return ", ".join(f"{seconds:.2f}" for seconds, _ in runs)


COMMANDS = {"main": main, "generate": generate, "authors": authors, "build": build}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.argv.insert(1, "main")
    fire.Fire(COMMANDS)
