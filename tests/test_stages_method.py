"""The data stages against the method's rules: the authors' refinement in sampling, truncated
samples never paired, and one prompt language from sampling to the training prompts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rpo.utils.io import InputError
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.pairs.records import dpo_records, kto_records, rpo_records
from rpo.utils.pairs.counts import DpoCounts, KtoCounts, RpoCounts
from rpo.utils.prompts.language import pick_lang
from rpo.utils.roles.conversation import LLMResponder
from rpo.utils.roles.protocols import Reply
from rpo.utils.schema import ProfileCore, SelfPlaySession, SessionDetail, Verdicts
from rpo.utils.stages.sampling import Refinement, SamplingStats, sample_sessions

from tests.scripted_server import Reply as ServerReply
from tests.scripted_server import ScriptedServer
from tests.stages_fakes import session_record, world, write_config, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
THREE = ProfileCore(name="Bot", description="Helps.", skills=["chat"], constraints=["a", "b", "c"])
CHINESE = ProfileCore(name="星座专家", description="解读星座。", skills=["分析运势"], constraints=["回复不超过150字。", "不得使用表情符号。"])
ENGLISH = ProfileCore(name="Zodiac Expert", description="Reads stars.", skills=["horoscopes"],
                      constraints=["Keep replies under 150 words.", "Use no emojis."])


class ScriptedResponder:
    """Returns the given replies; records every request."""

    def __init__(self, *replies: Reply):
        self.replies = list(replies)
        self.seen: list[list[dict]] = []

    async def respond(self, messages, n):
        self.seen.append(messages)
        return self.replies[:n]


class TableJudge:
    """Follows the first k constraints, k scripted per response text; records what it judged."""

    def __init__(self, table):
        self.table = table
        self.judged: list[str] = []

    async def judge(self, profile, history, query, response):
        self.judged.append(response)
        k = self.table[response]
        return Verdicts(follows=[i < k for i in range(len(profile.constraints))])


class AppendingRefiner:
    def __init__(self):
        self.seen: list[str] = []

    async def refine(self, profile, history, query, response, verdicts):
        self.seen.append(response)
        return Reply(f"{response}+fix")


class Opposites:
    async def reverse(self, profile):
        return [f"not {c}" for c in profile.constraints]


def session(profile: ProfileCore, lang: str | None = None) -> SelfPlaySession:
    return SelfPlaySession(session_id="s", profile=profile, lang=lang,
                           turns=[{"query": "q", "reference_response": "ref"}])


def sample(tmp_path, responder, judge, profile=THREE, lang="en", refinement=None, sessions=None):
    path = tmp_path / "detail.jsonl"
    path.unlink(missing_ok=True)
    stats = asyncio.run(sample_sessions(sessions or [session(profile)], responder, judge, Opposites(), n=5,
                                        output_path=path, lang=lang, refinement=refinement, desc=None))
    [line] = path.read_text().splitlines()
    return SessionDetail.model_validate_json(line), stats


def pair_texts(detail: SessionDetail) -> set[str]:
    """Every response text that any RPO, DPO or KTO record of the session holds."""
    texts = set()
    for record in [*rpo_records(detail, RpoCounts()), *dpo_records(detail, DpoCounts()),
                   *kto_records(detail, KtoCounts())]:
        for key in ("chosen", "rejected"):
            if key in record:
                texts.add(record[key]["value"])
        if "kto_tag" in record:
            texts.add(record["conversations"][-1]["value"])
    return texts


def test_refinement_rewrites_the_best_so_far_and_every_rewrite_joins_the_pool(tmp_path):
    judge = TableJudge({"s0": 1, "s1": 2, "s1+fix": 2, "s1+fix+fix": 3, "s1+fix+fix+fix": 3})
    refiner = AppendingRefiner()
    detail, stats = sample(tmp_path, ScriptedResponder(Reply("s0"), Reply("s1")), judge,
                           refinement=Refinement(refiner, threshold=0.7, rounds=3))
    # 2 of 3 < 70 %: rewrite s1; the equal rewrite becomes the best; the next reaches 3 of 3 and stops
    assert refiner.seen == ["s1", "s1+fix"]
    samples = [s.model_dump(exclude_unset=True) for s in detail.turns[0].samples]
    assert [(s["response"], s.get("refined", False), s.get("refine_round")) for s in samples] == [
        ("s0", False, None), ("s1", False, None), ("s1+fix", True, 1), ("s1+fix+fix", True, 2)]
    assert (stats.refined_turns, stats.refined, stats.samples) == (1, 2, 4)
    assert "s1+fix+fix" in pair_texts(detail)  # the rewrites are paired like any sample


def test_no_refinement_at_or_above_the_threshold_or_without_the_scheme(tmp_path):
    refiner = AppendingRefiner()
    judge = TableJudge({"s0": 1, "s1": 3})
    detail, stats = sample(tmp_path, ScriptedResponder(Reply("s0"), Reply("s1")), judge,
                           refinement=Refinement(refiner))
    assert refiner.seen == [] and len(detail.turns[0].samples) == 2 and stats.refined == 0
    judge = TableJudge({"s0": 1, "s1": 2})
    detail, _ = sample(tmp_path, ScriptedResponder(Reply("s0"), Reply("s1")), judge)
    assert len(detail.turns[0].samples) == 2


def test_rounds_stop_at_the_limit_and_worse_rewrites_still_join_the_pool(tmp_path):
    judge = TableJudge({"s0": 1, "s0+fix": 0, "s0+fix+fix": 1, "s0+fix+fix+fix": 1})
    refiner = AppendingRefiner()
    detail, _ = sample(tmp_path, ScriptedResponder(Reply("s0")), judge, refinement=Refinement(refiner, 0.7, 2))
    assert refiner.seen == ["s0", "s0"]  # the worse rewrite never replaced the best
    assert [s.response for s in detail.turns[0].samples] == ["s0", "s0+fix", "s0+fix"]


def test_a_truncated_sample_is_counted_recorded_never_judged_and_never_paired(tmp_path):
    judge = TableJudge({"a": 3, "b": 1, "c": 0})
    responder = ScriptedResponder(Reply("cut off mid-sen", truncated=True), Reply("a"), Reply("b"), Reply("c"))
    detail, stats = sample(tmp_path, responder, judge, refinement=Refinement(AppendingRefiner()))
    cut = detail.turns[0].samples[0]
    assert cut.truncated and cut.follows is None and "cut off mid-sen" not in judge.judged
    assert stats.truncated == 1 and stats.unjudged == 0
    assert "truncated by the token cap (unjudged, never paired) 1" in stats.summary()
    texts = pair_texts(detail)
    assert texts == {"a", "b", "c"}  # pairs were built, none from the truncated sample
    with pytest.raises(ValueError, match="a truncated sample is never judged"):
        SessionDetail.model_validate({**detail.model_dump(), "turns": [{
            "query": "q", "reference_response": "r",
            "samples": [{"response": "x", "follows": [True, True, True], "truncated": True}]}]})


def test_a_session_of_truncated_samples_only_is_written_not_failed(tmp_path):
    detail, stats = sample(tmp_path, ScriptedResponder(Reply("x", truncated=True)), TableJudge({}))
    assert stats.failed == 0 and stats.truncated == 1 and pair_texts(detail) == set()


def test_the_responder_marks_finish_reason_length_as_truncated():
    def completion(reasons):
        return json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                           "choices": [{"index": i, "message": {"role": "assistant", "content": f"t{i}"},
                                        "finish_reason": r} for i, r in enumerate(reasons)],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})

    with ScriptedServer() as server:
        server.enqueue(ServerReply(body=completion(["stop", "length", "stop"])))
        config = PipelineConfig.from_dict({"default": {"base_url": server.base_url, "model": "m", "api_key_env": None,
                                                       "max_tokens": None},
                                           "roles": {"response": {}}, "cache_dir": None})

        async def go():
            async with LLMClient(config) as client:
                return await LLMResponder(client).respond([{"role": "user", "content": "hi"}], 3)

        replies = asyncio.run(go())
        assert replies == [Reply("t0"), Reply("t1", truncated=True), Reply("t2")]
        assert "max_tokens" not in server.chat_requests[0]  # no cap: the server's own limit


@pytest.mark.parametrize("config_path", sorted((ROOT / "conf" / "pipeline").glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("profile", [CHINESE, ENGLISH], ids=["zh", "en"])
def test_sampling_and_pairs_render_one_system_prompt(tmp_path, config_path, profile):
    lang = pick_lang(None, PipelineConfig.load(config_path))
    responder = ScriptedResponder(Reply("r0"), Reply("r1"))
    judge = TableJudge({"r0": 2, "r1": 0})  # r0 follows both constraints: its prompt is the original
    detail, _ = sample(tmp_path, responder, judge, profile=profile, lang=lang)
    sampled = responder.seen[0][0]["content"]
    assert detail.lang == (lang or ("zh" if profile is CHINESE else "en"))  # recorded in the detail file
    chosen_r0 = [r for r in rpo_records(detail, RpoCounts()) if r["chosen"]["value"] == "r0"]
    desirable = [r for r in kto_records(detail, KtoCounts()) if r["kto_tag"]]
    prompts = {r["conversations"][0]["value"] for r in [*chosen_r0, *dpo_records(detail, DpoCounts()), *desirable]}
    assert prompts == {sampled}


def test_a_profile_keeps_its_own_language_unless_the_language_is_named():
    assert pick_lang(None, PipelineConfig.from_dict({"roles": {"r": {"model": "m"}}})) is None
    assert pick_lang(None, PipelineConfig.from_dict({"roles": {"r": {"model": "m"}}, "language": "zh"})) == "zh"
    assert pick_lang("en", PipelineConfig.from_dict({"roles": {"r": {"model": "m"}}, "language": "zh"})) == "en"


def test_sampling_refuses_another_language_than_the_session_was_played_in(tmp_path):
    with pytest.raises(InputError, match="session s was played with zh prompts, but this run would sample it with en"):
        sample(tmp_path, ScriptedResponder(Reply("r")), TableJudge({"r": 2}), profile=ENGLISH, lang=None,
               sessions=[session(ENGLISH, lang="zh")])
    detail, _ = sample(tmp_path, ScriptedResponder(Reply("r")), TableJudge({"r": 2}), profile=ENGLISH, lang="zh",
                       sessions=[session(ENGLISH, lang="zh")])
    assert detail.lang == "zh"


def test_stats_name_every_new_counter():
    summary = SamplingStats().summary()
    assert "turns refined 0" in summary and "rewrites added to the pool 0" in summary


def test_paper_config_samples_and_refines_as_the_authors():
    config = PipelineConfig.load(ROOT / "conf" / "pipeline" / "paper.yaml")
    response = config.role("response")
    assert (response.temperature, response.top_p, response.max_tokens) == (1.0, None, None)
    assert config.sampling_refinement is not None
    assert (config.sampling_refinement.threshold, config.sampling_refinement.rounds) == (0.7, 3)
    assert config.language == "zh"


def test_pair_construction_loads_neither_the_llm_layer_nor_the_roles():
    code = ("import sys, rpo.utils.pairs.build, rpo.utils.pairs.records; "
            "print([m for m in sys.modules if m.startswith(('rpo.utils.llm', 'rpo.utils.roles'))])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_sampling_cli_refines_when_the_config_says_so_and_judges_strictly_on_request(tmp_path):
    with ScriptedServer(handler=world) as server:
        config = write_config(tmp_path / "p.yaml", server.base_url, None)
        raw = yaml.safe_load(config.read_text())
        config.write_text(yaml.safe_dump({**raw, "sampling_refinement": {"threshold": 1.0, "rounds": 1}}))
        sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(k) for k in range(3)])
        detail = tmp_path / "detail.jsonl"
        result = subprocess.run(
            [sys.executable, str(ROOT / "src" / "dsc" / "dpo_data_construction.py"), f"--config={config}",
             f"--sessions_path={sessions}", f"--detail_path={detail}", f"--output_dir={tmp_path}", "--n=2",
             "--strict_judge"],
            check=False, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        records = [SessionDetail.model_validate_json(line) for line in detail.read_text().splitlines()]
        critic = [r["messages"][0]["content"] for r in server.chat_requests if r["model"] == "critic"]
        judge = [r["messages"][0]["content"] for r in server.chat_requests
                 if r["model"] == "judge" and "<response>" in r["messages"][0]["content"]]
    refined = [s for d in records for t in d.turns for s in t.samples if s.model_dump().get("refined")]
    below = [t for d in records for t in d.turns if min(_rate(s.follows) for s in t.samples[:2]) < 1.0
             and max(_rate(s.follows) for s in t.samples[:2]) < 1.0]
    assert len(refined) == len(critic) == len(below) > 0  # one round for every turn whose best fell short
    assert all(d.lang == "en" for d in records) and f"rewrites added to the pool {len(critic)}" in result.stdout
    assert judge and all("Be strict and literal" in p for p in judge)


def _rate(follows):
    in_play = [f for f in follows if f is not None]
    return sum(in_play) / len(in_play) if in_play else 1.0
