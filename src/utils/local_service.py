"""Start, check and stop a local OpenAI-compatible sampling server.

Response sampling runs against a local server so that the policy being trained can be sampled at
scale: `vllm serve` on a GPU, or `llamafactory-cli api` (HuggingFace backend, CPU or GPU). The
server runs detached in its own process group, so it outlives the command that started it; a state
file under `out/services/` (pid, port, backend, model, log path) lets `stop` and `status` find it.

    python src/utils/local_service.py start --backend=llamafactory --model=saves/policy --port=8001
    python src/utils/local_service.py status
    python src/utils/local_service.py stop

In code, `start_service(...)` returns a `LocalService` that stops the server when used as a
context manager: `with start_service("llamafactory", model_dir) as service: ...service.base_url`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import fire
import httpx
import yaml
from pydantic import BaseModel
from rpo.utils.io import InputError, atomic_write

Backend = Literal["vllm", "llamafactory"]
DEFAULT_STATE_DIR = "out/services"
LOG_TAIL_LINES = 40


class ServiceError(RuntimeError):
    """The server could not be started, or did not become healthy; the message carries its log tail."""


class ServiceState(BaseModel):
    """What the state file records about a running server."""

    name: str
    backend: Backend
    model: str
    served_model_name: str
    host: str
    port: int
    pid: int
    log_path: str
    config_path: str | None = None
    command: list[str]
    started_at: float

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


class LocalService:
    """A started server: its state, and `stop()` (also on leaving a `with` block)."""

    def __init__(self, state: ServiceState, state_dir: Path):
        self.state = state
        self.state_dir = state_dir

    @property
    def base_url(self) -> str:
        return self.state.base_url

    def stop(self, timeout_s: float = 30) -> None:
        stop_service(self.state.name, state_dir=self.state_dir, timeout_s=timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def find_executable(name: str, search_path: str | None = None) -> str | None:
    """`name` on `search_path` (default: $PATH, then this interpreter's own bin directory)."""
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    return shutil.which(name, path=search_path)


def is_healthy(base_url: str, timeout_s: float = 2.0) -> bool:
    """Whether `GET {base_url}/models` answers 200."""
    try:
        return httpx.get(f"{base_url}/models", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def log_tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file (empty if there is none)."""
    path = Path(path)
    if not path.is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, fh.seek(0, os.SEEK_END) - 64 * 1024))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _state_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.json"


def read_state(name: str, state_dir: str | Path = DEFAULT_STATE_DIR) -> ServiceState | None:
    path = _state_path(Path(state_dir), name)
    if not path.is_file():
        return None
    try:
        return ServiceState.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputError(f"{path}: not a service state file ({' '.join(str(err).split())[:200]})") from None


def _group_alive(pid: int) -> bool:
    """Whether any process of the group led by `pid` is still running (reaping our own child)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command(
    backend: Backend, model: str, served_model_name: str, host: str, port: int, template: str,
    infer_backend: str, extra_args: Sequence[str], config_path: Path, search_path: str | None,
) -> tuple[list[str], dict[str, str]]:
    """The command line and extra environment that start `backend`."""
    if backend == "vllm":
        exe = find_executable("vllm", search_path)
        if exe is None:
            raise ServiceError(
                "vllm is not installed (it is a GPU-only extra: `make setup EXTRAS=gpu`); "
                "on CPU use --backend=llamafactory"
            )
        command = [exe, "serve", model, "--host", host, "--port", str(port),
                   "--served-model-name", served_model_name, *extra_args]
        return command, {}
    exe = find_executable("llamafactory-cli", search_path)
    if exe is None:
        raise ServiceError("llamafactory-cli is not installed: run `make setup`")
    config = {"model_name_or_path": model, "template": template, "infer_backend": infer_backend,
              "trust_remote_code": True}
    with atomic_write(config_path) as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    env = {"API_HOST": host, "API_PORT": str(port), "API_MODEL_NAME": served_model_name,
           "API_VERBOSE": os.environ.get("API_VERBOSE", "0")}
    return [exe, "api", str(config_path), *extra_args], env


def start_service(
    backend: Backend,
    model: str,
    port: int | None = None,
    name: str | None = None,
    template: str = "chatml",
    served_model_name: str | None = None,
    host: str = "127.0.0.1",
    infer_backend: str = "huggingface",
    extra_args: Sequence[str] = (),
    state_dir: str | Path = DEFAULT_STATE_DIR,
    timeout_s: float = 600,
    search_path: str | None = None,
) -> LocalService:
    """Launch a server detached, record its state, and wait until `GET /v1/models` answers.

    `template`/`infer_backend` apply to llamafactory; `extra_args` are appended to the command
    line (e.g. vllm's `--tensor-parallel-size 2`). On failure the process group is killed and the
    error carries the log tail.
    """
    if backend not in ("vllm", "llamafactory"):
        raise InputError(f"--backend: expected vllm or llamafactory, got {backend!r}")
    state_dir = Path(state_dir)
    if port and not _port_free(host, int(port)):
        raise ServiceError(f"port {port} on {host} is already in use")
    port = int(port) if port else free_port(host)
    name = name or f"{backend}-{port}"
    previous = read_state(name, state_dir)
    if previous is not None and _group_alive(previous.pid):
        raise ServiceError(f"service {name!r} is already running (pid {previous.pid}, {previous.base_url})")
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / f"{name}.log"
    config_path = state_dir / f"{name}.yaml"
    served = served_model_name or model
    command, extra_env = _command(backend, model, served, host, port, template, infer_backend,
                                  [str(a) for a in extra_args], config_path, search_path)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **extra_env}, start_new_session=True,
        )
    state = ServiceState(
        name=name, backend=backend, model=model, served_model_name=served, host=host, port=port,
        pid=process.pid, log_path=str(log_path), config_path=str(config_path) if backend == "llamafactory" else None,
        command=command, started_at=time.time(),
    )
    with atomic_write(_state_path(state_dir, name)) as fh:
        fh.write(state.model_dump_json(indent=2) + "\n")
    deadline = time.monotonic() + timeout_s
    while not is_healthy(state.base_url):
        failure = None
        if process.poll() is not None:
            failure = f"exited with status {process.returncode} before it was ready"
        elif time.monotonic() > deadline:
            failure = f"was not ready after {timeout_s:g} s"
        if failure:
            stop_service(name, state_dir=state_dir)
            raise ServiceError(f"{backend} server {name!r} {failure}; log {log_path}, last lines:\n"
                               f"{log_tail(log_path)}")
        time.sleep(0.5)
    return LocalService(state, state_dir)


