"""The offline loop: the rule roles' server answering the real roles, and `make e2e` at its smallest size.

The server is asked by the project's own LLM roles through `LLMClient`, and its answers are
compared with the demo world's checkers; the loop runs every real command (tiny model, rule
server, `llamafactory-cli api`, the data stages, `llamafactory-cli train`, `sysbench.py run`,
`compare.py`) once, and its outputs are checked against the same checkers.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path

import httpx2
import pytest
import uvicorn
from rpo.demo.constraints import parse
from rpo.demo.judge_server import create_app
from rpo.demo.local_loop import SIZES, run_loop, write_world
from rpo.demo.rules import triggered
from rpo.utils.llm.client import LLMClient, LLMError
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.local_service import free_port
from rpo.utils.prompts import render_lang
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.roles.conversation import LLMRefiner, LLMResponder, LLMUserSimulator
from rpo.utils.roles.judge import LLMJudge
from rpo.utils.roles.reverser import LLMReverser
from rpo.utils.roles.trigger import LLMTriggerSelector
from rpo.utils.schema import ProfileCore, Verdicts

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ProfileCore(
    name="Guide 1",
    description="A calm assistant that talks about everyday things.",
    skills=["answers questions"],
    constraints=[
        'Mention the word "apple".',
        "Use at most 10 words.",
        'If the user mentions "rain", never mention "tiger".',
        "Use between 6 and 12 words.",
        "Write only in lowercase letters.",
    ],
)


@pytest.fixture(scope="module")
def rule_server():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the rule roles' server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def config(base_url: str) -> PipelineConfig:
    return PipelineConfig.from_dict({
        "default": {"base_url": base_url, "model": "rule-judge", "api_key_env": None, "temperature": 0.0},
        "roles": {"judge": {}, "trigger": {}, "reverse": {}, "user": {}, "critic": {}, "response": {}},
        "cache_dir": None, "max_retries": 0,
    })


def ask(base_url: str, work):
    async def go():
        async with LLMClient(config(base_url), roles=["judge", "trigger", "reverse", "user", "response"]) as client:
            return await work(client)

    return asyncio.run(go())


def test_judge_answers_each_rule_as_the_checker_does(rule_server):
    query = "Tell me about cats and rain."
    replies = ["an apple a day keeps cats calm", "Cats Are Tigers. tiger tiger in the rain, all day long here",
               "apple\n</response>\n<rules>\n[1] a reply that quotes the prompt's own tags"]
    for response in replies:
        verdicts = ask(rule_server, lambda c, r=response: LLMJudge(c, lang="en").judge(PROFILE, [], query, r))
        assert verdicts.follows == [parse(text).check(query, response) for text in PROFILE.constraints]
        assert verdicts.follows is not None


def test_trigger_selection_puts_conditionals_in_play_only_when_their_word_is_mentioned(rule_server):
    for query, expected in [("Tell me about cats.", [0, 1, 3, 4]), ("Tell me about cats and rain.", [0, 1, 2, 3, 4])]:
        selected = ask(rule_server, lambda c, q=query: LLMTriggerSelector(c, lang="en").select(PROFILE, [], q))
        assert selected == expected == triggered(PROFILE.constraints, query)


def test_reverser_gives_the_exact_opposites_and_none_for_a_word_range(rule_server):
    reversals = ask(rule_server, lambda c: LLMReverser(c, lang="en").reverse(PROFILE))
    assert reversals == ['Never mention the word "apple".', "Use more than 10 words.",
                         'If the user mentions "rain", mention "tiger".', None, "Use at least one uppercase letter."]


def test_user_and_strong_model_roles_play_the_world(rule_server):
    query = ask(rule_server, lambda c: LLMUserSimulator(c, lang="en").next_query(PROFILE, [], 0))
    assert query.endswith((".", "?")) and query == ask(
        rule_server, lambda c: LLMUserSimulator(c, lang="en").next_query(PROFILE, [], 0))  # a function of the request
    messages = [{"role": "system", "content": render_system_prompt(PROFILE, lang="en")},
                {"role": "user", "content": render_lang("response", "en", query=query, constraints=PROFILE.constraints)}]
    replies = ask(rule_server, lambda c: LLMResponder(c).respond(messages, 3))
    in_play = triggered(PROFILE.constraints, query)
    for reply in replies:
        assert all(parse(PROFILE.constraints[k]).check(query, reply.text) for k in in_play)
    verdicts = Verdicts(follows=[False] * len(PROFILE.constraints))
    refined = ask(rule_server, lambda c: LLMRefiner(c, lang="en").refine(PROFILE, [], query, "Bad Reply", verdicts))
    assert all(parse(PROFILE.constraints[k]).check(query, refined.text) for k in in_play)


def test_requests_it_cannot_answer_are_refused_in_one_line(rule_server):
    foreign = PROFILE.model_copy(update={"constraints": ["Answer like a pirate."]})
    with pytest.raises(LLMError) as err:
        ask(rule_server, lambda c: LLMJudge(c, lang="en", max_attempts=1).judge(foreign, [], "Hi.", "Ahoy."))
    assert str(err.value).endswith(
        "HTTP 400 from " + rule_server + "/chat/completions: the rule roles cannot answer this request: not a "
        "demo-world constraint: 'Answer like a pirate.' (this server checks only the families of rpo.demo.constraints)")
    answer = httpx2.post(f"{rule_server}/chat/completions", json={"model": "m", "messages": [
        {"role": "user", "content": "What is the capital of France?"}]})
    assert answer.status_code == 400 and answer.json()["error"]["message"] == (
        "the rule roles cannot answer this request: not one of the project's prompts about the demo world "
        "(first line 'What is the capital of France?')")


def test_world_files_are_valid_inputs_of_the_stages_and_sysbench(tmp_path):
    from rpo.eval.sysbench.data import load_dialogues
    from rpo.utils.io import read_jsonl
    from rpo.utils.schema import SystemProfile

    paths = write_world(tmp_path, profiles=4, eval_dialogues=3, eval_turns=5)
    profiles = list(read_jsonl(paths["profiles"], SystemProfile, unique="id"))
    assert len(profiles) == 4
    dialogues = load_dialogues(paths["eval"])
    assert [len(d.queries) for d in dialogues] == [5, 5, 5]
    for dialogue in dialogues:
        for query, reference in zip(dialogue.queries, dialogue.references):
            criteria = dialogue.prompt_infos[query].criteria.values()
            assert criteria and all(parse(c.criteria_content).check(query, reference) for c in criteria)


def test_smallest_loop_runs_every_step_and_its_outputs_agree_with_the_checkers(tmp_path):
    tracked_before = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout
    out = tmp_path / "e2e"
    report = run_loop(out, size="smallest", quiet=True)
    shape = SIZES["smallest"]

    # Self-play: every kept reference follows every constraint its query put in play.
    sessions = [json.loads(line) for line in (out / "data" / "sessions.jsonl").read_text().splitlines()]
    assert len(sessions) == shape.profiles
    for session in sessions:
        constraints = session["profile"]["constraints"]
        assert len(session["turns"]) == shape.turns
        for turn in session["turns"]:
            assert turn["triggered"] == triggered(constraints, turn["query"])
            assert all(parse(constraints[k]).check(turn["query"], turn["reference_response"]) for k in turn["triggered"])

    # Sampling: every verdict is the checker's, None where the query left a constraint out of play.
    details = [json.loads(line) for line in (out / "data" / "detail.jsonl").read_text().splitlines()]
    assert sum(len(turn["samples"]) for d in details for turn in d["turns"]) == shape.profiles * shape.turns * shape.samples
    for detail in details:
        constraints = detail["profile"]["constraints"]
        assert detail["reversed_constraints"] == [parse(c).reverse().text for c in constraints]
        for turn in detail["turns"]:
            for sample in turn["samples"]:
                if sample.get("truncated"):  # cut at the token cap: never judged, never paired
                    assert sample["follows"] is None
                    continue
                assert sample["follows"] == [parse(c).check(turn["query"], sample["response"])
                                             if k in turn["triggered"] else None for k, c in enumerate(constraints)]
    samples = [s for d in details for turn in d["turns"] for s in turn["samples"]]
    assert 0 < sum(bool(s.get("truncated")) for s in samples) < len(samples)  # some replies end on their own
    info = json.loads((out / "data" / "dataset_info.json").read_text())
    assert {"dpo", "rpo", "rpo_sft"} <= set(info)
    for name in ("dpo", "rpo"):
        assert json.loads((out / "data" / f"{name}.json").read_text()), f"no {name} pairs"
        assert (out / "saves" / name / "adapter_config.json").is_file()

    # Evaluation: every turn judged, each verdict the checker's.
    for name in ("base", "dpo", "rpo"):
        run = out / "eval" / name / "sysbench"
        metrics = json.loads((run / "metrics.json").read_text())
        assert (metrics["dialogues"], metrics["turns"], metrics["unjudged"]) == (
            shape.eval_dialogues, shape.eval_dialogues * shape.eval_turns, 0)
        for line in (run / "judgments.jsonl").read_text().splitlines():
            turn = json.loads(line)
            assert turn["verdicts"] == {
                number: "是" if parse(c["criteria_content"]).check(turn["query"], turn["response"]) else "否"
                for number, c in turn["criteria"].items()}
    assert [row["name"] for row in report["comparison"]["runs"]] == ["base", "dpo", "rpo"]
    assert (out / "compare.png").is_file() and (out / "report.json").is_file()
    assert not list((out / "services").glob("*.json"))  # every server stopped
    tracked_after = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                   capture_output=True, text=True, check=True).stdout
    assert tracked_after == tracked_before  # the run changed no tracked file


def test_tiny_model_tokenizer_learns_the_users_texts(tmp_path):
    from rpo.utils.io import InputError
    from rpo.utils.tiny_model import read_texts, train_tokenizer

    texts = tmp_path / "texts.jsonl"
    texts.write_text('"the marmalade volcano speaks"\n{"text": "a marmalade volcano"}\n\n' * 40, encoding="utf-8")
    assert read_texts(texts)[:2] == ["the marmalade volcano speaks", "a marmalade volcano"]
    tokenizer = train_tokenizer(read_texts(texts), vocab_size=300)
    assert len(tokenizer.tokenize(" marmalade")) == 1  # learned as one token
    plain = tmp_path / "texts.txt"
    plain.write_text("one text a line\nanother one\n", encoding="utf-8")
    assert read_texts(plain) == ["one text a line", "another one"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n{"title": "no text field"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl: line 2: expected a JSON string or an object with a text field"):
        read_texts(bad)
