"""The datasets are byte for byte those of the release before trigger selection and pair selection:
on the bundled detail file and on a generated one with awkward texts (quotes, backslashes, tabs,
Chinese, non-reversible constraints, unjudged samples, blank lines), for RPO in both non-reversible
modes, DPO and KTO. The digests were taken from that release's output."""

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
    ("demo", "rpo_drop"): (152, 183160, "9635e0b6acbd20a18f9b2ac9ead8a14d03d390d3360cd4911c0a70b1ee2aea09"),
    ("demo", "rpo_skip"): (133, 162849, "f5907ab174c9ebd28b6997885b05c39691d1822fe8b0cf6bd93b2813d4ea7e2c"),
    ("demo", "dpo"): (61, 74583, "ef796e9fec2827b8d5acd03cb034e3e6caccb57a23229e18abd26a91e8b27ee4"),
    ("demo", "kto"): (34, 35942, "9ce9830fd0521cce385efe4efff07f7099bcd024885812660fd03bb1b438b051"),
    ("generated", "rpo_drop"): (
        4991,
        2712875,
        "0c72093cfcd7c1e8eff9ab90652f8eda9a8f20a44215a7efcaaeff5efb21ba7d",
    ),
    ("generated", "rpo_skip"): (
        3562,
        1950281,
        "ca801f3c690cb4c11e091fda7b600837e98c1353d7850abd096266953e03c205",
    ),
    ("generated", "dpo"): (2035, 1083749, "dfd223b0a5965687e013bae2303dc526554fb76770e787ce82feea1df8b448b6"),
    ("generated", "kto"): (1466, 643038, "86b578d5ef05c302e9cd3ae6dc1d961c2f48d990a059988c93312277c076e7db"),
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
