"""Preference pairs from judged session details (SPEC §4.3-4.4, paper §4, §5.5 and appendix D.1).

Three constructions over the same judged samples:

- RPO (`rpo_pairs`): every two distinct follow vectors of a turn give two records, each response once
  chosen, with the constraints the chosen fails stated reversed in that record's system prompt, so the
  chosen follows everything its prompt says; margin = constraints of that prompt the rejected fails.
- DPO baseline (`dpo_pairs`): the original prompt; pairs whose followed counts differ, higher chosen.
- KTO (`kto_records`): per turn the highest-scoring sample, desirable, with the constraints it failed
  removed from its prompt, and the lowest-scoring one, undesirable, with the constraints it followed removed.

The pure functions yield pydantic/dict records. The `build_*` entry points stream a detail file into a
LLaMA-Factory dataset; their hot loop assembles each record's JSON text from pieces encoded once per
session (system prompts keyed by constraint list, history per turn, each response), because every
record repeats its prompt and history and datasets run to gigabytes. Both paths share `_plan_turn`,
and the tests check they write the same records.

Follow vectors are handled as bit masks: bit k set when the response follows constraint k.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, Literal

from rpo.utils.io import InputError, JsonArrayWriter, read_jsonl, update_dataset_info
from rpo.utils.pair_stats import SampleEfficiency, direct_flags, format_histogram, reversed_pair_flags
from rpo.utils.records import Message, PreferenceRecord, SessionDetail, Turn
from rpo.utils.system_prompt import detect_lang, render_system_prompt

NonReversible = Literal["drop", "skip"]
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
}


@dataclass
class Counters:
    """What a construction read, emitted and left out; printed as its summary."""

    kind: str = "rpo"
    sessions: int = 0
    turns: int = 0
    samples: int = 0
    unjudged: int = 0
    duplicates: int = 0
    pairs: int = 0
    margin_hist: Counter[int] = field(default_factory=Counter)
    dropped_constraints: int = 0
    skipped_pairs: int = 0
    zero_margin: int = 0
    kto_desirable: int = 0
    kto_undesirable: int = 0
    efficiency: SampleEfficiency = field(default_factory=SampleEfficiency)
    output: str | None = None

    def summary(self) -> str:
        lines = [
            f"{self.kind} records: {self.pairs}" + (f" -> {self.output}" if self.output else ""),
            (
                f"sessions {self.sessions}, turns {self.turns}, samples {self.samples} "
                f"(unjudged, excluded: {self.unjudged}; repeated follow vectors, dropped: {self.duplicates})"
            ),
        ]
        if self.kind == "rpo":
            lines += [
                (
                    f"non-reversible constraints: {self.dropped_constraints} left out of emitted prompts, "
                    f"{self.skipped_pairs} pairs skipped, {self.zero_margin} zero-margin pairs not emitted"
                ),
                "margin histogram:",
                format_histogram(self.margin_hist),
                "sample efficiency (paper Table 4, share of turns with >= 2 judged samples):",
                self.efficiency.table(),
            ]
        if self.kind == "kto":
            lines.append(f"desirable {self.kto_desirable}, undesirable {self.kto_undesirable}")
        return "\n".join(lines)


PlannedPair = tuple[int, int, int, int, int]
"""One directed pair of a turn: (chosen, rejected, kept, flipped, margin).

