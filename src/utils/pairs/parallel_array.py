"""Encode a JSONL file's lines in worker processes into one JSON array file, in input order.

Pair construction turns a few hundred MB of sessions into gigabytes of records, and encoding them
is CPU-bound Python, so one process leaves the other cores idle. Here the input is cut into byte
ranges of `CHUNK_BYTES`; a range's chunk is the lines that start in it. Worker w encodes chunks
w, w + n, w + 2n, ... and writes each one with `pwrite` at the offset where it belongs. The parent
hands out offsets in chunk order as soon as the sizes of the earlier chunks are known, and flushes
to disk meanwhile. So the file is byte for byte the one `JsonArrayWriter` writes (`[`, records
joined by `,\\n`, `]`), memory stays at about two small chunks per worker (still in the CPU cache
when written), and no byte is copied twice. A bad line raises what the one-process run would
raise: the earliest error wins.

Workers are forked (Linux only), so the encoder can be any callable, closures included; each
worker returns its copy of `state`, which the encoder updates, for the caller to merge.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from rpo.utils.io import InputError, atomic_write, write_all

S = TypeVar("S")
# (line number, raw line) -> (records as UTF-8 JSON objects joined by ",\n", how many)
LineEncoder = Callable[[int, bytes], tuple[bytes, int]]

CHUNK_BYTES = 64 << 10
"""Input bytes per chunk: its records (~16x as many bytes for RPO) are held in memory until written."""
PARALLEL_MIN_BYTES = 4 << 20
"""Smaller inputs are not worth starting processes for."""
OUTPUT_SIZE_GUESS = 32
"""Output bytes per input byte to reserve (sparsely) up front; RPO datasets run at about 16."""
MAX_DEFAULT_WORKERS = 8
"""Beyond a few workers the writes to the one output file are the bottleneck."""


def default_workers() -> int:
    """Worker processes to use: the CPUs this process may run on (at most `MAX_DEFAULT_WORKERS`),
    where forking is available."""
    if sys.platform != "linux":
        return 1
    return min(MAX_DEFAULT_WORKERS, len(os.sched_getaffinity(0)))


def _encode_chunk(source: BinaryIO, chunk: int, chunk_bytes: int, encode: LineEncoder) -> tuple[bytes, int]:
    """Encode the lines that start in bytes [chunk, chunk + 1) × chunk_bytes of the file."""
    start, end = chunk * chunk_bytes, (chunk + 1) * chunk_bytes
    position = 0
    if start:
        source.seek(start - 1)
        position = start - 1 + len(source.readline())  # to the first line that starts here or later
    first_position = position
    parts: list[bytes] = []
    records = 0
    for index in itertools.count():
        if position >= end or not (text := source.readline()):
            break
        position += len(text)
        try:
            data, count = encode(0, text)
        except InputError:  # name the line: count the lines before this chunk (errors only)
            encode(_line_number(source, first_position) + index, text)
            raise
        if count:
            parts.append(data)
            records += count
    return b",\n".join(parts), records


def _line_number(source: BinaryIO, position: int) -> int:
    """The 1-based number of the line that starts at byte `position`."""
    source.seek(0)
    newlines = 0
    while position > 0:
        block = source.read(min(position, 1 << 20))
        newlines += block.count(b"\n")
        position -= len(block)
    return newlines + 1


def _worker(
    index: int,
    workers: int,
    path: str,
    chunks: int,
    chunk_bytes: int,
    encode: LineEncoder,
    state: Any,
    fd: int,
    places: Any,
    results: Any,
) -> None:
    """Encode every `workers`-th chunk and write each where the parent says (None: stop).

    A chunk is written once the next one is encoded and announced, so that waiting for the other
    workers' sizes overlaps encoding.
    """
    pending: bytes | None = None
    try:
        with open(path, "rb") as source:
            for k in range(index, chunks, workers):
                try:
                    data, count = _encode_chunk(source, k, chunk_bytes, encode)
                except InputError as err:
                    results.put(("error", k, str(err)))
                    break
                results.put(("size", k, len(data), count))
                if pending is not None and not _place(fd, pending, places):
                    pending = None
                    break
                pending = data
            if pending is not None:
                _place(fd, pending, places)
    except Exception as err:  # noqa: BLE001 (reported to the parent, which raises it)
        results.put(("crash", index, f"{type(err).__name__}: {err}"))
    results.put(("done", index, state))


def _place(fd: int, data: bytes, places: Any) -> bool:
    """Write an encoded chunk at the (offset, separator) the parent sends; False when told to stop."""
    place = places.recv()
    if place is None:
        return False
    offset, separator = place
    if data:
        write_all(fd, (separator, data), offset)
    return True


class _Coordinator:
    """The parent's side: offsets in chunk order, the earliest error, the workers' states."""

    def __init__(self, pipes: list[Any]):
        self.pipes = pipes
        self.sizes: dict[int, int] = {}
        self.next_chunk = 0
        self.end = 1  # after "["
        self.records = 0
        self.first_error: tuple[int, str] | None = None
        self.crashed: str | None = None

    def size(self, chunk: int, size: int, count: int) -> None:
        self.sizes[chunk] = size
        self.records += count

    def error(self, chunk: int, message: str) -> None:
        if self.first_error is None or chunk < self.first_error[0]:
            self.first_error = (chunk, message)

    def crash(self, worker: int, message: str) -> None:
        self.crashed = self.crashed or f"worker {worker}: {message}"

    def hand_out(self) -> None:
        """Place every chunk whose predecessors are placed; stop the ones after an error."""
        limit = self.first_error[0] if self.first_error else None
        while self.next_chunk in self.sizes and (limit is None or self.next_chunk < limit):
            size = self.sizes.pop(self.next_chunk)
            separator = b"" if not size else b"\n" if self.end == 1 else b",\n"
            self._send(self.next_chunk, (self.end, separator))
            self.end += len(separator) + size
            self.next_chunk += 1
        if limit is not None or self.crashed is not None:
            for chunk in [k for k in self.sizes if limit is None or k > limit]:
                del self.sizes[chunk]
                self._send(chunk, None)

    def _send(self, chunk: int, place: tuple[int, bytes] | None) -> None:
        self.pipes[chunk % len(self.pipes)].send(place)


def write_json_array(
    source: str | Path,
    output: str | Path,
    encode: LineEncoder,
    state: S,
    workers: int,
    chunk_bytes: int | None = None,
) -> tuple[int, list[S]]:
    """Write `output` (atomically) from the lines of `source`; returns (records, each worker's state)."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    source_bytes = os.path.getsize(source)
    chunks = -(-source_bytes // chunk_bytes)
    workers = max(1, min(workers, chunks))
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    with atomic_write(output, "wb") as out:
        out.write(b"[")
        out.flush()
        fd = out.fileno()
        # A sparse file about as long as the output will be: writes inside its length do not move
        # its end, which costs a journal update each and contends with the background flush.
        os.ftruncate(fd, OUTPUT_SIZE_GUESS * source_bytes)
        pipes, processes = [], []
        for index in range(workers):
            receive, send = context.Pipe(duplex=False)
            args = (index, workers, str(source), chunks, chunk_bytes, encode, state, fd, receive, results)
            processes.append(context.Process(target=_worker, args=args, daemon=True))
            processes[-1].start()
            pipes.append(send)
        coordinator = _Coordinator(pipes)
        states: dict[int, S] = {}
        try:
            with _syncing(fd):
                while len(states) < workers:
                    message = _next_message(results, processes, states)
                    if message[0] == "done":
                        states[message[1]] = message[2]
                    else:  # "size", "error" or "crash": the coordinator method of that name
                        getattr(coordinator, message[0])(*message[1:])
                    coordinator.hand_out()
        except BaseException:
            for process in processes:
                process.kill()
            raise
        finally:
            for process in processes:
                process.join()
        if coordinator.crashed is not None:
            raise RuntimeError(f"pair construction worker failed: {coordinator.crashed}")
        if coordinator.first_error is not None:
            raise InputError(coordinator.first_error[1])
        tail = b"\n]\n" if coordinator.end > 1 else b"]\n"
        os.pwrite(fd, tail, coordinator.end)
        os.ftruncate(fd, coordinator.end + len(tail))
    return coordinator.records, [states[index] for index in range(workers)]


@contextmanager
def _syncing(fd: int, interval_s: float = 0.25) -> Iterator[None]:
    """Flush what the workers wrote to disk while they run, so that the final fsync has little left.

    The parent is otherwise idle; `fdatasync` releases the GIL, so offsets keep flowing meanwhile.
    """
    stop = threading.Event()

    def sync() -> None:
        while not stop.wait(interval_s):
            os.fdatasync(fd)

    thread = threading.Thread(target=sync, name="json-array-sync", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _next_message(results: Any, processes: list[Any], states: dict[int, Any]) -> tuple[Any, ...]:
    """The next worker message; a worker that died without saying so is an error, not a hang."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            for index, process in enumerate(processes):
                if index not in states and not process.is_alive() and process.exitcode != 0:
                    raise RuntimeError(
                        f"pair construction worker {index} died (exit code {process.exitcode})"
                    )
