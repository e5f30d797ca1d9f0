"""The datasets stay byte for byte what they are: on the bundled detail file and on a generated one
with awkward texts (quotes, backslashes, tabs, Chinese, non-reversible constraints, unjudged
samples, blank lines), for RPO in both non-reversible modes, DPO and KTO.

The digests were taken once the records were written by `orjson.dumps` (compact layout); the
records themselves, parsed, are equal to those of every earlier release."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from rpo.utils.pairs.build import build_dpo_dataset, build_kto_dataset, build_rpo_dataset

DEMO = Path(__file__).resolve().parents[1] / "data" / "rpo_data" / "demo_detail.jsonl"

BUILDS = {
    "rpo_drop": lambda detail, out: build_rpo_dataset(detail, out, "x", "drop"),
    "rpo_skip": lambda detail, out: build_rpo_dataset(detail, out, "x", "skip"),
    "dpo": lambda detail, out: build_dpo_dataset(detail, out, "x"),
    "kto": lambda detail, out: build_kto_dataset(detail, out, "x"),
}

GOLDEN = {  # (input, build): (records, bytes, sha256)
    ("demo", "rpo_drop"): (152, 179120, "5628bbb19e6006ee06469b1f95b6bef7790c05713b47ff7891e40d506c0a52e3"),
    ("demo", "rpo_skip"): (133, 159289, "0c1d128e2f771793c04020016f29341de79e0750152511a75307e616e900ce9c"),
    ("demo", "dpo"): (61, 73089, "2970363bb4ac934141f7071f896dac45fdbc777d7f742b83f43bd3ead0ab97f1"),
    ("demo", "kto"): (34, 35186, "c1fa2b290fcd9dba9b68755f63881b8ad3320f78f05c3ef2f48d6d7cae8aa14b"),
    ("generated", "rpo_drop"): (4991, 2566771, "2af1a36af15b281cec99b3be3e4de78235640155494531d96882cfbb58381e8a"),
    ("generated", "rpo_skip"): (3562, 1845857, "87e3c4450f9cfb8b0cd686d672cac4dc990161f68aae9103ee07d3a9fbbd88f6"),
    ("generated", "dpo"): (2035, 1028307, "3748d186d96799d9bdb6de2394a6d02364eda3c5a0ee7718f83f564b0428141d"),
    ("generated", "kto"): (1466, 608634, "00655c2b7b105f10b0ae28c50d866188ec9e9466885fd19fbc04fd73b748ceb7"),
}


def generated_session(rng: random.Random, s: int) -> dict:
    n = rng.randint(2, 6)
    constraints = [f'Rule {k} «{rng.random():.3f}» "quoted"' if s % 3 else f"规则 {k}" for k in range(n)]
    return {
        "session_id": f"p{s}",
        "profile": {"name": f"Bot {s}", "description": "d", "skills": ["x"], "constraints": constraints},
        "reversed_constraints": [None if rng.random() < 0.2 else f"Not {c}" for c in constraints],
        "turns": [
            {
                "query": f"q{t}\n\ttab",
                "reference_response": f"ref{t}",
                "samples": [
                    {
                        "response": f"r{i} \\ {rng.random()}",
                        "follows": None if rng.random() < 0.1 else [rng.random() < 0.6 for _ in range(n)],
                    }
                    for i in range(rng.randint(1, 5))
                ],
            }
            for t in range(rng.randint(1, 3))
        ],
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(7)
    lines = []
    for s in range(600):
        lines.append(json.dumps(generated_session(rng, s), ensure_ascii=False))
        if s % 7 == 0:
            lines.append("   ")
    path = tmp_path_factory.mktemp("golden") / "generated.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("source,build", sorted(GOLDEN))
def test_same_bytes_as_before(tmp_path: Path, generated: Path, source: str, build: str) -> None:
    detail = DEMO if source == "demo" else generated
    counts = BUILDS[build](detail, tmp_path)
    data = (tmp_path / "x.json").read_bytes()
    assert (counts.pairs, len(data), hashlib.sha256(data).hexdigest()) == GOLDEN[(source, build)]
