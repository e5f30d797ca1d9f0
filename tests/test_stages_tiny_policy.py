"""The sampling stage against a real `llamafactory-cli api` serving a tiny model (the policy), with the
judge and reverser on the scripted server, plus the reverse_constrain CLI (reverse and --verify)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.local_service import start_service
from rpo.utils.roles.conversation import LLMResponder
from rpo.utils.roles.judge import LLMJudge
from rpo.utils.roles.reverser import LLMReverser
from rpo.utils.schema import SelfPlaySession, SessionDetail
from rpo.utils.stages.sampling import sample_sessions
from rpo.utils.tiny_model import build_tiny_model

from tests.scripted_server import ScriptedServer
from tests.stages_fakes import (
    between,
    profile_record,
    rules_in,
    session_record,
    world,
    write_config,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parent.parent
REVERSE = [sys.executable, str(ROOT / "src" / "dsc" / "reverse_constrain.py")]


def test_sampling_from_llamafactory_api_tiny_model(tmp_path):
    model = build_tiny_model(tmp_path / "model")
    with (
        ScriptedServer(handler=world) as server,
        start_service(
            "llamafactory",
            str(model),
            name="policy",
            served_model_name="policy",
            state_dir=tmp_path / "services",
            timeout_s=300,
        ) as service,
    ):
        config = PipelineConfig.load(
            write_config(
                tmp_path / "p.yaml", server.base_url, tmp_path / "cache", response_url=service.base_url
            )
        )
        session = SelfPlaySession.model_validate(session_record(0, turns=2))
        out = tmp_path / "detail.jsonl"

        async def go():
            async with LLMClient(config) as client:
                stats = await sample_sessions(
                    [session],
                    LLMResponder(client),
                    LLMJudge(client, lang="en"),
                    LLMReverser(client, lang="en"),
                    n=2,
                    concurrency=1,
                    output_path=out,
                    lang="en",
                    desc=None,
                )
                return stats, client.usage()

        stats, usage = asyncio.run(go())
    assert stats.sessions == 1 and stats.samples == 4 and stats.unjudged == 0
    assert usage["response"]["calls"] >= 2 and usage["response"]["completion_tokens"] > 0
    [detail] = [SessionDetail.model_validate_json(line) for line in out.read_text().splitlines()]
    assert detail.reversed_constraints[-1] is None and len(detail.turns) == 2
    for turn in detail.turns:
        assert len(turn.samples) == 2
        # an 8-token cap: a reply the server reports as cut off (finish_reason "length") is marked
        # truncated and left unjudged; every other reply is judged on all 3 constraints
        assert all(s.follows is None if s.truncated else len(s.follows) == 3 for s in turn.samples)
    assert stats.truncated == sum(s.truncated for turn in detail.turns for s in turn.samples)
    judged = {
        between(r["messages"][0]["content"], "<response>", "</response>")
        for r in server.chat_requests
        if r["model"] == "judge"
    }
    assert judged == {s.response.strip() for t in detail.turns for s in t.samples if not s.truncated}


def test_reverse_cli_profiles_and_verify_details(tmp_path):
    with ScriptedServer(handler=world) as server:
        config = write_config(tmp_path / "p.yaml", server.base_url, tmp_path / "cache")
        profiles = write_jsonl(tmp_path / "profiles.jsonl", [profile_record(k) for k in range(3)])
        out = tmp_path / "rev.jsonl"
        result = subprocess.run(
            [*REVERSE, f"--input={profiles}", f"--output={out}", f"--config={config}", "--shard=1/2"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        shard_out = tmp_path / "rev.shard-1-of-2.jsonl"
        [record] = [json.loads(line) for line in shard_out.read_text().splitlines()]
        assert record["id"] == "p1" and record["reversed_constraints"] == [
            "Do not: Constraint 0 of profile 1.",
            "Do not: Constraint 1 of profile 1.",
            None,
        ]
        assert "not reversible 1" in result.stdout

        detail = {**session_record(0, turns=1), "reversed_constraints": ["Do not: x", "Keeps failing", None]}
        detail["turns"][0]["samples"] = [
            {"response": "alpha", "follows": [False, False, False]},
            {"response": "beta", "follows": [True, False, True]},
        ]
        details = write_jsonl(tmp_path / "detail.jsonl", [detail])
        server.handler = lambda request: json.dumps(
            [
                {"constraint": c, "reason": "", "follows": not c.startswith("Keeps")}
                for c in rules_in(request["messages"][0]["content"])
            ]
        )
        verified = tmp_path / "verified.jsonl"
        result = subprocess.run(
            [*REVERSE, f"--input={details}", f"--output={verified}", f"--config={config}", "--verify"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        [record] = [json.loads(line) for line in verified.read_text().splitlines()]
        assert record["reversed_constraints"] == ["Do not: x", None, None]
        assert [c["ok"] for c in record["reversal_checks"]] == [True, False, None]
        assert "flagged as bad 1 (50.0% of checked)" in result.stdout
        SessionDetail.model_validate(record)
