"""The pipeline config: which endpoint and model serves each LLM role.

One YAML file names the roles (profile, user, response, judge, critic, reverse, or any other
name a stage asks for). A `default:` block holds the settings the roles share; each listed role
overrides what it needs, and a role the file does not list gets the `default:` settings as they
are, so a stage that asks for a role nobody thought to list still runs. Keys are never stored
here, only the name of the environment variable that holds one.

```yaml
concurrency: 32
default: {base_url: https://api.openai.com/v1, model: gpt-4o-mini, temperature: 0.7}
roles:
  judge: {temperature: 0.0}
  response: {base_url: [http://127.0.0.1:8000/v1, http://127.0.0.1:8001/v1], model: policy, api_key_env: null}
```

A list of URLs spreads a role's requests over several servers that serve the same model (e.g. one
`vllm serve` per GPU).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rpo.utils.io import InputError, describe_validation_error, read_text


class RoleConfig(BaseModel):
    """Endpoint(s), model and sampling settings of one role."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | list[str] | None = None
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = Field(0.7, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(1024, ge=1)  # null: no cap (the server's own limit)
    timeout_s: float = Field(120, gt=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    price_per_1k_input: float = Field(0, ge=0)
    price_per_1k_output: float = Field(0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _http_urls(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is None:
            return None
        urls = [value] if isinstance(value, str) else value
        if not urls:
            raise ValueError("expected an http(s) URL or a non-empty list of them, got []")
        for url in urls:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or " " in url:
                raise ValueError(f"expected an http(s) URL such as https://api.openai.com/v1, got {url!r}")
        cleaned = [url.rstrip("/") for url in urls]
        if len(set(cleaned)) != len(cleaned):
            raise ValueError(f"the same URL is listed twice in {cleaned}")
        return cleaned[0] if isinstance(value, str) else cleaned

    @property
    def base_urls(self) -> list[str] | None:
        """The role's endpoints as a list (None: the OpenAI API)."""
        if self.base_url is None:
            return None
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


class SamplingRefinement(BaseModel):
    """The sampling stage's refinement (the authors' scheme): when the best of a turn's samples
    follows less than `threshold` of its triggered constraints, the `critic` role rewrites the best
    so far up to `rounds` times and the rewrites join the pool pairs are drawn from."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.7, gt=0, le=1)
    rounds: int = Field(3, ge=1)


class PipelineConfig(BaseModel):
    """Every role plus the client-wide limits: concurrency, retries, cache."""

    model_config = ConfigDict(extra="forbid")

    roles: dict[str, RoleConfig]
    default: RoleConfig | None = None  # what an unlisted role gets; None when `default:` names no model
    concurrency: int = Field(16, ge=1)
    max_retries: int = Field(6, ge=0)
    retry_base_s: float = Field(1.0, ge=0)
    retry_max_s: float = Field(60.0, ge=0)
    cache_dir: str | None = "cache/llm"
    log_requests: bool = False  # store each request beside its answer in the cache (to audit the judge)
    language: Literal["en", "zh"] = "en"
    sampling_refinement: SamplingRefinement | None = None  # off unless the file sets it

    @classmethod
    def load(cls, path: str | Path) -> PipelineConfig:
        """Read a YAML config, merging `default:` into every role; errors name file and field."""
        path = Path(path)
        text = read_text(path)  # a missing file or a bad byte: one line naming the file
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise InputError(f"{path}: invalid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(raw, dict):
            raise InputError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
        try:
            return cls.from_dict(raw)
        except InputError as err:
            raise InputError(f"{path}: {err}") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PipelineConfig:
        """Validate a config mapping (the parsed YAML), merging `default:` into every role."""
        raw = dict(raw)
        default = raw.pop("default", None) or {}
        roles = raw.get("roles")
        if not isinstance(default, dict):
            raise InputError(f"field default: expected a mapping, got {type(default).__name__}")
        if not isinstance(roles, dict) or not roles:
            raise InputError("field roles: expected a non-empty mapping of role name to settings")
        merged: dict[str, Any] = {}
        for name, settings in roles.items():
            if settings is not None and not isinstance(settings, dict):
                raise InputError(f"field roles.{name}: expected a mapping, got {type(settings).__name__}")
            role = {**default, **(settings or {})}
            bodies = [default.get("extra_body"), (settings or {}).get("extra_body")]
            if all(isinstance(body, dict | None) for body in bodies):
                role["extra_body"] = {k: v for body in bodies for k, v in (body or {}).items()}
            merged[name] = role
        # Validated with the roles, so that an error in `default:` is reported where it first bites.
        fallback = {"default": default} if "model" in default else {}
        try:
            return cls.model_validate({**raw, "roles": merged, **fallback})
        except ValidationError as err:
            raise InputError(_describe(err)) from None

    def role(self, name: str) -> RoleConfig:
        """The settings of role `name`: listed, else `default:`; with neither, the configured names."""
        if name in self.roles:
            return self.roles[name]
        if self.default is not None:
            return self.default
        raise InputError(
            f"role {name!r} is not configured; configured roles: {', '.join(sorted(self.roles))}"
        )


def _describe(err: ValidationError) -> str:
    """The first validation error as one line; a misspelt key also gets the nearest valid name."""
    message = describe_validation_error(err)
    first = err.errors()[0]
    if first["type"] != "extra_forbidden":
        return message
    location = [part for part in first["loc"] if isinstance(part, str)]
    at_role_level = len(location) >= 2 and location[0] in ("roles", "default")
    valid = RoleConfig.model_fields if at_role_level else PipelineConfig.model_fields
    nearest = difflib.get_close_matches(location[-1], valid, n=1, cutoff=0.6)
    return f"{message} (did you mean {nearest[0]!r}?)" if nearest else message
