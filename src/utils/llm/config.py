"""The pipeline config: which endpoint and model serves each LLM role.

One YAML file names every role (profile, user, response, judge, critic, reverse, or any other
name a stage asks for). A `default:` block holds the settings the roles share; each role overrides
what it needs. Keys are never stored here, only the name of the environment variable that holds one.

```yaml
concurrency: 32
default: {base_url: https://api.openai.com/v1, model: gpt-4o-mini, temperature: 0.7}
roles:
  judge: {temperature: 0.0}
  response: {base_url: http://127.0.0.1:8000/v1, model: policy, api_key_env: null}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rpo.utils.io import InputError, describe_validation_error


class RoleConfig(BaseModel):
    """Endpoint, model and sampling settings of one role."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = Field(0.7, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)
    timeout_s: float = Field(120, gt=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    price_per_1k_input: float = Field(0, ge=0)
    price_per_1k_output: float = Field(0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value.rstrip("/") if value else value


class PipelineConfig(BaseModel):
    """Every role plus the client-wide limits: concurrency, retries, cache."""

    model_config = ConfigDict(extra="forbid")

    roles: dict[str, RoleConfig]
    concurrency: int = Field(16, ge=1)
    max_retries: int = Field(6, ge=0)
    retry_base_s: float = Field(1.0, ge=0)
    retry_max_s: float = Field(60.0, ge=0)
    cache_dir: str | None = "cache/llm"
    language: str = "en"

    @classmethod
    def load(cls, path: str | Path) -> PipelineConfig:
        """Read a YAML config, merging `default:` into every role; errors name file and field."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
        try:
            return cls.model_validate({**raw, "roles": merged})
        except ValidationError as err:
            raise InputError(describe_validation_error(err)) from None

    def role(self, name: str) -> RoleConfig:
        """The settings of role `name`; an unknown name lists the configured ones."""
        if name not in self.roles:
            raise InputError(
                f"role {name!r} is not configured; configured roles: {', '.join(sorted(self.roles))}"
            )
        return self.roles[name]