Chosen and rejected index the turn's distinct samples; `kept` masks the constraints in the pair's
prompt and `flipped` those of them stated reversed. Plain tuples: the hot loop makes millions.
"""

_BITS = bytes.maketrans(b"\x00\x01", b"01")
_DIRECTED: dict[int, list[tuple[int, int]]] = {}


def _mask(follows: list[bool]) -> int:
    """Follow vector as bit mask (bit k = constraint k) without a Python-level loop."""
    return int(bytes(follows[::-1]).translate(_BITS), 2) if follows else 0


def _directed(m: int) -> list[tuple[int, int]]:
    """(i, j) then (j, i) for every i < j < m: each unordered pair in both directions."""
    pairs = _DIRECTED.get(m)
    if pairs is None:
        pairs = [p for i in range(m) for j in range(i + 1, m) for p in ((i, j), (j, i))]
        _DIRECTED[m] = pairs
    return pairs


def _distinct_samples(turn: Turn, counters: Counters) -> tuple[list[int], list[str], int]:
    """Judged samples of a turn with repeated follow vectors dropped (first kept): masks, texts, judged count."""
    masks: list[int] = []
    texts: list[str] = []
    unjudged = 0
    for sample in turn.samples:
        if sample.follows is None:
            unjudged += 1
            continue
        m = _mask(sample.follows)
        if m in masks:
            counters.duplicates += 1
            continue
        masks.append(m)
        texts.append(sample.response)
    counters.samples += len(turn.samples)
    counters.unjudged += unjudged
    return masks, texts, len(turn.samples) - unjudged


def _plan_turn(
    masks: list[int], n: int, reversible: int, non_reversible: NonReversible, counters: Counters
) -> list[PlannedPair]:
    """Directed RPO pairs of one turn (SPEC §4.4), counting what the non-reversible rule leaves out.

    The chosen's prompt keeps what it follows, reverses what it fails where a reversal exists, and
    leaves out (drop) or refuses the pair (skip) where none does; the margin counts the prompt's
    constraints on which the two responses differ, i.e. those the rejected fails as stated.
    """
    full = (1 << n) - 1
    lost = [full & ~m & ~reversible for m in masks]
    skipped = zero = dropped = 0
    if not any(lost):  # every failed constraint reverses: full prompts, margin = differences (>= 1)
        plans = [
            (c, r, full, full & ~masks[c], (masks[c] ^ masks[r]).bit_count())
            for c, r in _directed(len(masks))
        ]
    else:
        kept = [full & ~x for x in lost]
        flipped = [full & ~m & k for m, k in zip(masks, kept)]
        skip = non_reversible == "skip"
        plans = []
        for c, r in _directed(len(masks)):
            if skip and lost[c]:
                skipped += 1
                continue
            margin = ((masks[c] ^ masks[r]) & kept[c]).bit_count()
            if not margin:
                zero += 1
                continue
            dropped += lost[c].bit_count()
            plans.append((c, r, kept[c], flipped[c], margin))
    counters.skipped_pairs += skipped
    counters.zero_margin += zero
    counters.dropped_constraints += dropped
    counters.pairs += len(plans)
    counters.margin_hist.update([p[4] for p in plans])
    return plans


def _record_turn_stats(
    counters: Counters, n: int, masks: list[int], judged: int, plans: list[PlannedPair]
) -> None:
    """Table 4 flags of one turn with >= 2 judged samples: direct pairing vs the reversed pairs emitted."""
    if judged < 2:
        return
    reverse = [False, False, False]
    for c, r, kept, flipped, _ in plans:
        flags = reversed_pair_flags(masks[c], masks[r], kept, flipped)
        reverse = [a or b for a, b in zip(reverse, flags)]
        if all(reverse):
            break
    counters.efficiency.add_turn(n, direct_flags(masks, (1 << n) - 1), (reverse[0], reverse[1], reverse[2]))


def _prompt_constraints(session: SessionDetail, kept: int, flipped: int) -> list[str]:
    """The constraint list of a pair's prompt: kept constraints in order, reversed where flipped."""
    constraints = session.profile.constraints
    reversed_constraints = session.reversed_constraints
    return [
        reversed_constraints[k] if flipped >> k & 1 else c  # type: ignore[misc]
        for k, c in enumerate(constraints)
        if kept >> k & 1
    ]


def _reversible_mask(session: SessionDetail) -> int:
    return sum(1 << k for k, rev in enumerate(session.reversed_constraints) if rev is not None)


def _history(turns: list[Turn], upto: int) -> list[Message]:
    out: list[Message] = []
    for turn in turns[:upto]:
        out += [Message(role="human", value=turn.query), Message(role="gpt", value=turn.reference_response)]
    return out


def _check_mode(non_reversible: str) -> NonReversible:
    if non_reversible not in ("drop", "skip"):
        raise InputError(f"--non_reversible: expected drop or skip, got {non_reversible!r}")
    return non_reversible  # type: ignore[return-value]