def stop_service(name: str | None = None, state_dir: str | Path = DEFAULT_STATE_DIR,
                 timeout_s: float = 30) -> ServiceState:
    """Terminate the server's whole process group (SIGTERM, then SIGKILL) and drop its state file."""
    state_dir = Path(state_dir)
    state = _resolve(name, state_dir)
    if _group_alive(state.pid):
        os.killpg(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _group_alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(state.pid):
            os.killpg(state.pid, signal.SIGKILL)
            while _group_alive(state.pid):
                time.sleep(0.1)
    _state_path(state_dir, state.name).unlink(missing_ok=True)
    return state


def service_status(state_dir: str | Path = DEFAULT_STATE_DIR) -> list[dict]:
    """Every recorded server with whether its process runs and whether it answers."""
    state_dir = Path(state_dir)
    rows = []
    for path in sorted(state_dir.glob("*.json")):
        state = ServiceState.model_validate_json(path.read_text(encoding="utf-8"))
        alive = _group_alive(state.pid)
        rows.append({**state.model_dump(), "base_url": state.base_url, "alive": alive,
                     "healthy": alive and is_healthy(state.base_url)})
    return rows


def _resolve(name: str | None, state_dir: Path) -> ServiceState:
    """The named service, or the only one recorded when no name is given."""
    if name is None:
        names = sorted(p.stem for p in state_dir.glob("*.json"))
        if len(names) != 1:
            listed = ", ".join(names) if names else "none"
            raise InputError(f"--name: give the service to use (recorded in {state_dir}: {listed})")
        name = names[0]
    state = read_state(name, state_dir)
    if state is None:
        raise InputError(f"--name: no service {name!r} recorded in {state_dir}")
    return state


def _cli(fn: Callable[..., None]) -> Callable[..., None]:
    """CLI wrapper: one stderr line (plus the log tail of a failed start) and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except ServiceError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    return wrapper


@_cli
def start(backend: str, model: str, port: int | None = None, name: str | None = None, template: str = "chatml",
          served_model_name: str | None = None, host: str = "127.0.0.1", infer_backend: str = "huggingface",
          extra_args: str = "", state_dir: str = DEFAULT_STATE_DIR, timeout_s: float = 600) -> None:
    """Start a server (--backend=vllm|llamafactory) and wait until it answers; prints its state."""
    service = start_service(backend, model, port=port, name=name, template=template,  # type: ignore[arg-type]
                            served_model_name=served_model_name, host=host, infer_backend=infer_backend,
                            extra_args=str(extra_args).split(), state_dir=state_dir, timeout_s=timeout_s)
    print(json.dumps({**service.state.model_dump(), "base_url": service.base_url}, indent=2))


@_cli
def stop(name: str | None = None, state_dir: str = DEFAULT_STATE_DIR, timeout_s: float = 30) -> None:
    """Stop a server (the only one recorded, or --name)."""
    state = stop_service(name, state_dir=state_dir, timeout_s=timeout_s)
    print(f"stopped {state.name} (pid {state.pid}, {state.base_url})")


@_cli
def status(state_dir: str = DEFAULT_STATE_DIR) -> None:
    """Print every recorded server with whether it runs and answers."""
    rows = service_status(state_dir)
    if not rows:
        print(f"no services recorded in {state_dir}")
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    fire.Fire({"start": start, "stop": stop, "status": status})
