"""Local sampling servers: a real `llamafactory-cli api` on a tiny model, and the vllm command path.

vllm is GPU-only, so its command line is exercised with a stand-in `vllm` executable placed first
on PATH (it serves the scripted OpenAI-compatible server on the port it is given).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
import yaml
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.local_service import (
    ProcessIdentity,
    ServiceError,
    ServiceState,
    _group_alive,
    free_port,
    is_healthy,
    service_status,
    start_service,
    vllm_command,
)
from rpo.utils.tiny_model import build_tiny_model

from tests.test_conf_merge import build_tiny_adapter

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, str(ROOT / "src" / "utils" / "local_service.py")]
SCRIPTED = ROOT / "tests" / "scripted_server.py"


def fake_vllm(bin_dir: Path, body: str) -> Path:
    """An executable named `vllm` running `body` (Python) with `args` = its command line."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "vllm"
    exe.write_text(f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\n{body}\n", encoding="utf-8")
    exe.chmod(0o755)
    return exe


SERVE_SCRIPTED = f"""
import json, runpy
from pathlib import Path
Path(__file__).with_name("args.json").write_text(json.dumps(args))
sys.argv = ["scripted_server", "--port=" + args[args.index("--port") + 1]]
runpy.run_path({str(SCRIPTED)!r}, run_name="__main__")
"""


def test_llamafactory_api_start_chat_stop(tmp_path):
    model = build_tiny_model(tmp_path / "model")
    state_dir = tmp_path / "services"
    with start_service("llamafactory", str(model), name="policy", served_model_name="policy",
                       state_dir=state_dir, timeout_s=300) as service:
        state = json.loads((state_dir / "policy.json").read_text())
        assert state["backend"] == "llamafactory" and state["port"] == service.state.port
        assert Path(state["log_path"]).is_file()
        assert "template: chatml" in Path(state["config_path"]).read_text()
        [row] = service_status(state_dir)
        assert row["alive"] and row["healthy"] and row["base_url"] == service.base_url

        config = PipelineConfig.from_dict({
            "default": {"base_url": service.base_url, "model": "policy", "api_key_env": None, "max_tokens": 6},
            "roles": {"response": {}},
            "cache_dir": None,
        })

        async def sample():
            async with LLMClient(config) as client:
                result = await client.chat("response", [{"role": "system", "content": "Be brief."},
                                                        {"role": "user", "content": "Hello there"}], n=2)
                return result, client.usage()

        result, usage = asyncio.run(sample())
        assert len(result.texts) == 2 and all(isinstance(t, str) for t in result.texts)
        assert result.prompt_tokens > 0 and 0 < result.completion_tokens <= 12
        assert usage["response"]["calls"] == 1
        pid = service.state.pid
    assert not _group_alive(pid)
    assert not (state_dir / "policy.json").exists()
    assert not is_healthy(service.base_url)


def test_cli_vllm_start_status_stop_detached(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_vllm(bin_dir, SERVE_SCRIPTED)
    state_dir = tmp_path / "services"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    port = free_port()
    started = subprocess.run(
        [*CLI, "start", "--backend=vllm", "--model=org/model-7b", f"--port={port}", "--name=sampler",
         f"--state_dir={state_dir}", "--extra_args=--tensor-parallel-size 2", "--timeout_s=60"],
        env=env, check=False, capture_output=True, text=True, timeout=120,
    )
    assert started.returncode == 0, started.stderr
    state = json.loads(started.stdout)
    assert state["base_url"] == f"http://127.0.0.1:{port}/v1"
    args = json.loads((bin_dir / "args.json").read_text())
    assert args == ["serve", "org/model-7b", "--host", "127.0.0.1", "--port", str(port),
                    "--served-model-name", "org/model-7b", "--tensor-parallel-size", "2"]
    assert is_healthy(state["base_url"])  # outlived the command that started it

    status = subprocess.run([*CLI, "status", f"--state_dir={state_dir}"], check=False, capture_output=True, text=True,
                            timeout=60)
    row = json.loads(status.stdout)
    assert status.returncode == 0 and row["healthy"] and row["pid"] == state["pid"]

    stopped = subprocess.run([*CLI, "stop", f"--state_dir={state_dir}"], check=False, capture_output=True, text=True,
                             timeout=60)
    assert stopped.returncode == 0 and "stopped sampler" in stopped.stdout
    deadline = time.monotonic() + 10
    while _group_alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_alive(state["pid"])
    assert not is_healthy(state["base_url"])
    assert not list(state_dir.glob("*.json"))


def test_vllm_not_installed_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    with pytest.raises(ServiceError, match=r"vllm is not installed .*--backend=llamafactory"):
        start_service("vllm", "org/model", state_dir=tmp_path / "services", search_path=str(empty))


def test_server_that_dies_reports_log_tail(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_vllm(bin_dir, 'print("loading weights"); print("CUDA out of memory", flush=True); sys.exit(3)')
    with pytest.raises(ServiceError) as err:
        start_service("vllm", "org/model", name="bad", state_dir=tmp_path / "services",
                      search_path=str(bin_dir), timeout_s=60)
    message = str(err.value)
    assert "exited with status 3 before it was ready" in message
    assert message.rstrip().endswith("CUDA out of memory")
    assert not (tmp_path / "services" / "bad.json").exists()


def test_server_that_never_answers_times_out_and_is_killed(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    fake_vllm(bin_dir, 'import os, time\nopen(os.environ["PID_FILE"], "w").write(str(os.getpid()))\n'
                       'print("still loading", flush=True); time.sleep(600)')
    monkeypatch.setenv("PID_FILE", str(tmp_path / "pid"))
    with pytest.raises(ServiceError, match=r"(?s)vllm server 'slow' was not ready after 1.5 s; log .*still loading"):
        start_service("vllm", "org/model", name="slow", state_dir=tmp_path / "services",
                      search_path=str(bin_dir), timeout_s=1.5)
    assert not _group_alive(int((tmp_path / "pid").read_text()))
    assert not list((tmp_path / "services").glob("*.json"))


def test_refuses_a_busy_port_and_a_running_name(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_vllm(bin_dir, SERVE_SCRIPTED)
    state_dir = tmp_path / "services"
    with start_service("vllm", "m", name="one", state_dir=state_dir, search_path=str(bin_dir),
                       timeout_s=60) as service:
        with pytest.raises(ServiceError, match=f"port {service.state.port} on 127.0.0.1 is already in use"):
            start_service("vllm", "m", port=service.state.port, state_dir=state_dir, search_path=str(bin_dir))
        with pytest.raises(ServiceError, match="service 'one' is already running"):
            start_service("vllm", "m", name="one", state_dir=state_dir, search_path=str(bin_dir))
    assert service_status(state_dir) == []


def test_stop_without_name_needs_exactly_one_service(tmp_path):
    result = subprocess.run([*CLI, "stop", f"--state_dir={tmp_path}"], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --name: give the service to use (recorded in {tmp_path}: none)"


def _unrelated_process() -> subprocess.Popen:
    """A process in its own group, standing for whatever got the PID of a server that died."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)


def _stale_state(state_dir: Path, pid: int) -> Path:
    """A state file for `pid` recorded from an earlier process (same PID, another start time)."""
    identity = ProcessIdentity.of(pid)
    assert identity is not None
    state = ServiceState(
        name="old", backend="vllm", model="m", served_model_name="m", host="127.0.0.1", port=free_port(),
        pid=pid, log_path=str(state_dir / "old.log"), command=["vllm", "serve", "m"], started_at=0.0,
        process=identity.model_copy(update={"start_ticks": identity.start_ticks - 1, "cmdline": ["vllm", "serve"]}),
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "old.json"
    path.write_text(state.model_dump_json())
    return path


@pytest.mark.parametrize("command", ["stop", "status"])
def test_stale_state_never_signals_the_new_owner_of_its_pid(tmp_path, command):
    state_dir = tmp_path / "services"
    other = _unrelated_process()
    try:
        path = _stale_state(state_dir, other.pid)
        result = subprocess.run([*CLI, command, f"--state_dir={state_dir}"], check=False, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines() == [
            f"{path}: stale state removed: service 'old' (pid {other.pid}) is now held by "
            f"{' '.join([sys.executable, '-c', 'import time; time.sleep(600)'])!r}; nothing signalled"
        ]
        assert other.poll() is None and _group_alive(other.pid)
        assert not path.exists()
    finally:
        other.kill()
        other.wait()


def test_status_with_a_corrupt_state_file_names_it(tmp_path):
    state_dir = tmp_path / "services"
    state_dir.mkdir()
    (state_dir / "broken.json").write_text('{"name": "broken", "pid": ')
    result = subprocess.run([*CLI, "status", f"--state_dir={state_dir}"], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {state_dir / 'broken.json'}: not a service state file (")


def test_llamafactory_api_serves_base_plus_lora_adapter(tmp_path):
    model = build_tiny_model(tmp_path / "model")
    adapter = build_tiny_adapter(model, tmp_path / "adapter")
    state_dir = tmp_path / "services"
    with start_service("llamafactory", str(model), name="tuned", served_model_name="tuned", adapter=str(adapter),
                       state_dir=state_dir, timeout_s=300) as service:
        state = json.loads((state_dir / "tuned.json").read_text())
        assert state["adapter"] == str(adapter) and state["adapter_model_name"] == "tuned"
        config = yaml.safe_load(Path(state["config_path"]).read_text())
        assert config["adapter_name_or_path"] == str(adapter) and config["finetuning_type"] == "lora"
        reply = httpx2.post(f"{service.base_url}/chat/completions", timeout=120, json={
            "model": "tuned", "max_tokens": 4, "messages": [{"role": "user", "content": "Hello there"}],
        })
        assert reply.status_code == 200, reply.text
        assert isinstance(reply.json()["choices"][0]["message"]["content"], str)
        assert f"Loaded adapter(s): {adapter}" in Path(state["log_path"]).read_text()


def test_vllm_adapter_command_line(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_vllm(bin_dir, SERVE_SCRIPTED)
    adapter = tmp_path / "saves" / "rpo"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    state_dir = tmp_path / "services"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    port = free_port()
    started = subprocess.run(
        [*CLI, "start", "--backend=vllm", "--model=/models/base", f"--port={port}", "--name=lora",
         f"--adapter={adapter}", f"--state_dir={state_dir}", "--timeout_s=60"],
        env=env, check=False, capture_output=True, text=True, timeout=120,
    )
    assert started.returncode == 0, started.stderr
    try:
        state = json.loads(started.stdout)
        assert state["adapter"] == str(adapter) and state["adapter_model_name"] == "rpo"
        assert f"adapter {adapter} is served as model 'rpo'" in started.stderr
        assert json.loads((bin_dir / "args.json").read_text()) == [
            "serve", "/models/base", "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "/models/base",
            "--enable-lora", "--lora-modules", f"rpo={adapter}",
        ]
    finally:
        subprocess.run([*CLI, "stop", "--name=lora", f"--state_dir={state_dir}"], check=True, capture_output=True,
                       timeout=60)
    assert vllm_command("vllm", "m", "m", "h", 1, "/a/b", "named", ["--max-lora-rank", "64"])[-4:] == [
        "--lora-modules", "named=/a/b", "--max-lora-rank", "64"]