def rpo_pairs(
    session: SessionDetail, non_reversible: NonReversible = "drop", counters: Counters | None = None
) -> Iterator[PreferenceRecord]:
    """RPO records of one session, turn by turn, pair by pair (i over j, then j over i)."""
    counters = counters if counters is not None else Counters()
    _check_mode(non_reversible)
    n = len(session.profile.constraints)
    reversible = _reversible_mask(session)
    lang = detect_lang(session.profile)
    counters.sessions += 1
    for t, turn in enumerate(session.turns):
        counters.turns += 1
        masks, texts, judged = _distinct_samples(turn, counters)
        plans = _plan_turn(masks, n, reversible, non_reversible, counters)
        _record_turn_stats(counters, n, masks, judged, plans)
        history = _history(session.turns, t)
        for c, r, kept, flipped, margin in plans:
            system = render_system_prompt(session.profile, _prompt_constraints(session, kept, flipped), lang)
            yield PreferenceRecord(
                conversations=[
                    Message(role="system", value=system),
                    *history,
                    Message(role="human", value=turn.query),
                ],
                chosen=Message(role="gpt", value=texts[c]),
                rejected=Message(role="gpt", value=texts[r]),
                margin=margin,
                session_id=session.session_id,
                turn=t + 1,
            )


def _dpo_plan(masks: list[int], counters: Counters) -> list[tuple[int, int]]:
    """(chosen, rejected) of the DPO baseline: distinct samples whose followed counts differ."""
    plans = []
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            a, b = masks[i].bit_count(), masks[j].bit_count()
            if a != b:
                plans.append((i, j) if a > b else (j, i))
    counters.pairs += len(plans)
    return plans


def dpo_pairs(session: SessionDetail, counters: Counters | None = None) -> Iterator[PreferenceRecord]:
    """DPO baseline records of one session: original prompt, higher followed count chosen, no margin.

    Samples repeating a follow vector are dropped first, as for RPO, so both use the same pool.
    """
    counters = counters if counters is not None else Counters(kind="dpo")
    system = Message(role="system", value=render_system_prompt(session.profile))
    counters.sessions += 1
    for t, turn in enumerate(session.turns):
        counters.turns += 1
        masks, texts, _ = _distinct_samples(turn, counters)
        history = _history(session.turns, t)
        for c, r in _dpo_plan(masks, counters):
            yield PreferenceRecord(
                conversations=[system, *history, Message(role="human", value=turn.query)],
                chosen=Message(role="gpt", value=texts[c]),
                rejected=Message(role="gpt", value=texts[r]),
                session_id=session.session_id,
                turn=t + 1,
            )


def _kto_plan(masks: list[int]) -> tuple[int, int] | None:
    """(best, worst) sample indices of a turn (first on ties), or None without a score gap."""
    if not masks:
        return None
    scores = [m.bit_count() for m in masks]
    best, worst = scores.index(max(scores)), scores.index(min(scores))
    return (best, worst) if scores[best] > scores[worst] else None


def kto_records(session: SessionDetail, counters: Counters | None = None) -> Iterator[dict[str, Any]]:
    """KTO records of one session (paper appendix D.1), LLaMA-Factory sharegpt with a `kto_tag` bool.

    Per turn with a score gap: the highest-scoring sample is desirable under a prompt holding only the
    constraints it follows; the lowest-scoring one is undesirable under a prompt holding only those it fails.
    """
    counters = counters if counters is not None else Counters(kind="kto")
    n = len(session.profile.constraints)
    full = (1 << n) - 1
    lang = detect_lang(session.profile)
    counters.sessions += 1
    for t, turn in enumerate(session.turns):
        counters.turns += 1
        masks, texts, _ = _distinct_samples(turn, counters)
        chosen = _kto_plan(masks)
        if chosen is None:
            continue
        history = [m.model_dump(by_alias=True) for m in _history(session.turns, t)]
        for index, tag, kept in (
            (chosen[0], True, masks[chosen[0]]),
            (chosen[1], False, full & ~masks[chosen[1]]),
        ):
            system = render_system_prompt(session.profile, _prompt_constraints(session, kept, 0), lang)
            counters.pairs += 1
            if tag:
                counters.kto_desirable += 1
            else:
                counters.kto_undesirable += 1
            yield {
                "conversations": [
                    {"from": "system", "value": system},
                    *history,
                    {"from": "human", "value": turn.query},
                    {"from": "gpt", "value": texts[index]},
                ],
                "kto_tag": tag,
                "session_id": session.session_id,
                "turn": t + 1,
            }


_SENTINEL = "\x00"


def _enc(text: str) -> str:
    """`json.dumps(text, ensure_ascii=False)` without the encoder set-up per call."""
    return encode_basestring(text)


