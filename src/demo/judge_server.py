"""The demo world's rule roles as an OpenAI-compatible server, so the real data stages run offline.

    python -m rpo.demo.judge_server --port 8011 [--host 127.0.0.1]

`POST /v1/chat/completions` reads the project's own prompts (the templates in `rpo/utils/prompts/`,
English) and answers each the way a perfect model of the demo world would, with the world's exact
checkers (`rpo.demo.constraints`):

| request (template) | roles | answer |
| --- | --- | --- |
| `judge`, `verify_reversal` | judge | each rule checked on the reply: `[{"constraint", "reason", "follows"}]` |
| `trigger` | trigger (or judge) | `{"reason", "triggered": [numbers]}`: conditionals whose trigger word the query mentions, and every other rule |
| `reverse` | reverse | each rule's exact opposite, `null` for the non-reversible families |
| `user_query` | user | a seeded query of the world, half of them carrying a trigger word |
| `user_rephrase` | user | the same message with another opening |
| `sysbench_judge` | the SysBench judge | `{"评判理由", "评判结果": {"1": "是" or "否", ...}}` |
| `critic` | critic | the reply rewritten to follow every rule it lists (`rpo.demo.world.ResponseWriter`) |
| a system prompt with `# Constraints` | response (self-play's strong model) | replies that follow every rule (`rpo.demo.world.ResponseWriter`), `n` of them |

Which template a request uses is read from its first user message: its opening line is the
template's own (each template is rendered once at start-up to learn it), so an edited template
stays recognised. A request this server cannot answer, or a rule no demo-world family states,
gets HTTP 400 with one line saying so: the server never guesses. Answers are a function of the
request, so the LLM client's cache and a rerun agree. Usage counts words.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from rpo.demo.constraints import Constraint, parse
from rpo.demo.rules import triggered
from rpo.demo.world import ResponseWriter, make_query
from rpo.utils import cli
from rpo.utils.prompts import render_lang
from rpo.utils.schema import ProfileCore

MODEL_NAME = "rule-judge"
_NUMBERED_RULE = re.compile(r"^\[(\d+)\] (.+)$", re.MULTILINE)
_SYSTEM_RULE = re.compile(r"^\d+\. (.+)$", re.MULTILINE)
_CRITERION = re.compile(r"^(\S+?)\. (.+) \| (.+)$", re.MULTILINE)


class UnanswerableRequest(ValueError):
    """A request that is not one of the project's prompts about the demo world."""


def _opening(stem: str, **variables: Any) -> str:
    return render_lang(stem, "en", **variables).splitlines()[0]


def _openings() -> dict[str, str]:
    """The first line of each template this server answers, as the templates render it now."""
    profile = ProfileCore(name="N", description="D", skills=["S"], constraints=["C"])
    rules = {"constraints": ["C"], "query": "Q", "response": "R"}
    return {
        _opening("judge", **rules, strict=False): "judge",
        _opening("verify_reversal", **rules, originals=["O"]): "verify_reversal",
        _opening("trigger", system_prompt="P", query="Q"): "trigger",
        _opening("reverse", constraints=["C"]): "reverse",
        _opening("user_query", profile=profile, user_profile="U", history=[], turn=0, tones=["T"]): "user_query",
        _opening("user_rephrase", opening="O", query="Q"): "user_rephrase",
        _opening("critic", query="Q", response="R", kept=[], broken=[]): "critic",
        _opening("sysbench_judge", system_prompt="P", history=[], query="Q", response="R",
                 criteria=[{"id": "1", "content": "C", "type": "T"}]): "sysbench_judge",
    }


def _restated_rules_marker() -> str:
    """The line that opens the rules restated after a self-play query (`response` template)."""
    return render_lang("response", "en", query="Q", constraints=["C"]).split("\n\n", 1)[1].splitlines()[0]


def _between(text: str, tag: str, last: bool = False) -> str:
    """The text inside `<tag>` ... `</tag>` (the last such block with `last`)."""
    opener, closer = f"<{tag}>\n", f"\n</{tag}>"
    start = text.rfind(opener) if last else text.find(opener)
    end = text.find(closer, start + len(opener)) if start != -1 else -1
    if start == -1 or end == -1:
        raise UnanswerableRequest(f"the prompt has no <{tag}> block")
    return text[start + len(opener):end]


