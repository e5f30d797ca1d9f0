"""One async client for every LLM role of the pipeline.

Why each part is here:
- roles map to OpenAI-compatible endpoints through `PipelineConfig`, so an API model, a local
  `vllm serve` and `llamafactory-cli api` are interchangeable;
- a global semaphore bounds the requests in flight (rate limits, local server capacity);
- 429/5xx/timeouts/connection errors are retried with exponential backoff and jitter (the SDK's own
  retries are off, so nothing retries twice), honouring `Retry-After`;
- every answer is cached on disk under the sha256 of the full request, so a rerun costs no calls;
  a background thread writes the entries (`_CacheWriter`), renamed into place (never half-written)
  but not fsynced: creating files on a busy disk can take milliseconds, which in the event loop
  held up every request in flight; closing the client waits for the writes, and an entry lost or
  torn by a crash is only a miss (a damaged entry is asked again);
- servers that return fewer than `n` choices (no `n` support) are topped up with more requests;
- token counts and cost are tallied per role for the usage table every stage prints;
- requests go out through the SDK's HTTP client (`openai.DefaultAioHttpClient`, its aiohttp
  transport) with the SDK client's headers (auth, user agent, platform) and a prebuilt JSON body,
  and failures come back as the SDK's exception types. The SDK's own request path (`create`, or even
  its low-level `post`: options models, header merging and URL joins on every call, hooks for auth
  providers this client does not use) plus httpx2's `build_request` took half of the client's CPU
  per request (main thread, 64 in flight: ~0.7 ms with `post`, ~0.35 ms now); that CPU, queued in
  one event loop, is what keeps the sustained rate below the ideal (benchmarks/llm_throughput.py).

API keys are read from the environment when a role's first request is made and go only into the
request's Authorization header: never into cache files, outputs, logs or error messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import json
import math
import os
import random
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlparse

import httpx2
import openai
from rpo.utils.io import InputError
from rpo.utils.llm.config import PipelineConfig, RoleConfig

OPENAI_URL = "https://api.openai.com/v1"
CACHE_VERSION = 1
_ROLE_FIELDS = {"model", "temperature", "top_p", "max_tokens", "timeout_s", "extra_body"}


class LLMError(RuntimeError):
    """A request failed for good (retries exhausted, or an error that retrying cannot fix)."""


@dataclass
class ChatResult:
    """The `n` reply texts of one chat request and what they cost in tokens."""

    texts: list[str]
    prompt_tokens: int
    completion_tokens: int
    cached: bool


@dataclass
class _RoleUsage:
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


def is_loopback(base_url: str | None) -> bool:
    """Whether a URL points at this machine (local servers need no real key)."""
    host = urlparse(base_url or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _MalformedResponse(Exception):
    """The server answered 200 with a body that is not a chat completion (e.g. a broken proxy)."""


def _retryable(err: BaseException) -> bool:
    if isinstance(err, openai.APIConnectionError | _MalformedResponse):  # includes APITimeoutError
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code in (408, 409, 429) or err.status_code >= 500
    return False


def _retry_after_s(err: BaseException | None) -> float | None:
    response = getattr(err, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            return None
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _describe(err: BaseException) -> str:
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code} from {err.request.url}"
    if isinstance(err, openai.APIConnectionError):
        root: BaseException = err
        while root.__cause__ is not None or root.__context__ is not None:
            root = root.__cause__ or root.__context__  # type: ignore[assignment]
        what = "timed out" if isinstance(err, openai.APITimeoutError) else "connection failed"
        detail = f" ({type(root).__name__}: {root})" if root is not err and str(root) else ""
        return f"{what}: {err.request.url}{detail}"
    return str(err)


def _parse_completion(response: httpx2.Response, base_url: str) -> tuple[list[str], int, int]:
    """Choice texts and token counts of a chat completion body; anything else is malformed."""
    try:
        data = response.json()
    except ValueError as err:
        raise _MalformedResponse(f"malformed response from {base_url}: {err}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise _MalformedResponse(f"malformed response from {base_url}: no choices")
    try:
        texts = [choice["message"]["content"] or "" for choice in choices]
        usage = data.get("usage") or {}
        return texts, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (KeyError, TypeError, ValueError) as err:
        raise _MalformedResponse(f"malformed response from {base_url}: bad choice or usage ({err!r})") from None


@dataclass
class _Endpoint:
    """One OpenAI-compatible server as seen through the SDK: its client, HTTP client and headers."""

    sdk: openai.AsyncOpenAI  # owns the connection pool
    http: httpx2.AsyncClient  # the SDK's aiohttp-backed HTTP client
    url: httpx2.URL  # .../chat/completions
    headers: httpx2.Headers  # the HTTP client's, then the SDK client's default and auth headers
    timeouts: dict[float, dict[str, float | None]] = field(default_factory=dict)

    async def post(self, payload: bytes, timeout_s: float) -> httpx2.Response:
        """POST a chat completion body; errors are raised as the SDK raises them."""
        # What `http.build_request` would build, from the URL and headers merged once (no cookies:
        # OpenAI-compatible APIs use none).
        timeout = self.timeouts.get(timeout_s)
        if timeout is None:
            timeout = self.timeouts[timeout_s] = httpx2.Timeout(timeout_s).as_dict()
        request = httpx2.Request("POST", self.url, content=payload, headers=self.headers,
                                 extensions={"timeout": timeout})
        try:
            response = await self.http.send(request)
        except httpx2.TimeoutException as err:
            raise openai.APITimeoutError(request=request) from err
        except (httpx2.RequestError, ssl.SSLError) as err:
            raise openai.APIConnectionError(request=request) from err
        if response.status_code >= 400:
            raise _status_error(response)
        return response


def _status_error(response: httpx2.Response) -> openai.APIStatusError:
    """The SDK's error for a 4xx/5xx answer, with the server's message when it sent one."""
    message = f"Error code: {response.status_code}"
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text or None
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message += f" - {error['message']}"
    return openai.APIStatusError(message, response=response, body=body)


class _CacheWriter:
    """Writes cache entries from one background thread; holds them in memory until they are on disk.

    `put` costs the event loop a dict insert (and, when the thread is idle, one hand-off); the
    thread takes whatever has piled up in one go. `get` serves entries still waiting. `close`
    waits for every write and raises the first error a write met (e.g. a full disk); a later
    `put` raises it too.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, dict[str, Any]] = {}  # path -> entry not yet on disk, oldest first
        self._lock = threading.Lock()
        self._busy = False
        self._error: BaseException | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._dirs: set[str] = set()  # directories known to exist
        self._names = itertools.count()

    def get(self, path: str) -> dict[str, Any] | None:
        with self._lock:
            return self._waiting.get(path)

    def put(self, path: str, entry: dict[str, Any]) -> None:
        if self._error is not None:
            raise self._error
        with self._lock:
            self._waiting.pop(path, None)  # re-inserted at the end: written after older entries
            self._waiting[path] = entry
            if self._busy:
                return
            self._busy = True
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-cache")
        self._executor.submit(self._drain)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        if self._error is not None:
            raise self._error

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._waiting or self._error is not None:
                    self._busy = False
                    return
                batch = list(self._waiting.items())
            for path, entry in batch:
                try:
                    self._write(path, entry)
                except BaseException as err:  # noqa: BLE001 - reported by the next put or close
                    self._error = err
                    break
                with self._lock:
                    if self._waiting.get(path) is entry:
                        del self._waiting[path]

    def _write(self, path: str, entry: dict[str, Any]) -> None:
        data = json.dumps(entry, ensure_ascii=False).encode("utf-8")
        directory, name = os.path.split(path)
        if directory not in self._dirs:
            os.makedirs(directory, exist_ok=True)
            self._dirs.add(directory)
        # A name unique to this process and write, renamed over `path`: readers (a concurrent
        # shard, a rerun) see the old entry, the new one, or none, never part of one.
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{next(self._names)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class LLMClient:
    """Chat completions for named roles, with bounded concurrency, retries, caching and usage."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._endpoints: dict[tuple[str, str | None], _Endpoint] = {}
        self._usage: dict[str, _RoleUsage] = {}
        self._n_cap: dict[tuple[str, str], int] = {}
        self._cache_dir = os.fspath(config.cache_dir) if config.cache_dir else None
        self._cache_writer = _CacheWriter()
        self._role_settings: dict[str, dict[str, Any]] = {}  # settings of calls without overrides

    async def chat(self, role: str, messages: list[dict], n: int = 1, **overrides: Any) -> ChatResult:
        """`n` replies from `role` to `messages`; `overrides` replace the role's settings for this call.

        Overrides named like a role setting (temperature, top_p, max_tokens, timeout_s, model,
        extra_body) replace it; any other (stop, seed, response_format, ...) is sent in the body.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if overrides:
            settings = self._settings(self.config.role(role), overrides)
        else:
            settings = self._role_settings.get(role)
            if settings is None:
                settings = self._role_settings[role] = self._settings(self.config.role(role), {})
        usage = self._usage.setdefault(role, _RoleUsage())
        key = self._cache_key(settings["base_url"], {**settings["body"], "messages": messages, "n": n})
        cached = self._cache_read(key)
        if cached is not None:
            usage.cache_hits += 1
            return ChatResult(list(cached["texts"]), cached["prompt_tokens"], cached["completion_tokens"], True)
        result = await self._complete(role, settings, messages, n)
        self._cache_write(key, result)
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
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
        lines = [
            "  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w) for i, (cell, w) in
                      enumerate(zip(row, widths)))
            for row in (header, *rows)
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    async def aclose(self) -> None:
        """Close every HTTP connection pool and wait until every cache entry is written."""
        endpoints, self._endpoints = list(self._endpoints.values()), {}
        try:
            for endpoint in endpoints:
                await endpoint.sdk.close()
        finally:
            self._cache_writer.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- request assembly ------------------------------------------------------------------------

    @staticmethod
    def _settings(role: RoleConfig, overrides: dict[str, Any]) -> dict[str, Any]:
        merged = {**role.model_dump(), **{k: v for k, v in overrides.items() if k in _ROLE_FIELDS}}
        body: dict[str, Any] = {
            "model": merged["model"],
            "temperature": merged["temperature"],
            "max_tokens": merged["max_tokens"],
        }
        if merged["top_p"] is not None:
            body["top_p"] = merged["top_p"]
        body.update(merged["extra_body"])
        body.update({k: v for k, v in overrides.items() if k not in _ROLE_FIELDS})
        return {
            "base_url": role.base_url or OPENAI_URL,
            "api_key_env": role.api_key_env,
            "timeout_s": merged["timeout_s"],
            "price": (role.price_per_1k_input, role.price_per_1k_output),
            "body": body,
        }

    def _endpoint(self, base_url: str, api_key_env: str | None) -> _Endpoint:
        endpoint = self._endpoints.get((base_url, api_key_env))
        if endpoint is None:
            api_key = os.environ.get(api_key_env) if api_key_env else None
            if not api_key:
                if api_key_env and not is_loopback(base_url):
                    raise InputError(
                        f"environment variable {api_key_env} is not set (needed for {base_url})"
                    )
                api_key = "EMPTY"
            limits = httpx2.Limits(
                max_connections=self.config.concurrency, max_keepalive_connections=self.config.concurrency
            )
            http = openai.DefaultAioHttpClient(limits=limits)
            sdk = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, http_client=http)
            headers = httpx2.Headers(http.headers)
            headers.update({k: v for k, v in {**sdk.default_headers, **sdk.auth_headers}.items() if isinstance(v, str)})
            url = httpx2.URL(f"{str(sdk.base_url).rstrip('/')}/chat/completions")
            endpoint = self._endpoints[(base_url, api_key_env)] = _Endpoint(sdk, http, url, headers)
        return endpoint

    # -- calls -----------------------------------------------------------------------------------

    async def _complete(self, role: str, settings: dict[str, Any], messages: list[dict], n: int) -> ChatResult:
        """Ask for `n` choices; top up with further requests when the server returns fewer."""
        cap_key = (settings["base_url"], settings["body"]["model"])
        texts: list[str] = []
        prompt_tokens = completion_tokens = 0
        batches = [n]
        while batches:
            if len(batches) == 1:  # the usual case: no task to spawn
                answers = [await self._request(role, settings, messages, batches[0])]
            else:
                answers = await asyncio.gather(*(self._request(role, settings, messages, k) for k in batches))
            for asked, (got, p_tok, c_tok) in zip(batches, answers):
                texts.extend(got)
                prompt_tokens += p_tok
                completion_tokens += c_tok
                if len(got) < asked:
                    self._n_cap[cap_key] = min(self._n_cap.get(cap_key, asked), len(got))
            missing = n - len(texts)
            if missing <= 0:
                break
            cap = self._n_cap.get(cap_key, missing)
            batches = [min(cap, missing - i * cap) for i in range(math.ceil(missing / cap))]
        return ChatResult(texts[:n], prompt_tokens, completion_tokens, False)

    async def _request(
        self, role: str, settings: dict[str, Any], messages: list[dict], n: int
    ) -> tuple[list[str], int, int]:
        """One HTTP request (retried), returning its choice texts and token counts."""
        endpoint = self._endpoint(settings["base_url"], settings["api_key_env"])
        usage = self._usage[role]
        payload = json.dumps({**settings["body"], "messages": messages, "n": n}, ensure_ascii=False).encode()
        attempt = 1
        while True:
            try:
                async with self._semaphore:
                    response = await endpoint.post(payload, settings["timeout_s"])
                texts, p_tok, c_tok = _parse_completion(response, settings["base_url"])
                break
            except (openai.OpenAIError, _MalformedResponse) as err:
                if not _retryable(err) or attempt > self.config.max_retries:
                    verdict = f"gave up after {attempt} attempts" if _retryable(err) else "failed"
                    raise LLMError(
                        f"role {role!r} ({settings['body']['model']}): {verdict}: {_describe(err)}"
                    ) from err
                usage.retries += 1
                delay = self._backoff_s(attempt, err)
            await asyncio.sleep(delay)
            attempt += 1
        usage.calls += 1
        usage.prompt_tokens += p_tok
        usage.completion_tokens += c_tok
        usage.cost += (p_tok * settings["price"][0] + c_tok * settings["price"][1]) / 1000
        return texts, p_tok, c_tok

    def _backoff_s(self, attempt: int, err: BaseException) -> float:
        """Exponential backoff with jitter after failed attempt `attempt`, or the server's Retry-After."""
        config = self.config
        backoff = min(config.retry_max_s, config.retry_base_s * 2 ** (attempt - 1))
        jittered = backoff * (0.5 + random.random() / 2)
        return min(config.retry_max_s, max(jittered, _retry_after_s(err) or 0.0))

    # -- cache -----------------------------------------------------------------------------------

    @staticmethod
    def _cache_key(base_url: str, request: dict[str, Any]) -> str:
        blob = json.dumps({"v": CACHE_VERSION, "base_url": base_url, **request}, sort_keys=True,
                          ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> str | None:
        return os.path.join(self._cache_dir, key[:2], f"{key}.json") if self._cache_dir else None

    def _cache_read(self, key: str) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if path is None:
            return None
        entry = self._cache_writer.get(path)
        if entry is not None:
            return entry
        try:
            with open(path, "rb") as fh:
                entry = json.loads(fh.read())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            entry = None
        if not isinstance(entry, dict) or not {"texts", "prompt_tokens", "completion_tokens"} <= entry.keys():
            return None  # a damaged entry is simply asked again and rewritten
        return entry

    def _cache_write(self, key: str, result: ChatResult) -> None:
        path = self._cache_path(key)
        if path is not None:
            self._cache_writer.put(path, {"texts": list(result.texts), "prompt_tokens": result.prompt_tokens,
                                          "completion_tokens": result.completion_tokens})
