"""One async client for every LLM role of the pipeline.

Why each part is here:
- roles map to OpenAI-compatible endpoints through `PipelineConfig`, so an API model, a local
  `vllm serve` and `llamafactory-cli api` are interchangeable; a role with several URLs sends each
  request to the one with the fewest requests in flight, so sampling spreads over every server;
- requests go through the SDK, on its aiohttp HTTP client (`openai.DefaultAioHttpClient`), which
  holds up best with many requests in flight, by its documented request method for a body the
  caller builds, `AsyncOpenAI.post("/chat/completions", body=..., cast_to=ChatCompletion)` (the
  SDK README's "custom requests"): the same transport, errors and response parsing as
  `chat.completions.create`, without its walk of every message through the SDK's message types,
  which costs about 0.55 ms of CPU per five-turn request and held evaluation runs back (numbers in
  the README); the body sent is exactly the one the cache key is computed from;
- before a role's first request (or at construction, for the `roles` a run names) its key and its
  hosts are checked: a missing key names the role and the variable, a host that does not resolve
  is refused at once instead of being retried;
- a global semaphore bounds the requests in flight (rate limits, local server capacity);
- 429/5xx/timeouts/connection errors and answers that are not a chat completion are retried by
  `tenacity` with exponential backoff and jitter, honouring `Retry-After` (the SDK's own retries
  are off, so nothing retries twice, and every retry is counted and logged);
- every answer is cached on disk under the hash of the full request (`ResponseCache`), so a rerun
  costs no calls; with `log_requests` the entry also holds the request, to audit what a judge saw;
  a caller that can tell a usable answer (`accept`) caches only those, so asking again asks anew;
- servers that return fewer than `n` choices (no `n` support) are topped up with more requests;
- token counts and cost are tallied per role for the usage table every stage prints;
- an answer holding text that UTF-8 cannot encode (a lone surrogate) has it replaced by U+FFFD, so
  the stages that write it out never crash on it.

API keys are read from the environment by the SDK's key provider at each request and go only into
the request's Authorization header. Every message the client raises or logs is scrubbed of them,
since a server may echo the header back in its error body; the scrub runs before a long message is
cut short, and any run of a key's first 8 or more characters is masked as well. A request that fails for good raises
`LLMError` with one line naming the role, model, endpoint and cause, so a stage can record the item
as failed and go on.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import json
import logging
import math
import os
import re
import socket
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlparse

import httpx2
import openai
import tenacity
from openai.types.chat import ChatCompletion
from rpo.utils.io import InputError
from rpo.utils.llm.cache import ResponseCache
from rpo.utils.llm.config import PipelineConfig, RoleConfig
from rpo.utils.text_table import table

OPENAI_URL = "https://api.openai.com/v1"
_ROLE_FIELDS = {"model", "temperature", "top_p", "max_tokens", "timeout_s", "extra_body"}
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;)\]}]+")
_MESSAGE_CHARS = 300  # of a server's error message, in LLMError text
_KEY_PREFIX_CHARS = 8  # a run of this many leading characters of a key is masked wherever it appears
log = logging.getLogger(__name__)


class LLMError(RuntimeError):
    """A request failed for good (retries exhausted, or an error that retrying cannot fix)."""


@dataclass
class ChatResult:
    """The `n` reply texts of one chat request, what they cost in tokens, and why each ended.

    `finish_reasons[i]` is the server's `finish_reason` for `texts[i]` ("stop", "length" when the
    token cap cut it off, ...); None where the server sent none or the answer came from a cache
    entry written before reasons were kept.
    """

    texts: list[str]
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    finish_reasons: list[str | None] = field(default_factory=list)

    def truncated(self, index: int) -> bool:
        """Whether choice `index` was cut off by the token cap (`finish_reason: length`)."""
        return index < len(self.finish_reasons) and self.finish_reasons[index] == "length"


@dataclass
class _RoleUsage:
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


@dataclass
class _Endpoint:
    """One server: its SDK client, and how many of this client's requests it is answering."""

    url: str
    sdk: openai.AsyncOpenAI
    in_flight: int = 0


