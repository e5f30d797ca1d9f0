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

import pytest
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.local_service import (
    ServiceError,
    _group_alive,
    free_port,
    is_healthy,
    service_status,
    start_service,
)
from rpo.utils.tiny_model import build_tiny_model

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