def _numbered_rules(block: str) -> list[str]:
    return [text for _, text in _NUMBERED_RULE.findall(block)]


def _constraint(text: str) -> Constraint:
    try:
        return parse(text)
    except ValueError:
        raise UnanswerableRequest(
            f"not a demo-world constraint: {text!r} (this server checks only the families of rpo.demo.constraints)"
        ) from None


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()[:8], "big")


def _verdicts(rules: list[str], query: str, response: str) -> list[dict[str, Any]]:
    answer = []
    for text in rules:
        follows = _constraint(text).check(query, response)
        reason = "The reply obeys this rule." if follows else "The reply breaks this rule."
        answer.append({"constraint": text, "reason": reason, "follows": follows})
    return answer


def _judge(prompt: str, n: int) -> list[str]:
    rules = _numbered_rules(_between(prompt, "rules", last=True))
    # The reply may hold any text, tags included: it ends at the last closing tag before the rules.
    head = prompt[:prompt.rfind("<rules>\n")]
    query = _between(head, "query")
    start = head.find("<response>\n", head.find("\n</query>")) + len("<response>\n")
    response = head[start:head.rfind("\n</response>")]
    return [json.dumps(_verdicts(rules, query, response), ensure_ascii=False)] * n


def _system_rules(system_prompt: str) -> list[str]:
    """The numbered rules under a rendered system prompt's `# Constraints` heading."""
    if "# Constraints" not in system_prompt:
        return []
    return _SYSTEM_RULE.findall(system_prompt.split("# Constraints", 1)[1])


def _trigger(prompt: str, n: int) -> list[str]:
    rules = _system_rules(_between(prompt, "system_prompt"))
    for text in rules:
        _constraint(text)
    numbers = [k + 1 for k in triggered(rules, _between(prompt, "query"))]
    answer = {"reason": "A conditional rule is in play when the message mentions its trigger word.",
              "triggered": numbers}
    return [json.dumps(answer)] * n


def _reverse(prompt: str, n: int) -> list[str]:
    rules = _numbered_rules(prompt.split("\nRules:\n", 1)[-1])
    if not rules:
        raise UnanswerableRequest("the reversal prompt lists no rules")
    answer = []
    for index, text in enumerate(rules, start=1):
        opposite = _constraint(text).reverse()
        answer.append({"index": index, "constraint": text, "reversed": opposite.text if opposite else None})
    return [json.dumps(answer, ensure_ascii=False)] * n


def _user_query(prompt: str, n: int) -> list[str]:
    assistant = _between(prompt, "assistant")
    name = assistant.splitlines()[0].removeprefix("Name: ")
    profile = ProfileCore(name=name, constraints=_numbered_rules(assistant))
    for text in profile.constraints:
        _constraint(text)
    return [make_query(random.Random(_seed(prompt, str(i))), profile) for i in range(n)]


def _critic(prompt: str, n: int) -> list[str]:
    """The critic rewrites the reply: a reply that obeys every rule listed, kept and broken alike."""
    listed = prompt.split("\nRules the reply already obeys", 1)[-1]
    rules = [line[2:].split(" (reviewer:", 1)[0] for line in listed.splitlines()
             if line.startswith("- ") and line != "- (none)"]
    return _oracle(rules, _between(prompt, "query"), prompt, n)


def _user_rephrase(prompt: str, n: int) -> list[str]:
    """The same message with another opening."""
    message = _between(prompt, "message").strip()
    return [f"By the way, {message[:1].lower()}{message[1:]}"] * n


def _oracle(rules: list[str], query: str, seed_text: str, n: int) -> list[str]:
    constraints = [_constraint(text) for text in rules]
    return [ResponseWriter(random.Random(_seed(seed_text, str(i)))).write(constraints, query, [True] * len(rules))
            for i in range(n)]