@dataclass
class _Plan:
    """How a role's requests are made: endpoints, the JSON body's settings, limits and prices."""

    role: str
    urls: list[str]
    api_key_env: str | None
    body: dict[str, Any]  # the request's JSON body without messages and n: also what the cache key holds
    timeout_s: float
    price: tuple[float, float]

    @property
    def model(self) -> str:
        return self.body["model"]

    @property
    def cache_endpoint(self) -> str | list[str]:
        """The endpoint as the cache key names it: the URL, or a pool's URLs in sorted order, since
        any of them may answer and a reordered list must still find its answers."""
        return self.urls[0] if len(self.urls) == 1 else sorted(self.urls)


class _MalformedResponse(Exception):
    """The server answered 200 with a body that is not a chat completion (e.g. a broken proxy)."""


def _is_loopback(base_url: str) -> bool:
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_key(role: str, url: str, api_key_env: str | None) -> None:
    if api_key_env and not os.environ.get(api_key_env) and not _is_loopback(url):
        raise InputError(
            f"role {role!r}: environment variable {api_key_env} is not set (needed for {url}); export it, "
            "or point the role at a local server"
        )


@functools.lru_cache(maxsize=64)
def _host_problem(host: str, port: int) -> str | None:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        return err.strerror or str(err)
    return None


def _check_host(role: str, url: str) -> None:
    """A host name that does not resolve is refused at once: no retries can make it resolve."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if _is_loopback(url):
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return  # a proxy resolves the name, not this machine
    problem = _host_problem(host, parsed.port or (443 if parsed.scheme == "https" else 80))
    if problem:
        raise InputError(f"role {role!r}: the host of {url} does not resolve ({problem}); check base_url")


def _retryable(err: BaseException) -> bool:
    if _unresolvable(err):
        return False
    if isinstance(err, openai.APIConnectionError | _MalformedResponse):  # includes APITimeoutError
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code in (408, 409, 429) or err.status_code >= 500
    return False


def _retry_after_s(err: BaseException | None) -> float | None:
    """The server's `Retry-After` (or `retry-after-ms`) in seconds, when it sent one."""
    if not isinstance(err, openai.APIStatusError):
        return None
    headers = err.response.headers
    for name, scale in (("retry-after-ms", 1000), ("retry-after", 1)):
        try:
            return float(headers[name]) / scale
        except (KeyError, ValueError):
            continue
    return None


