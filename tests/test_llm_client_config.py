"""Pipeline YAML configs: inheritance from `default:`, and errors that name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from rpo.utils.io import InputError
from rpo.utils.llm.config import PipelineConfig

SHIPPED = sorted((Path(__file__).resolve().parent.parent / "conf" / "pipeline").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_roles_inherit_default_and_override(tmp_path):
    config = PipelineConfig.load(write(tmp_path, """
concurrency: 8
cache_dir: null
default: {base_url: "https://api.example.com/v1/", model: m1, temperature: 0.3, extra_body: {a: 1}}
roles:
  judge: {temperature: 0.0, extra_body: {b: 2}}
  response: {base_url: "http://127.0.0.1:8000/v1", model: local, api_key_env: null}
  critic:
"""))
    assert config.concurrency == 8 and config.cache_dir is None and config.max_retries == 6
    judge, response, critic = config.role("judge"), config.role("response"), config.role("critic")
    assert (judge.base_url, judge.model, judge.temperature) == ("https://api.example.com/v1", "m1", 0.0)
    assert judge.extra_body == {"a": 1, "b": 2}
    assert (response.model, response.api_key_env, response.temperature) == ("local", None, 0.3)
    assert critic.api_key_env == "OPENAI_API_KEY" and critic.max_tokens == 1024


@pytest.mark.parametrize("text, message", [
    ("roles: {judge: {model: m, temperature: -1}}", "field roles.judge.temperature: Input should be greater"),
    ("roles: {judge: {temperature: 0.5}}", "field roles.judge.model: Field required"),
    ("roles: {judge: {model: m, temprature: 0.5}}", "field roles.judge.temprature: Extra inputs"),
    ("roles: {judge: {model: m}}\nconcurency: 3", "field concurency: Extra inputs"),
    ("roles: {judge: {model: m, base_url: 'api.openai.com'}}", "field roles.judge.base_url: Value error"),
    ("roles: {judge: {model: m}}\nconcurrency: 0", "field concurrency: Input should be greater"),
    ("default: {model: m}", "field roles: expected a non-empty mapping"),
    ("roles: {judge: 3}", "field roles.judge: expected a mapping"),
    ("roles: [judge", "invalid YAML"),
    ("- a\n- b", "expected a mapping at the top level"),
])
def test_validation_errors_name_file_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        PipelineConfig.load(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="pipeline.yaml: file not found"):
        PipelineConfig.load(tmp_path / "pipeline.yaml")


def test_unknown_role_lists_configured_roles(tmp_path):
    config = PipelineConfig.load(write(tmp_path, "roles: {judge: {model: m}, user: {model: m}}"))
    with pytest.raises(InputError, match="role 'reverse' is not configured; configured roles: judge, user"):
        config.role("reverse")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_load_with_every_role(path):
    config = PipelineConfig.load(path)
    for role in ("profile", "user", "response", "judge", "critic", "reverse"):
        assert config.role(role).model
    assert config.role("judge").temperature == 0.0


def test_shipped_configs_exist():
    assert {p.name for p in SHIPPED} >= {"openai.yaml", "vllm.yaml", "llamafactory_api.yaml"}
