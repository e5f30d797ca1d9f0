"""Parallel pair construction (`rpo.utils.pairs.parallel_array`): the same bytes and counts as one process,
errors named as one process names them, the earliest first, and nothing left behind."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from rpo.utils.io import InputError
from rpo.utils.pairs import parallel_array
from rpo.utils.pairs.build import build_dpo_dataset, build_kto_dataset, build_rpo_dataset

BUILDERS = {"rpo": build_rpo_dataset, "dpo": build_dpo_dataset, "kto": build_kto_dataset}


def session(rng: random.Random, s: int) -> dict:
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


def write_sessions(path: Path, sessions: list[dict], blank_every: int = 7) -> Path:
    lines = []
    for s, data in enumerate(sessions):
        lines.append(json.dumps(data, ensure_ascii=False))
        if s % blank_every == 0:
            lines.append("   ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make a small file take the parallel path with many chunks of a few lines each; records the
    worker counts of the parallel builds."""
    monkeypatch.setattr(parallel_array, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(parallel_array, "CHUNK_BYTES", 3000)
    calls: list[int] = []
    write = parallel_array.write_json_array

    def spy(*args, **kwargs):
        calls.append(args[4])
        return write(*args, **kwargs)

    monkeypatch.setattr(parallel_array, "write_json_array", spy)
    return calls


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("workers", [2, 3])
def test_same_bytes_and_counts_as_one_process(
    tmp_path: Path, small_chunks: list[int], kind: str, workers: int
) -> None:
    rng = random.Random(7)
    detail = write_sessions(tmp_path / "detail.jsonl", [session(rng, s) for s in range(120)])
    one = BUILDERS[kind](detail, tmp_path / "one", kind, workers=1)
    many = BUILDERS[kind](detail, tmp_path / "many", kind, workers=workers)
    assert small_chunks == [workers]
    assert one.pairs > 100
    assert (tmp_path / "one" / f"{kind}.json").read_bytes() == (
        tmp_path / "many" / f"{kind}.json"
    ).read_bytes()
    one.output = many.output = None
    assert many == one
    assert many.summary() == one.summary()


def test_no_records_gives_an_empty_array(tmp_path: Path, small_chunks: list[int]) -> None:
    rng = random.Random(1)
    sessions = [session(rng, s) for s in range(30)]
    for data in sessions:
        for turn in data["turns"]:
            turn["samples"] = turn["samples"][:1]
    detail = write_sessions(tmp_path / "detail.jsonl", sessions)
    counters = build_rpo_dataset(detail, tmp_path, "rpo", workers=2)
    assert counters.pairs == 0 and counters.sessions == 30
    assert (tmp_path / "rpo.json").read_text() == "[]\n"


def test_earliest_error_wins_with_the_line_number_of_one_process(
    tmp_path: Path, small_chunks: list[int]
) -> None:
    rng = random.Random(3)
    sessions = [session(rng, s) for s in range(80)]
    sessions[57]["turns"][0]["samples"][0]["follows"] = [True]  # wrong length
    sessions[71]["profile"]["constraints"] = "not a list"
    detail = write_sessions(tmp_path / "detail.jsonl", sessions)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "rpo.json").write_text("previous")
    with pytest.raises(InputError) as sequential:
        build_rpo_dataset(detail, tmp_path / "out", "rpo", workers=1)
    with pytest.raises(InputError) as parallel:
        build_rpo_dataset(detail, tmp_path / "out", "rpo", workers=2)
    assert str(parallel.value) == str(sequential.value)
    assert "line 67 (record p57)" in str(parallel.value)  # after 57 sessions and 9 blank lines
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rpo.json"]
    assert (tmp_path / "out" / "rpo.json").read_text() == "previous"


def test_invalid_utf8_is_named(tmp_path: Path, small_chunks: list[int]) -> None:
    rng = random.Random(4)
    detail = write_sessions(tmp_path / "detail.jsonl", [session(rng, s) for s in range(20)], blank_every=100)
    lines = detail.read_bytes().splitlines(keepends=True)
    lines[12] = lines[12].replace(b'"Bot', b'"\xff\xfeBot')
    detail.write_bytes(b"".join(lines))
    with pytest.raises(InputError, match=r"detail\.jsonl: line 13: not valid UTF-8"):
        build_rpo_dataset(detail, tmp_path / "out", "rpo", workers=2)


def numbered_lines(path: Path, count: int) -> Path:
    path.write_text("".join(f"{i}\n" for i in range(count)))
    return path


def test_write_json_array_with_any_line_encoder(tmp_path: Path) -> None:
    source = numbered_lines(tmp_path / "lines.txt", 500)

    def encode(lineno: int, line: bytes) -> tuple[bytes, int]:
        value = int(line)
        return (b"", 0) if value % 3 else (b'{"v": %d}' % value, 1)

    records, states = parallel_array.write_json_array(source, tmp_path / "out.json", encode, None, 3, 64)
    assert records == 167 and states == [None, None, None]
    assert json.loads((tmp_path / "out.json").read_text()) == [{"v": v} for v in range(0, 500, 3)]


def test_a_failing_or_dying_worker_is_reported_not_waited_for(tmp_path: Path) -> None:
    source = numbered_lines(tmp_path / "lines.txt", 400)

    def fails(lineno: int, line: bytes) -> tuple[bytes, int]:
        if int(line) == 250:
            raise ValueError("bad value 250")
        return b"{}", 1

    def dies(lineno: int, line: bytes) -> tuple[bytes, int]:
        if int(line) == 250:
            os._exit(3)
        return b"{}", 1

    with pytest.raises(RuntimeError, match="ValueError: bad value 250"):
        parallel_array.write_json_array(source, tmp_path / "out.json", fails, None, 2, 64)
    with pytest.raises(RuntimeError, match="died \\(exit code 3\\)"):
        parallel_array.write_json_array(source, tmp_path / "out.json", dies, None, 2, 64)
    assert list(tmp_path.iterdir()) == [source]


def test_outputs_get_the_mode_of_an_ordinary_new_file(tmp_path: Path, small_chunks: list[int]) -> None:
    rng = random.Random(5)
    detail = write_sessions(tmp_path / "detail.jsonl", [session(rng, s) for s in range(40)])
    build_rpo_dataset(detail, tmp_path / "many", "rpo", workers=2)
    build_rpo_dataset(detail, tmp_path / "one", "rpo", workers=1)
    (tmp_path / "plain").write_text("")
    expected = (tmp_path / "plain").stat().st_mode & 0o777
    for path in ("many/rpo.json", "one/rpo.json", "one/dataset_info.json"):
        assert (tmp_path / path).stat().st_mode & 0o777 == expected, path