def _sysbench_judge(prompt: str, n: int) -> list[str]:
    turn = prompt.rsplit("# The turn to evaluate", 1)
    if len(turn) != 2:
        raise UnanswerableRequest("the SysBench prompt has no turn to evaluate")
    query, response = _between(turn[1], "user"), _between(turn[1], "assistant")
    verdicts = {}
    for number, content, _kind in _CRITERION.findall(_between(prompt, "criteria", last=True)):
        verdicts[number] = "是" if _constraint(content).check(query, response) else "否"
    if not verdicts:
        raise UnanswerableRequest("the SysBench prompt lists no criteria")
    answer = {"评判理由": "Each criterion checked by its rule.", "评判结果": verdicts}
    return [json.dumps(answer, ensure_ascii=False)] * n


_ANSWERS: dict[str, Callable[[str, int], list[str]]] = {
    "judge": _judge, "verify_reversal": _judge, "trigger": _trigger, "reverse": _reverse,
    "user_query": _user_query, "user_rephrase": _user_rephrase, "critic": _critic,
    "sysbench_judge": _sysbench_judge,
}


class RuleRoles:
    """Answers a chat request's messages as the demo world's rule roles would (see the module docstring)."""

    def __init__(self) -> None:
        self.openings = _openings()
        self.restated_marker = _restated_rules_marker()

    def kind(self, messages: list[dict[str, Any]]) -> str:
        """Which template the request uses: 'response' for a reply under a system prompt's rules."""
        users = [m for m in messages if m.get("role") == "user"]
        if not users or not isinstance(users[0].get("content"), str):
            raise UnanswerableRequest("the request has no user message with text")
        first_line = users[0]["content"].split("\n", 1)[0]
        if first_line in self.openings:
            return self.openings[first_line]
        system = messages[0].get("content") if messages[0].get("role") == "system" else None
        if isinstance(system, str) and "# Constraints" in system:
            return "response"
        raise UnanswerableRequest(
            f"not one of the project's prompts about the demo world (first line {first_line[:80]!r})"
        )

    def answer(self, messages: list[dict[str, Any]], n: int = 1) -> list[str]:
        """`n` answer texts, or `UnanswerableRequest` saying why there are none."""
        kind = self.kind(messages)
        if kind == "response":
            return self._respond(messages, n)
        first_user = next(m["content"] for m in messages if m.get("role") == "user")
        return _ANSWERS[kind](first_user, n)

    def _respond(self, messages: list[dict[str, Any]], n: int) -> list[str]:
        """A reply obeying every rule of the system prompt, to the query the last user message asks
        (without the rules that self-play restates after it)."""
        rules = _system_rules(messages[0]["content"])
        last = messages[-1].get("content") if messages[-1].get("role") == "user" else None
        if not isinstance(last, str):
            raise UnanswerableRequest("the request does not end with a user message")
        query = last.split(f"\n\n{self.restated_marker}", 1)[0]
        return _oracle(rules, query, json.dumps(messages, ensure_ascii=False), n)


def completion(texts: list[str], model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """An OpenAI chat completion holding `texts`; usage counts words."""
    prompt_words = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion_words = sum(len(text.split()) for text in texts)
    return {
        "id": f"rule-{_seed(*texts):016x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    for i, text in enumerate(texts)],
        "usage": {"prompt_tokens": prompt_words, "completion_tokens": completion_words,
                  "total_tokens": prompt_words + completion_words},
    }


def create_app() -> FastAPI:
    """The FastAPI app: `POST /v1/chat/completions`, `GET /v1/models`."""
    roles = RuleRoles()
    app = FastAPI(title="RPO demo rule roles")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "rpo"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the request body is not JSON")
        messages, n = body.get("messages") if isinstance(body, dict) else None, body.get("n") or 1
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return error(400, "messages: expected a non-empty list of messages")
        if not isinstance(n, int) or n < 1:
            return error(400, f"n: expected a positive integer, got {n!r}")
        try:
            texts = roles.answer(messages, n)
        except UnanswerableRequest as err:
            return error(400, f"the rule roles cannot answer this request: {err}")
        return completion(texts, str(body.get("model") or MODEL_NAME), messages)

    return app


def main(port: int = 8011, host: str = "127.0.0.1", log_level: str = "warning") -> None:
    """Serve the rule roles on http://HOST:PORT/v1 until stopped."""
    print(f"rule roles serving on http://{host}:{port}/v1 (model name: any)", flush=True)
    uvicorn.run(create_app(), host=host, port=port, log_level=log_level)


if __name__ == "__main__":
    cli.run(main)
