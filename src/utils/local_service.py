"""Start, check and stop a local OpenAI-compatible sampling server.

Response sampling runs against a local server so that the policy being trained can be sampled at
scale: `vllm serve` on a GPU, or `llamafactory-cli api` (HuggingFace backend, CPU or GPU). The
server runs detached in its own process group, so it outlives the command that started it; a state
file under `out/services/` (pid, port, backend, model, log path) lets `stop` and `status` find it.
The state also records who the process is (its start time in /proc and the boot it ran in), so that
a server that died and left its PID to an unrelated process is never signalled: `stop` and `status`
report such a state as stale and remove it.

    python src/utils/local_service.py start --backend=llamafactory --model=saves/policy --port=8001
    python src/utils/local_service.py start --backend=vllm --model=/models/base --adapter=saves/lora/rpo
    python src/utils/local_service.py status
    python src/utils/local_service.py stop

`--adapter` serves a LoRA adapter on its base model: vLLM loads it beside the base (`--enable-lora
--lora-modules NAME=PATH`, requests name the adapter's model NAME); `llamafactory-cli api` loads base +
adapter as its one model. The state records the model name that reaches the adapter.

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

import httpx2
import yaml
from pydantic import BaseModel
from rpo.utils import cli
from rpo.utils.io import InputError, atomic_write

Backend = Literal["vllm", "llamafactory"]
DEFAULT_STATE_DIR = "out/services"
LOG_TAIL_LINES = 40


class ServiceError(RuntimeError):
    """The server could not be started, or did not become healthy; the message carries its log tail."""


class StaleStateError(InputError):
    """The state file's PID no longer belongs to the server it recorded (the file has been removed)."""


class ProcessIdentity(BaseModel):
    """What tells one process from a later one given the same PID: boot, start time, command line."""

    boot_id: str
    start_ticks: int
    cmdline: list[str]

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The identity of a running process, or None when it is gone (or /proc is not there)."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return None
        # the command name in parentheses may hold spaces and parentheses; field 22 (starttime)
        # is the 20th after the last closing parenthesis
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return cls(boot_id=boot_id, start_ticks=start_ticks,
                   cmdline=[part.decode(errors="replace") for part in cmdline.split(b"\0") if part])

    def same_process(self, other: ProcessIdentity | None) -> bool:
        """Same boot and start time: the command line may change (servers retitle themselves)."""
        return other is not None and (other.boot_id, other.start_ticks) == (self.boot_id, self.start_ticks)


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
    process: ProcessIdentity | None = None
    adapter: str | None = None
    adapter_model_name: str | None = None

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
        return httpx2.get(f"{base_url}/models", timeout=timeout_s).status_code == 200
    except httpx2.HTTPError:
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


def _is_recorded_server(state: ServiceState) -> bool:
    """Whether the state's PID still leads the server it recorded, judged by process identity.

    When the leader is gone but its process group lives on (workers left behind), the group is still
    the server's: a process group ID is not handed out again while any member is alive.
    """
    current = ProcessIdentity.of(state.pid)
    if current is None:
        return _group_alive(state.pid) and not Path(f"/proc/{state.pid}").exists()
    return state.process is None or state.process.same_process(current)


def _check_not_stale(state: ServiceState, path: Path) -> None:
    """Remove a state file whose PID now belongs to another process (or to nothing) and say so."""
    if _is_recorded_server(state):
        return
    path.unlink(missing_ok=True)
    now = ProcessIdentity.of(state.pid)
    held_by = f"now held by {' '.join(now.cmdline)[:200]!r}" if now else "no longer running"
    raise StaleStateError(
        f"{path}: stale state removed: service {state.name!r} (pid {state.pid}) is {held_by}; nothing signalled"
    )


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


def vllm_command(exe: str, model: str, served_model_name: str, host: str, port: int,
                 adapter: str | None = None, adapter_model_name: str | None = None,
                 extra_args: Sequence[str] = ()) -> list[str]:
    """`vllm serve` for the base model, plus the LoRA adapter under its own model name when given."""
    command = [exe, "serve", model, "--host", host, "--port", str(port), "--served-model-name", served_model_name]
    if adapter:
        command += ["--enable-lora", "--lora-modules", f"{adapter_model_name}={adapter}"]
    return [*command, *extra_args]


def llamafactory_api_config(model: str, template: str, infer_backend: str, adapter: str | None = None) -> dict:
    """The `llamafactory-cli api` YAML: the base model, with the LoRA adapter loaded onto it when given."""
    config: dict[str, Any] = {"model_name_or_path": model, "template": template, "infer_backend": infer_backend,
                              "trust_remote_code": True}
    if adapter:
        config.update({"adapter_name_or_path": adapter, "finetuning_type": "lora"})
    return config


