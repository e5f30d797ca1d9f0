"""The shared readers and writers: refusals in one line, one writer per output."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from pydantic import BaseModel
from rpo.utils.io import InputError, JsonArrayWriter, JsonlAppender, read_json, read_jsonl, read_text


class Item(BaseModel):
    id: str
    value: int = 0


def _read(path, **kwargs):
    return list(read_jsonl(path, Item, **kwargs))


def test_records_stream_with_blank_lines_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a"}\n\n{"id": "b", "value": 2}\n')
    assert [(i.id, i.value) for i in _read(path, unique="id")] == [("a", 0), ("b", 2)]


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n"])
def test_an_input_without_records_is_refused(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        _read(path)
    assert str(err.value) == f"{path}: no records (the file is empty or holds only blank lines)"


def test_a_repeated_id_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n')
    with pytest.raises(InputError) as err:
        _read(path, unique="id")
    assert str(err.value) == f"{path}: line 3: field id: duplicate id 'a' (first at line 1)"
    assert len(_read(path)) == 3  # ids are only checked where the reader asks


def test_bad_bytes_name_their_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "caf\xe9"}\n')
    with pytest.raises(InputError) as err:
        _read(path)
    assert str(err.value) == f"{path}: line 2: not valid UTF-8 (byte 12)"


def test_a_lone_surrogate_is_named_by_line_record_and_field(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "ok \\ud83d\\ude00"}\n{"id": "x", "notes": [{"t": "half \\uDC00"}]}\n')
    with pytest.raises(InputError) as err:
        _read(path)
    assert str(err.value) == (
        f"{path}: line 2 (record x): field notes[0].t: a lone surrogate escape (\\ud800-\\udfff without its "
        "pair), not valid UTF-8 text"
    )
    path.write_text('{"id": "ok \\ud83d\\ude00"}\n')  # a pair is one character
    assert _read(path)[0].id == "ok \U0001f600"


def test_whole_file_readers_name_line_and_byte(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b'{\n  "a": "caf\xe9"\n}\n')
    with pytest.raises(InputError) as err:
        read_json(path)
    assert str(err.value) == f"{path}: line 2: not valid UTF-8 (byte 12)"
    path.write_text('{\n  "a": \n}')
    with pytest.raises(InputError) as err:
        read_json(path)
    assert str(err.value) == f"{path}: line 3: invalid JSON (Expecting value at column 1)"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert read_json(path) == {"a": 1} and read_text(path) == '{"a": 1}'
    with pytest.raises(InputError, match="missing.json: file not found"):
        read_text(tmp_path / "missing.json")


def test_corrupt_gzip_and_missing_files_are_one_line(tmp_path):
    path = tmp_path / "items.jsonl.gz"
    path.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(InputError) as err:
        _read(path)
    assert str(err.value) == f"{path}: line 1: cannot read (Not a gzipped file (b'pl'))"
    path.write_bytes(gzip.compress(b'{"id": "a"}\n' * 1000)[:60])
    with pytest.raises(InputError) as err:
        _read(path)
    assert str(err.value).endswith(": cannot read (Compressed file ended before the end-of-stream marker was reached)")
    with pytest.raises(InputError) as err:
        _read(tmp_path / "nowhere.jsonl")
    assert str(err.value) == f"{tmp_path / 'nowhere.jsonl'}: file not found"


def test_deep_nesting_is_refused_as_invalid_json(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"id": "a", "value": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(InputError) as err:
        _read(path)
    assert str(err.value) == f"{path}: line 1: invalid JSON (nested too deeply)"


def test_a_second_writer_of_one_output_is_refused_naming_the_holder(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path) as first:
        first.write({"id": "a"})
        with pytest.raises(InputError) as err:
            JsonlAppender(path)
        assert str(err.value).startswith(f"{path}: another run is writing this output (pid {os.getpid()}: ")
        assert str(err.value).endswith("); wait for it or choose another output")
    with JsonlAppender(path) as again:  # released on close
        again.write({"id": "b"})
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # the lock file goes with the run


def test_dataset_writers_hold_the_lock_too(tmp_path):
    path = tmp_path / "data.json"
    with JsonArrayWriter(path) as writer:
        writer.write({"id": "a"})
        with pytest.raises(InputError, match="another run is writing this output"):
            JsonArrayWriter(path).__enter__()
    assert path.read_text() == '[\n{"id": "a"}\n]\n'


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from rpo.utils.io import JsonlAppender
            out = JsonlAppender({str(path)!r})
            print("locked", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"pid {holder.pid}"):
            JsonlAppender(path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with JsonlAppender(path) as out:
        out.write({"id": "c"})