def _message(role: str, text: str) -> bytes:
    """One sharegpt message as UTF-8 JSON, the form records are assembled from."""
    return f'{{"from": "{role}", "value": {_enc(text)}}}'.encode()


class _SessionEncoder:
    """JSON pieces of one session, each encoded once: system prompts by constraint list, turns, samples.

    A system prompt is the template rendered once per constraint count with sentinel constraints (the
    skeleton), with the constraint texts put in. JSON-escaping is per character, so the skeleton's
    parts and each constraint are escaped once and a prompt's JSON is their concatenation: the same
    bytes as rendering and encoding each prompt directly.
    """

    def __init__(self, session: SessionDetail):
        self.session = session
        self.lang = detect_lang(session.profile)
        self.tail = f', "session_id": {_enc(session.session_id)}, "turn": '.encode()
        self._systems: dict[tuple[int, int], bytes] = {}
        self._skeletons: dict[int, list[bytes]] = {}
        profile = session.profile
        self._opaque = not any(_SENTINEL in t for t in (profile.name, profile.description, *profile.skills))
        self._original = [_escaped(c) for c in profile.constraints]
        self._reversed = [b"" if c is None else _escaped(c) for c in session.reversed_constraints]

    def _skeleton(self, count: int) -> list[bytes]:
        parts = self._skeletons.get(count)
        if parts is None:
            marks = [f"{_SENTINEL}{i}{_SENTINEL}" for i in range(count)]
            text = render_system_prompt(self.session.profile, marks, self.lang)
            parts = [_escaped(part) for part in text.split(_SENTINEL)[::2]]
            self._skeletons[count] = parts
        return parts

    def system(self, kept: int, flipped: int) -> bytes:
        key = (kept, flipped)
        data = self._systems.get(key)
        if data is not None:
            return data
        if not self._opaque:
            data = _message("system", self._direct(kept, flipped))
        else:
            chosen = [
                self._reversed[k] if flipped >> k & 1 else text
                for k, text in enumerate(self._original)
                if kept >> k & 1
            ]
            parts = self._skeleton(len(chosen))
            pieces = [b'{"from": "system", "value": "', parts[0]]
            for text, part in zip(chosen, parts[1:]):
                pieces += (text, part)
            pieces.append(b'"}')
            data = b"".join(pieces)
        self._systems[key] = data
        return data

    def _direct(self, kept: int, flipped: int) -> str:
        constraints = _prompt_constraints(self.session, kept, flipped)
        return render_system_prompt(self.session.profile, constraints, self.lang)

    def turns(self) -> Iterator[tuple[int, Turn, bytes]]:
        """(1-based turn number, turn, encoded history + query) for each turn."""
        history = b""
        for t, turn in enumerate(self.session.turns):
            yield t + 1, turn, history + _message("human", turn.query)
            history += (
                _message("human", turn.query) + b", " + _message("gpt", turn.reference_response) + b", "
            )


def _escaped(text: str) -> bytes:
    """JSON string escaping of `text` without the quotes, UTF-8."""
    return encode_basestring(text)[1:-1].encode()


Encoded = tuple[bytes, int]
"""A session's records as UTF-8 JSON objects joined by `,\\n`, and how many there are."""

_NUMBERS = [str(i).encode() for i in range(1024)]


def _number(i: int) -> bytes:
    return _NUMBERS[i] if i < 1024 else str(i).encode()


def _encode_rpo(session: SessionDetail, non_reversible: NonReversible, counters: Counters) -> Encoded:
    enc = _SessionEncoder(session)
    n = len(session.profile.constraints)
    reversible = _reversible_mask(session)
    pieces: list[bytes] = []
    counters.sessions += 1
    for t, turn, dialogue in enc.turns():
        counters.turns += 1
        masks, texts, judged = _distinct_samples(turn, counters)
        plans = _plan_turn(masks, n, reversible, non_reversible, counters)
        _record_turn_stats(counters, n, masks, judged, plans)
        if not plans:
            continue
        answers = [_message("gpt", text) for text in texts]
        tail = enc.tail + _number(t) + b"}"
        heads: dict[int, bytes] = {}
        for c, r, kept, flipped, margin in plans:
            head = heads.get(c)
            if head is None:
                parts = (
                    b',\n{"conversations": [',
                    enc.system(kept, flipped),
                    b", ",
                    dialogue,
                    b'], "chosen": ',
                )
                head = b"".join((*parts, answers[c], b', "rejected": '))
                heads[c] = head
            pieces += (head, answers[r], b', "margin": ', _number(margin), tail)
    if pieces:
        pieces[0] = pieces[0][2:]
    return b"".join(pieces), len(pieces) // 5