def _command(
    backend: Backend, model: str, served_model_name: str, host: str, port: int, template: str,
    infer_backend: str, extra_args: Sequence[str], config_path: Path, search_path: str | None,
    adapter: str | None, adapter_model_name: str | None,
) -> tuple[list[str], dict[str, str]]:
    """The command line and extra environment that start `backend`."""
    if backend == "vllm":
        exe = find_executable("vllm", search_path)
        if exe is None:
            raise ServiceError(
                "vllm is not installed (it is a GPU-only extra: `make setup EXTRAS=gpu`); "
                "on CPU use --backend=llamafactory"
            )
        return vllm_command(exe, model, served_model_name, host, port, adapter, adapter_model_name, extra_args), {}
    exe = find_executable("llamafactory-cli", search_path)
    if exe is None:
        raise ServiceError("llamafactory-cli is not installed: run `make setup`")
    config = llamafactory_api_config(model, template, infer_backend, adapter)
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
    adapter: str | None = None,
    adapter_name: str | None = None,
) -> LocalService:
    """Launch a server detached, record its state, and wait until `GET /v1/models` answers.

    `template`/`infer_backend` apply to llamafactory; `extra_args` are appended to the command
    line (e.g. vllm's `--tensor-parallel-size 2`). `adapter` serves a LoRA adapter directory on the
    base model; `state.adapter_model_name` is the model name that reaches it (vllm: `adapter_name`,
    default the adapter folder's name; llamafactory: the served model name). On failure the process
    group is killed and the error carries the log tail.
    """
    if backend not in ("vllm", "llamafactory"):
        raise InputError(f"--backend: expected vllm or llamafactory, got {backend!r}")
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise InputError(f"--adapter: {adapter} is not a LoRA adapter directory (no adapter_config.json)")
    state_dir = Path(state_dir)
    if port and not _port_free(host, int(port)):
        raise ServiceError(f"port {port} on {host} is already in use")
    port = int(port) if port else free_port(host)
    name = name or f"{backend}-{port}"
    previous = read_state(name, state_dir)
    if previous is not None and _group_alive(previous.pid) and _is_recorded_server(previous):
        raise ServiceError(f"service {name!r} is already running (pid {previous.pid}, {previous.base_url})")
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / f"{name}.log"
    config_path = state_dir / f"{name}.yaml"
    served = served_model_name or model
    adapter_model_name = None
    if adapter is not None:
        adapter_model_name = (adapter_name or Path(adapter).resolve().name) if backend == "vllm" else served
    command, extra_env = _command(backend, model, served, host, port, template, infer_backend,
                                  [str(a) for a in extra_args], config_path, search_path,
                                  adapter, adapter_model_name)
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
        command=command, started_at=time.time(), process=ProcessIdentity.of(process.pid),
        adapter=adapter, adapter_model_name=adapter_model_name,
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
            _terminate_group(process.pid)  # our own child: no identity check needed
            _state_path(state_dir, name).unlink(missing_ok=True)
            raise ServiceError(f"{backend} server {name!r} {failure}; log {log_path}, last lines:\n"
                               f"{log_tail(log_path)}")
        time.sleep(0.5)
    return LocalService(state, state_dir)


def stop_service(name: str | None = None, state_dir: str | Path = DEFAULT_STATE_DIR,
                 timeout_s: float = 30) -> ServiceState:
    """Terminate the server's whole process group (SIGTERM, then SIGKILL) and drop its state file.

    A state whose PID no longer belongs to the recorded server raises `StaleStateError` (state
    removed, nothing signalled).
    """
    state_dir = Path(state_dir)
    state = _resolve(name, state_dir)
    _check_not_stale(state, _state_path(state_dir, state.name))
    _terminate_group(state.pid, timeout_s)
    _state_path(state_dir, state.name).unlink(missing_ok=True)
    return state


def _terminate_group(pid: int, timeout_s: float = 30) -> None:
    if _group_alive(pid):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
            while _group_alive(pid):
                time.sleep(0.1)


def service_status(state_dir: str | Path = DEFAULT_STATE_DIR) -> list[dict]:
    """Every recorded server with whether its process runs and whether it answers.

    A corrupt state file raises `InputError` naming it; a stale one is removed and reported as
    `{"name", "stale": <the one-line explanation>}`.
    """
    state_dir = Path(state_dir)
    rows = []
    for path in sorted(state_dir.glob("*.json")):
        state = read_state(path.stem, state_dir)
        if state is None:  # removed meanwhile (stopped by another command)
            continue
        try:
            _check_not_stale(state, path)
        except StaleStateError as stale:
            rows.append({"name": state.name, "stale": str(stale)})
            continue
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
          extra_args: str = "", state_dir: str = DEFAULT_STATE_DIR, timeout_s: float = 600,
          adapter: str | None = None, adapter_name: str | None = None) -> None:
    """Start a server (--backend=vllm|llamafactory), optionally with a LoRA --adapter, and wait until it
    answers; prints its state (with `adapter_model_name`, the model name that reaches the adapter)."""
    service = start_service(backend, model, port=port, name=name, template=template,  # type: ignore[arg-type]
                            served_model_name=served_model_name, host=host, infer_backend=infer_backend,
                            extra_args=str(extra_args).split(), state_dir=state_dir, timeout_s=timeout_s,
                            adapter=adapter, adapter_name=adapter_name)
    print(json.dumps({**service.state.model_dump(), "base_url": service.base_url}, indent=2))
    if service.state.adapter:
        print(f"adapter {service.state.adapter} is served as model {service.state.adapter_model_name!r}",
              file=sys.stderr)


@_cli
def stop(name: str | None = None, state_dir: str = DEFAULT_STATE_DIR, timeout_s: float = 30) -> None:
    """Stop a server (the only one recorded, or --name). A stale state is reported and removed."""
    try:
        state = stop_service(name, state_dir=state_dir, timeout_s=timeout_s)
    except StaleStateError as stale:
        print(stale)
        return
    print(f"stopped {state.name} (pid {state.pid}, {state.base_url})")


@_cli
def status(state_dir: str = DEFAULT_STATE_DIR) -> None:
    """Print every recorded server with whether it runs and answers (stale states: one line, removed)."""
    rows = service_status(state_dir)
    if not rows:
        print(f"no services recorded in {state_dir}")
    for row in rows:
        print(row["stale"] if "stale" in row else json.dumps(row))


if __name__ == "__main__":
    cli.run({"start": start, "stop": stop, "status": status})