def _one_line(text: str, limit: int = _MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _root_cause(err: BaseException) -> BaseException:
    root = err
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    return root


def _unresolvable(err: BaseException) -> bool:
    """Whether a connection failed because the host name does not resolve (retrying cannot help)."""
    return isinstance(err, openai.APIConnectionError) and isinstance(_root_cause(err), socket.gaierror)


def _describe(err: BaseException, scrub: Callable[[str], str]) -> str:
    """What went wrong, on one line, naming the URL asked. Server text is scrubbed with `scrub`
    before it is cut short, so that a cut never leaves part of a key that the scrub would have caught."""
    if isinstance(err, openai.APIStatusError):
        body = err.body.get("error", err.body) if isinstance(err.body, dict) else err.body
        message = body.get("message") if isinstance(body, dict) else body
        detail = f": {_one_line(scrub(str(message)))}" if message else ""
        return f"HTTP {err.status_code} from {err.request.url}{detail}"
    if isinstance(err, openai.APIConnectionError):
        root = _root_cause(err)
        what = "timed out" if isinstance(err, openai.APITimeoutError) else "connection failed"
        if _unresolvable(err):
            what = "host name does not resolve"
        detail = f" ({type(root).__name__}: {_one_line(scrub(str(root)))})" if root is not err and str(root) else ""
        return f"{what}: {err.request.url}{detail}"
    return _one_line(scrub(str(err)))


def _mask_prefixes(text: str, secret: str) -> str:
    """`text` with every run of at least `_KEY_PREFIX_CHARS` leading characters of `secret` masked."""
    head = secret[:_KEY_PREFIX_CHARS]
    start = text.find(head)
    while start != -1:
        end = start + _KEY_PREFIX_CHARS
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        text = text[:start] + "***" + text[end:]
        start = text.find(head, start + 3)
    return text


def _safe_text(text: str) -> str:
    """`text` with every lone surrogate (which UTF-8 cannot encode) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _parse(completion: Any, url: str) -> tuple[list[str], int, int, list[str | None]]:
    """Choice texts, token counts and finish reasons of a chat completion; anything else is malformed."""
    choices = getattr(completion, "choices", None) if isinstance(completion, ChatCompletion) else None
    if not isinstance(choices, list) or not choices:
        raise _MalformedResponse(f"malformed response from {url}: no choices")
    try:
        texts = [_safe_text(choice.message.content or "") for choice in choices]
        finish_reasons = [getattr(choice, "finish_reason", None) for choice in choices]
        usage = completion.usage
        prompt_tokens = int(usage.prompt_tokens or 0) if usage else 0
        completion_tokens = int(usage.completion_tokens or 0) if usage else 0
    except (AttributeError, TypeError, ValueError) as err:
        raise _MalformedResponse(f"malformed response from {url}: bad choice or usage ({err!r})") from None
    return texts, prompt_tokens, completion_tokens, finish_reasons


class LLMClient:
    """Chat completions for named roles, with bounded concurrency, retries, caching and usage."""

    def __init__(self, config: PipelineConfig, roles: Iterable[str] = ()):
        """`roles`: the roles the run will use, checked now (see `check_roles`); any other role is
        checked before its first request."""
        self.config = config
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._endpoints: dict[tuple[str, str | None], _Endpoint] = {}
        self._usage: dict[str, _RoleUsage] = {}
        self._n_cap: dict[tuple[str, ...], int] = {}
        self._cache = ResponseCache(config.cache_dir) if config.cache_dir else None
        self._plans: dict[str, _Plan] = {}  # per role, for calls without overrides
        self._secrets: set[str] = set()  # every key read, scrubbed from messages
        self._turn = itertools.count()  # breaks ties between equally busy endpoints
        self._backoff = tenacity.wait_random_exponential(multiplier=config.retry_base_s, max=config.retry_max_s)
        self._checked: set[str] = set()  # roles whose endpoints and keys were checked
        self.check_roles(roles)

    def check_roles(self, roles: Iterable[str]) -> None:
        """Before any call: every role is configured, has its API key in the environment (unless its
        endpoints are on this machine), and names hosts that resolve; else `InputError`, one line
        naming the role and the variable or host. Checking up front means a run does not stop
        halfway, after the model has answered, for want of the judge's key."""
        for role in roles:
            if role in self._checked:
                continue
            settings = self.config.role(role)
            for url in settings.base_urls or [OPENAI_URL]:
                _check_key(role, url, settings.api_key_env)
                _check_host(role, url)
            self._checked.add(role)

    async def chat(self, role: str, messages: list[dict], n: int = 1,
                   accept: Callable[[ChatResult], bool] | None = None, **overrides: Any) -> ChatResult:
        """`n` replies from `role` to `messages`; `overrides` replace the role's settings for this call.

        With `accept`, only a result it accepts is cached or taken from the cache: an unusable
        answer is returned once and asked again by the next identical call.

        Overrides named like a role setting (temperature, top_p, max_tokens, timeout_s, model,
        extra_body) replace it; any other (stop, seed, response_format, ...) is passed to
        `chat.completions.create` as it is.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if overrides:
            plan = self._plan(role, self.config.role(role), overrides)
        else:
            plan = self._plans.get(role)
            if plan is None:
                plan = self._plans[role] = self._plan(role, self.config.role(role), {})
        usage = self._usage.setdefault(role, _RoleUsage())
        if self._cache is None:
            return await self._complete(plan, messages, n)
        request = {**plan.body, "messages": messages, "n": n}
        key = ResponseCache.key({"base_url": plan.cache_endpoint, **request})
        entry = self._cache.get(key)
        if entry is not None:
            reasons = list(entry.get("finish_reasons") or [])  # empty for entries cached before reasons were kept
            cached = ChatResult(list(entry["texts"]), entry["prompt_tokens"], entry["completion_tokens"], True, reasons)
            if accept is None or accept(cached):
                usage.cache_hits += 1
                return cached
        result = await self._complete(plan, messages, n)
        if accept is not None and not accept(result):
            return result
        entry = {"texts": result.texts, "prompt_tokens": result.prompt_tokens,
                 "completion_tokens": result.completion_tokens, "finish_reasons": result.finish_reasons}
        if self.config.log_requests:
            entry["request"] = request
        self._cache.put(key, entry)
        return result

    def usage(self) -> dict[str, dict]:
        """Per role: calls (requests answered), cache hits, retries, tokens and cost."""
        return {role: dict(vars(u)) for role, u in sorted(self._usage.items())}

    def usage_table(self) -> str:
        """A fixed-width usage table with a total row, for the end of every stage."""
        header = ("role", "calls", "cache_hits", "retries", "prompt_tok", "completion_tok", "cost_usd")
        rows = [
            (role, u["calls"], u["cache_hits"], u["retries"], u["prompt_tokens"], u["completion_tokens"],
             f"{u['cost']:.4f}")
            for role, u in self.usage().items()
        ]
        totals = [sum(row[i] for row in rows) for i in range(1, 6)]
        rows.append(("total", *totals, f"{sum(u['cost'] for u in self.usage().values()):.4f}"))
        return table(header, rows)

    async def aclose(self) -> None:
        """Close every HTTP connection pool."""
        endpoints, self._endpoints = list(self._endpoints.values()), {}
        for endpoint in endpoints:
            await endpoint.sdk.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- request assembly ------------------------------------------------------------------------

    @staticmethod
    def _plan(role_name: str, role: RoleConfig, overrides: dict[str, Any]) -> _Plan:
        merged = {**role.model_dump(), **{k: v for k, v in overrides.items() if k in _ROLE_FIELDS}}
        settings: dict[str, Any] = {"model": merged["model"], "temperature": merged["temperature"]}
        if merged["max_tokens"] is not None:  # None: no cap, the server's own limit
            settings["max_tokens"] = merged["max_tokens"]
        if merged["top_p"] is not None:
            settings["top_p"] = merged["top_p"]
        passed = {k: v for k, v in overrides.items() if k not in _ROLE_FIELDS}
        return _Plan(
            role=role_name,
            urls=role.base_urls or [OPENAI_URL],
            api_key_env=role.api_key_env,
            body={**settings, **merged["extra_body"], **passed},
            timeout_s=merged["timeout_s"],
            price=(role.price_per_1k_input, role.price_per_1k_output),
        )

    def _endpoint(self, url: str, api_key_env: str | None) -> _Endpoint:
        endpoint = self._endpoints.get((url, api_key_env))
        if endpoint is None:
            limits = httpx2.Limits(max_connections=self.config.concurrency,
                                   max_keepalive_connections=self.config.concurrency)
            sdk = openai.AsyncOpenAI(api_key=self._key_provider(url, api_key_env), base_url=url, max_retries=0,
                                     http_client=openai.DefaultAioHttpClient(limits=limits))
            endpoint = self._endpoints[(url, api_key_env)] = _Endpoint(url, sdk)
        return endpoint

    def _key_provider(self, url: str, api_key_env: str | None) -> Callable[[], Awaitable[str]]:
        """The SDK's key provider for `url`: reads the variable when each request is made."""

        async def read_key() -> str:
            key = os.environ.get(api_key_env) if api_key_env else None
            if key:
                self._secrets.add(key)
                return key
            if api_key_env and not _is_loopback(url):
                raise InputError(f"environment variable {api_key_env} is not set (needed for {url})")
            return "EMPTY"  # local servers take any key

        return read_key

    def _pick(self, plan: _Plan) -> _Endpoint:
        """The role's endpoint with the fewest requests in flight (in turn when they tie)."""
        endpoints = [self._endpoint(url, plan.api_key_env) for url in plan.urls]
        if len(endpoints) == 1:
            return endpoints[0]
        start = next(self._turn) % len(endpoints)
        return min(endpoints[start:] + endpoints[:start], key=lambda endpoint: endpoint.in_flight)

    def _scrub(self, text: str) -> str:
        """`text` with every API key this client has read, and any bearer token, masked.

        Any run of a key's first characters (at least `_KEY_PREFIX_CHARS`) is masked too, so that a
        key cut short by a server or a proxy before it reached us is not left half readable.
        """
        for secret in self._secrets:
            text = text.replace(secret, "***")
            if len(secret) >= _KEY_PREFIX_CHARS:
                text = _mask_prefixes(text, secret)
        return _BEARER.sub(r"\1***", text)

    # -- calls -----------------------------------------------------------------------------------

    async def _complete(self, plan: _Plan, messages: list[dict], n: int) -> ChatResult:
        """Ask for `n` choices; top up with further requests when the server returns fewer."""
        if plan.role not in self._checked:
            self.check_roles([plan.role])
        cap_key = (*plan.urls, plan.model)
        texts: list[str] = []
        finish_reasons: list[str | None] = []
        prompt_tokens = completion_tokens = 0
        batches = [n]
        while batches:
            if len(batches) == 1:  # the usual case: no task to spawn
                answers = [await self._request(plan, messages, batches[0])]
            else:
                answers = await asyncio.gather(*(self._request(plan, messages, k) for k in batches))
            for asked, (got, p_tok, c_tok, reasons) in zip(batches, answers):
                texts.extend(got)
                finish_reasons.extend(reasons)
                prompt_tokens += p_tok
                completion_tokens += c_tok
                if len(got) < asked:
                    self._n_cap[cap_key] = min(self._n_cap.get(cap_key, asked), len(got))
            missing = n - len(texts)
            if missing <= 0:
                break
            cap = self._n_cap.get(cap_key, missing)
            batches = [min(cap, missing - i * cap) for i in range(math.ceil(missing / cap))]
        return ChatResult(texts[:n], prompt_tokens, completion_tokens, False, finish_reasons[:n])

    async def _request(self, plan: _Plan, messages: list[dict], n: int
                       ) -> tuple[list[str], int, int, list[str | None]]:
        """One request, retried; its choice texts, token counts and finish reasons, or LLMError."""
        usage = self._usage[plan.role]
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.config.max_retries + 1),
            wait=self._wait_s,
            retry=tenacity.retry_if_exception(_retryable),
            before_sleep=lambda state: self._note_retry(plan, state),
            reraise=True,
        )
        failure: str | None = None
        try:
            texts, p_tok, c_tok, reasons = await retrying(self._attempt, plan, messages, n)
        except (openai.OpenAIError, _MalformedResponse) as err:
            attempts = retrying.statistics.get("attempt_number", 1)
            verdict = f"gave up after {attempts} attempt{'s' * (attempts != 1)}" if _retryable(err) else "failed"
            failure = self._scrub(f"role {plan.role!r} ({plan.model}): {verdict}: {_describe(err, self._scrub)}")
        if failure is not None:
            raise LLMError(failure)  # raised outside the handler: no chained error repeats the server's text
        usage.calls += 1
        usage.prompt_tokens += p_tok
        usage.completion_tokens += c_tok
        usage.cost += (p_tok * plan.price[0] + c_tok * plan.price[1]) / 1000
        return texts, p_tok, c_tok, reasons

    async def _attempt(self, plan: _Plan, messages: list[dict], n: int
                       ) -> tuple[list[str], int, int, list[str | None]]:
        async with self._semaphore:
            endpoint = self._pick(plan)
            endpoint.in_flight += 1
            try:
                completion = await endpoint.sdk.post(
                    "/chat/completions",
                    cast_to=ChatCompletion,
                    body={**plan.body, "messages": messages, "n": n},
                    options={"timeout": plan.timeout_s},
                )
            except json.JSONDecodeError as err:
                raise _MalformedResponse(f"malformed response from {endpoint.url}: {err}") from None
            finally:
                endpoint.in_flight -= 1
        return _parse(completion, endpoint.url)

    def _wait_s(self, state: tenacity.RetryCallState) -> float:
        """Exponential backoff with jitter, or the server's Retry-After when that is longer."""
        retry_after = _retry_after_s(state.outcome.exception() if state.outcome else None)
        return min(self.config.retry_max_s, max(self._backoff(state), retry_after or 0.0))

    def _note_retry(self, plan: _Plan, state: tenacity.RetryCallState) -> None:
        self._usage[plan.role].retries += 1
        err = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.info(self._scrub(f"role {plan.role!r} ({plan.model}): attempt {state.attempt_number} failed "
                             f"({_describe(err, self._scrub) if err else 'no answer'}); retrying in {delay:.2f} s"))
