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
    ("roles: {judge: {model: m, temprature: 0.5}}",
     "field roles.judge.temprature: Extra inputs are not permitted (did you mean 'temperature'?)"),
    ("roles: {judge: {model: m}}\nconcurency: 3",
     "field concurency: Extra inputs are not permitted (did you mean 'concurrency'?)"),
    ("default: {model: m, max_token: 5}\nroles: {judge: {}}",
     "field roles.judge.max_token: Extra inputs are not permitted (did you mean 'max_tokens'?)"),
    ("roles: {judge: {model: m, colour: red}}", "field roles.judge.colour: Extra inputs are not permitted"),
    ("roles: {judge: {model: m, base_url: 'api.openai.com'}}",
     "field roles.judge.base_url: Value error, expected an http(s) URL such as https://api.openai.com/v1, "
     "got 'api.openai.com'"),
    ("roles: {judge: {model: m, base_url: ['http://127.0.0.1:8000/v1', 'localhost:8001']}}",
     "field roles.judge.base_url: Value error, expected an http(s) URL such as https://api.openai.com/v1, "
     "got 'localhost:8001'"),
    ("roles: {judge: {model: m, base_url: []}}",
     "field roles.judge.base_url: Value error, expected an http(s) URL or a non-empty list of them, got []"),
    ("roles: {judge: {model: m, base_url: ['http://a:1/v1', 'http://a:1/v1/']}}",
     "field roles.judge.base_url: Value error, the same URL is listed twice"),
    ("roles: {judge: {model: m}}\nconcurrency: 0",
     "field concurrency: Input should be greater than or equal to 1"),
    ("roles: {judge: {model: m}}\nlanguage: fr", "field language: Input should be 'en' or 'zh'"),
    ("roles: {judge: {model: m}}\nlog_requests: maybe", "field log_requests: Input should be a valid boolean"),
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


def test_unknown_role_without_a_default_model_lists_configured_roles(tmp_path):
    config = PipelineConfig.load(write(tmp_path, "default: {temperature: 0.2}\nroles: {judge: {model: m}}"))
    with pytest.raises(InputError, match="role 'reverse' is not configured; configured roles: judge"):
        config.role("reverse")


def test_unlisted_role_gets_the_default_settings(tmp_path):
    config = PipelineConfig.load(write(tmp_path, """
default: {base_url: "https://api.example.com/v1/", model: m1, temperature: 0.3, max_tokens: 77}
roles:
  judge: {temperature: 0.0}
"""))
    critic = config.role("critic")
    assert (critic.base_url, critic.model, critic.temperature, critic.max_tokens) == (
        "https://api.example.com/v1", "m1", 0.3, 77)
    assert config.role("judge").temperature == 0.0 and "critic" not in config.roles


def test_base_url_takes_a_list_of_endpoints(tmp_path):
    config = PipelineConfig.load(write(tmp_path, """
default: {model: m}
roles:
  response: {base_url: ["http://127.0.0.1:8000/v1/", "http://127.0.0.1:8001/v1"], api_key_env: null}
  judge: {base_url: "https://api.example.com/v1"}
  critic: {}
"""))
    assert config.role("response").base_urls == ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"]
    assert config.role("judge").base_urls == ["https://api.example.com/v1"]
    assert config.role("critic").base_urls is None
    assert config.log_requests is False


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_load_with_every_role(path):
    config = PipelineConfig.load(path)
    for role in ("profile", "user", "response", "judge", "critic", "reverse"):
        assert config.role(role).model
    assert config.role("judge").temperature == 0.0


def test_shipped_configs_exist():
    assert {p.name for p in SHIPPED} >= {"openai.yaml", "vllm.yaml", "llamafactory_api.yaml", "paper.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_list_only_roles_the_stages_ask_for(path):
    assert set(PipelineConfig.load(path).roles) <= {"profile", "user", "response", "judge", "critic", "reverse", "trigger"}


def test_paper_config_has_the_papers_choices():
    config = PipelineConfig.load(SHIPPED[0].parent / "paper.yaml")
    assert config.language == "zh"
    for role in ("profile", "user", "judge", "critic", "reverse"):
        assert config.role(role).model == "gpt-4o-mini"
    response = config.role("response")
    assert response.model == "meta-llama/Llama-3.1-8B-Instruct" and response.api_key_env is None
    assert response.base_urls == ["http://127.0.0.1:8000/v1"]
    assert config.role("judge").temperature == 0.0
