"""Dataset lengths, one rule: the reader honours dataset_info.json, one percentile, the chat template's
tokens; rows of the wrong shape and non-UTF-8 files are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rpo.utils.dataset_lengths import (
    char_lengths,
    cutoff_len,
    dataset_examples,
    file_examples,
    iter_rows,
    nearest_rank,
    token_lengths,
)
from rpo.utils.io import InputError

ROW = {"conversations": [{"from": "human", "value": "hi"}], "chosen": {"from": "gpt", "value": "yo!"},
       "rejected": {"from": "gpt", "value": "no"}}


def test_nearest_rank_and_cutoff() -> None:
    assert [nearest_rank(range(1, 101), p) for p in (0.5, 0.9, 0.95, 1.0)] == [50, 90, 95, 100]
    assert nearest_rank(list(range(1, 21)), 0.95) == 19  # 0.95 * 20 is 19.000000000000004 in floats
    assert nearest_rank([7], 0.5) == 7
    assert cutoff_len([100] * 19 + [5000]) == 256 and cutoff_len([300] * 20) == 512
    assert cutoff_len([9000] * 20, cap=4096) == 4096


def test_rows_streamed_pretty_or_jsonl(tmp_path: Path) -> None:
    rows = [ROW] * 3
    layouts = {
        "pretty.json": json.dumps(rows, indent=2),
        "lines.json": "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n",
        "one.json": json.dumps(rows),
        "rows.jsonl": "\n".join(json.dumps(r) for r in rows) + "\n",
    }
    for name, text in layouts.items():
        (tmp_path / name).write_text(text)
        assert list(iter_rows(tmp_path / name)) == rows, name
    assert char_lengths(file_examples(tmp_path / "lines.json")) == [5, 5, 5]  # "hi" + the longer answer


def test_columns_and_tags_of_the_registered_entry_are_honoured(tmp_path: Path) -> None:
    row = {"msgs": [{"role": "user", "text": "abc"}], "sys": "S", "good": {"role": "bot", "text": "long answer"},
           "bad": {"role": "bot", "text": "x"}}
    (tmp_path / "odd.json").write_text(json.dumps([row]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"odd": {
        "file_name": "odd.json", "formatting": "sharegpt", "ranking": True,
        "columns": {"messages": "msgs", "system": "sys", "chosen": "good", "rejected": "bad"},
        "tags": {"role_tag": "role", "content_tag": "text", "user_tag": "user", "assistant_tag": "bot"},
    }, "alp": {"file_name": "alp.json", "columns": {"prompt": "q", "response": "a"}}}))
    assert dataset_examples(tmp_path, "odd") == [[("system", "S"), ("user", "abc"), ("assistant", "long answer")]]
    assert file_examples(tmp_path / "odd.json") == dataset_examples(tmp_path, "odd")  # found by its file name
    (tmp_path / "alp.json").write_text(json.dumps([{"q": "Q", "input": "more", "a": "A"}]))
    assert dataset_examples(tmp_path, "alp") == [[("user", "Q\nmore"), ("assistant", "A")]]


@pytest.mark.parametrize(
    "row,message",
    [
        ("text", "record 1: expected a JSON object, got str"),
        ({"conversations": "hi"}, "record 1: field conversations: expected a list of messages, got str"),
        ({"conversations": []}, "record 1: field conversations: expected a list of messages, got []"),
        ({}, "record 1: field conversations: expected a list of messages, got nothing"),
        ({"conversations": ["hi"]}, "record 1: field conversations[0]: expected a message object, got str"),
        ({"conversations": [{"from": "human", "value": 3}]}, "record 1: field conversations[0].value: expected text, got int"),
        ({"conversations": [{"from": "bot", "value": "x"}]},
         "record 1: field conversations[0].from: unknown role 'bot' (known: system, human, observation, gpt, function_call)"),
        ({**ROW, "chosen": "yo"}, "record 1: field chosen: expected a message object, got str"),
    ],
)
def test_a_row_of_the_wrong_shape_is_named(tmp_path: Path, row: object, message: str) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([ROW, row]))
    with pytest.raises(InputError) as err:
        file_examples(path)
    assert str(err.value) == f"{path}: {message}"


def test_registry_and_file_refusals(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text(json.dumps({"a": {"formatting": "sharegpt"}, "b": "b.json"}))
    for name in ("a", "b"):
        with pytest.raises(InputError) as err:
            dataset_examples(tmp_path, name)
        assert str(err.value) == (
            f"{tmp_path / 'dataset_info.json'}: dataset {name!r}: field file_name: expected the dataset's file name"
        )
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'[\n{"conversations": [{"from": "human", "value": "caf\xe9"}]}\n]\n')
    with pytest.raises(InputError, match=r"latin1.json: line 2: not valid UTF-8 \(byte 51\)"):
        file_examples(bad)
    pretty = tmp_path / "pretty.json"
    pretty.write_bytes(b'[\n  {\n "x": "\xff"}]')
    with pytest.raises(InputError, match=r"pretty.json: line 3: not valid UTF-8 \(byte 8\)$"):
        file_examples(pretty)
    (tmp_path / "empty.json").write_text("[]\n")
    with pytest.raises(InputError, match="empty.json: the dataset has no examples"):
        file_examples(tmp_path / "empty.json")


class _Tokenizer:
    """Whitespace tokens; its chat template adds one marker token per turn and one at the end."""

    chat_template = "{% for m in messages %}<t> {{ m.content }} {% endfor %}<end>"

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool) -> str:
        return "".join(f"<t> {m['content']} " for m in messages) + "<end>"

    def __call__(self, texts: list[str], add_special_tokens: bool) -> dict[str, list[list[str]]]:
        return {"input_ids": [text.split() + (["<s>"] if add_special_tokens else []) for text in texts]}


def test_token_lengths_follow_the_chat_template() -> None:
    examples = [[("system", "a b"), ("user", "c"), ("assistant", "d e f")]]
    assert token_lengths(_Tokenizer(), examples) == [3 + 6 + 1]  # three turn markers, six words, the end
    plain = _Tokenizer()
    plain.chat_template = None
    assert token_lengths(plain, examples) == [6 + 1]  # the texts and the tokenizer's special token