def _encode_dpo(session: SessionDetail, counters: Counters) -> Encoded:
    enc = _SessionEncoder(session)
    n = len(session.profile.constraints)
    full = (1 << n) - 1
    out: list[bytes] = []
    counters.sessions += 1
    for t, turn, dialogue in enc.turns():
        counters.turns += 1
        masks, texts, _ = _distinct_samples(turn, counters)
        plans = _dpo_plan(masks, counters)
        if not plans:
            continue
        answers = [_message("gpt", text) for text in texts]
        head = b'{"conversations": [' + enc.system(full, 0) + b", " + dialogue + b'], "chosen": '
        tail = enc.tail + _number(t) + b"}"
        out += [head + answers[c] + b', "rejected": ' + answers[r] + tail for c, r in plans]
    return b",\n".join(out), len(out)


def _encode_kto(session: SessionDetail, counters: Counters) -> Encoded:
    out = [json.dumps(record, ensure_ascii=False).encode() for record in kto_records(session, counters)]
    return b",\n".join(out), len(out)


def _build(
    detail_path: str | Path,
    output_dir: str | Path,
    dataset_name: str,
    counters: Counters,
    encode: Callable[[SessionDetail], Encoded],
    entry: dict[str, Any],
) -> Counters:
    """Stream a detail file through `encode` into `{output_dir}/{dataset_name}.json`, then register it."""
    output = Path(output_dir) / f"{dataset_name}.json"
    with JsonArrayWriter(output) as writer:
        for session in read_jsonl(detail_path, SessionDetail):
            writer.write_encoded(*encode(session))
    update_dataset_info(output_dir, dataset_name, {"file_name": output.name, **entry})
    counters.output = str(output)
    return counters


def build_rpo_dataset(
    detail_path: str | Path = "data/rpo_data/demo_detail.jsonl",
    output_dir: str | Path = "data",
    dataset_name: str = "rpo",
    non_reversible: str = "drop",
) -> Counters:
    """Build the RPO ranking dataset with its margin column and register it in `dataset_info.json`."""
    mode = _check_mode(non_reversible)
    counters = Counters(kind="rpo")
    entry = {
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {
            "messages": "conversations",
            "chosen": "chosen",
            "rejected": "rejected",
            "margin": "margin",
        },
        "tags": SHAREGPT_TAGS,
    }
    return _build(
        detail_path, output_dir, dataset_name, counters, lambda s: _encode_rpo(s, mode, counters), entry
    )


def build_dpo_dataset(
    detail_path: str | Path = "data/rpo_data/demo_detail.jsonl",
    output_dir: str | Path = "data",
    dataset_name: str = "dpo",
) -> Counters:
    """Build the DPO baseline ranking dataset (no margin column) and register it."""
    counters = Counters(kind="dpo")
    entry = {
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        "tags": SHAREGPT_TAGS,
    }
    return _build(detail_path, output_dir, dataset_name, counters, lambda s: _encode_dpo(s, counters), entry)


def build_kto_dataset(
    detail_path: str | Path = "data/rpo_data/demo_detail.jsonl",
    output_dir: str | Path = "data",
    dataset_name: str = "kto",
) -> Counters:
    """Build the KTO dataset (a `kto_tag` column, not ranking) and register it."""
    counters = Counters(kind="kto")
    entry = {
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "kto_tag": "kto_tag"},
        "tags": SHAREGPT_TAGS,
    }
    return _build(detail_path, output_dir, dataset_name, counters, lambda s: _encode_kto(s, counters), entry)


def detail_stats(detail_path: str | Path, non_reversible: str = "drop") -> Counters:
    """Counts, margins and Table 4 rates of a detail file, without writing a dataset."""
    mode = _check_mode(non_reversible)
    counters = Counters(kind="rpo")
    for session in read_jsonl(detail_path, SessionDetail):
        n = len(session.profile.constraints)
        reversible = _reversible_mask(session)
        counters.sessions += 1
        for turn in session.turns:
            counters.turns += 1
            masks, _, judged = _distinct_samples(turn, counters)
            _record_turn_stats(counters, n, masks, judged, _plan_turn(masks, n, reversible, mode, counters))
    return counters
