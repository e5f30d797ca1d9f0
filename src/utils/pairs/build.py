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

Inside, a session is the plain dict of its JSON line (`RawSession`): the builders validate each line
with a TypeAdapter over TypedDicts that mirror `SessionDetail` (a line that fails is re-read through
`SessionDetail`, so errors name file, line and field as every reader's do); the pure functions take
the models and dump them.

Follow vectors are handled as bit masks: bit k set when the response follows constraint k.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from itertools import combinations, compress
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from operator import getitem
from pathlib import Path
from typing import Any, Literal, NotRequired, cast

import orjson
from pydantic import TypeAdapter, ValidationError
from rpo.utils.io import InputError, JsonArrayWriter, open_text, parse_jsonl_line, update_dataset_info
from rpo.utils.pairs import parallel_array
from rpo.utils.pairs.stats import SampleEfficiency, direct_flags, format_histogram, reversed_pair_flags
from rpo.utils.prompts.language import detect_lang
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.schema import Message, PreferenceRecord, ProfileCore, SessionDetail
from typing_extensions import TypedDict

NonReversible = Literal["drop", "skip"]
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
}


class RawSample(TypedDict):
    response: str
    follows: list[bool] | None


class RawTurn(TypedDict):
    query: str
    reference_response: str
    samples: NotRequired[list[RawSample]]


class RawProfile(TypedDict):
    name: str
    description: NotRequired[str]
    skills: NotRequired[list[str]]
    constraints: list[str]


class RawSession(TypedDict):
    """A `SessionDetail` as a plain dict (unknown keys dropped, defaults not filled in)."""

    session_id: str
    profile: RawProfile
    reversed_constraints: list[str | None]
    turns: list[RawTurn]


@functools.cache
def _session_adapter() -> TypeAdapter[RawSession]:
    return TypeAdapter(RawSession)


def _lengths_match(session: RawSession) -> bool:
    """`SessionDetail`'s own check: one reversal and one verdict a sample per constraint."""
    n = len(session["profile"]["constraints"])
    return len(session["reversed_constraints"]) == n and all(
        sample["follows"] is None or len(sample["follows"]) == n
        for turn in session["turns"]
        for sample in turn.get("samples", ())
    )


def _read_sessions(path: str | Path) -> Iterator[RawSession]:
    """`read_jsonl(path, SessionDetail)` as validated plain dicts: the builders' input."""
    path = _detail_file(path)
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            session = _parse_session(path, lineno, line)
            if session is not None:
                yield session


def _detail_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return path


def _parse_session(path: Path, lineno: int, line: str | bytes) -> RawSession | None:
    """One detail line as a validated plain dict, or None for a blank line.

    Parsing with orjson and validating TypedDicts skips building a model per sample; a line either
    rejects (invalid JSON, a constant orjson refuses such as NaN, a bad field) goes through
    `parse_jsonl_line` with `SessionDetail`, which raises the one-line InputError, or, where it
    accepts after all, gives the session.
    """
    if line.isspace():
        return None
    try:
        session = _session_adapter().validate_python(orjson.loads(line))
    except (orjson.JSONDecodeError, ValidationError):
        session = None
    if session is None or not _lengths_match(session):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{path}: line {lineno}: not valid UTF-8 (byte {err.start + 1})") from None
        session = _raw(parse_jsonl_line(line, SessionDetail, path, lineno))
    return session


def _raw(session: SessionDetail) -> RawSession:
    return cast(RawSession, session.model_dump())


def _profile(session: RawSession) -> ProfileCore:
    return ProfileCore.model_validate(session["profile"])


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

    def merge(self, other: Counters) -> None:
        """Add another part's counts (a worker's, in a parallel build) to these."""
        for counter in fields(self):
            mine = getattr(self, counter.name)
            if isinstance(mine, int):
                setattr(self, counter.name, mine + getattr(other, counter.name))
        self.margin_hist.update(other.margin_hist)
        self.efficiency.tally.update(other.efficiency.tally)

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


TurnPlan = tuple[list[int], list[int], list[int], list[int], list[int]]
"""A turn's directed RPO pairs and prompts: (chosen, rejected, margin, kept, flipped).

The first three are parallel lists, one item per pair, indexing the turn's distinct samples; `kept[c]`
masks the constraints in the prompt that sample c gets when chosen and `flipped[c]` those of them
stated reversed. Flat lists of ints: the hot loop handles millions of pairs.
"""

_BITS = bytes.maketrans(b"\x00\x01", b"01")
_POWERS = [1 << k for k in range(256)]
_DIRECTED: dict[int, tuple[list[int], list[int]]] = {}


def _mask(follows: list[bool]) -> int:
    """Follow vector as bit mask (bit k = constraint k) without a Python-level loop."""
    return int(bytes(follows[::-1]).translate(_BITS), 2) if follows else 0


def _directed(m: int) -> tuple[list[int], list[int]]:
    """(i, j) then (j, i) for every i < j < m, as (firsts, seconds): each unordered pair both ways."""
    pairs = _DIRECTED.get(m)
    if pairs is None:
        both = [p for i in range(m) for j in range(i + 1, m) for p in ((i, j), (j, i))]
        pairs = [c for c, _ in both], [r for _, r in both]
        _DIRECTED[m] = pairs
    return pairs


def _distinct_samples(turn: RawTurn, counters: Counters) -> tuple[list[int], list[str], int]:
    """Judged samples of a turn with repeated follow vectors dropped (first kept): masks, texts, judged count."""
    masks: list[int] = []
    texts: list[str] = []
    unjudged = 0
    samples = turn.get("samples", ())
    for sample in samples:
        follows = sample["follows"]
        if follows is None:
            unjudged += 1
            continue
        m = sum(compress(_POWERS, follows)) if len(follows) <= len(_POWERS) else _mask(follows)
        if m in masks:
            counters.duplicates += 1
            continue
        masks.append(m)
        texts.append(sample["response"])
    counters.samples += len(samples)
    counters.unjudged += unjudged
    return masks, texts, len(samples) - unjudged


def _both_ways(forward: list[int], backward: list[int] | None = None) -> list[int]:
    """Per unordered pair (i < j), the value for i over j then for j over i (the order of `_directed`)."""
    out = forward * 2
    out[::2] = forward
    out[1::2] = forward if backward is None else backward
    return out


def _plan_turn(
    masks: list[int], n: int, reversible: int, non_reversible: NonReversible, counters: Counters
) -> TurnPlan:
    """Directed RPO pairs of one turn (SPEC §4.4), counting what the non-reversible rule leaves out.

    The chosen's prompt keeps what it follows, reverses what it fails where a reversal exists, and
    leaves out (drop) or refuses the pair (skip) where none does; the margin counts the prompt's
    constraints on which the two responses differ, i.e. those the rejected fails as stated.
    """
    full = (1 << n) - 1
    lost = [] if reversible & full == full else [full & ~m & ~reversible for m in masks]
    firsts, seconds = _directed(len(masks))
    if not any(lost):  # every failed constraint reverses: full prompts, margin = differences (>= 1)
        margins = _both_ways([(a ^ b).bit_count() for a, b in combinations(masks, 2)])
        counters.pairs += len(margins)
        counters.margin_hist.update(margins)
        return firsts, seconds, margins, [full] * len(masks), [full & ~m for m in masks]
    kept = [full & ~x for x in lost]
    flipped = [full & ~m & k for m, k in zip(masks, kept)]
    if non_reversible == "drop":
        pairs = list(combinations(zip(masks, kept), 2))
        margins = _both_ways(
            [((a ^ b) & ka).bit_count() for (a, ka), (b, _) in pairs],
            [((a ^ b) & kb).bit_count() for (a, _), (b, kb) in pairs],
        )
        if 0 not in margins:  # every pair emitted; each sample is chosen in len(masks) - 1 of them
            counters.dropped_constraints += (len(masks) - 1) * sum(x.bit_count() for x in lost)
            counters.pairs += len(margins)
            counters.margin_hist.update(margins)
            return firsts, seconds, margins, kept, flipped
    skip = non_reversible == "skip"
    skipped = zero = dropped = 0
    chosen: list[int] = []
    rejected: list[int] = []
    margins = []
    for c, r in zip(firsts, seconds):
        if skip and lost[c]:
            skipped += 1
            continue
        margin = ((masks[c] ^ masks[r]) & kept[c]).bit_count()
        if not margin:
            zero += 1
            continue
        dropped += lost[c].bit_count()
        chosen.append(c)
        rejected.append(r)
        margins.append(margin)
    counters.skipped_pairs += skipped
    counters.zero_margin += zero
    counters.dropped_constraints += dropped
    counters.pairs += len(margins)
    counters.margin_hist.update(margins)
    return chosen, rejected, margins, kept, flipped


def _record_turn_stats(counters: Counters, n: int, masks: list[int], judged: int, plan: TurnPlan) -> None:
    """Table 4 flags of one turn with >= 2 judged samples: direct pairing vs the reversed pairs emitted."""
    if judged < 2:
        return
    chosen, rejected, _, kept, flipped = plan
    valid = dominated = perfect = False
    for c, r in zip(chosen, rejected):
        v, d, p = reversed_pair_flags(masks[c], masks[r], kept[c], flipped[c])
        valid, dominated, perfect = valid or v, dominated or d, perfect or p
        if valid and dominated and perfect:
            break
    counters.efficiency.add_turn(n, direct_flags(masks, (1 << n) - 1), (valid, dominated, perfect))


def _prompt_constraints(session: RawSession, kept: int, flipped: int) -> list[str]:
    """The constraint list of a pair's prompt: kept constraints in order, reversed where flipped."""
    constraints = session["profile"]["constraints"]
    reversed_constraints = session["reversed_constraints"]
    return [
        reversed_constraints[k] if flipped >> k & 1 else c  # type: ignore[misc]
        for k, c in enumerate(constraints)
        if kept >> k & 1
    ]


def _reversible_mask(session: RawSession) -> int:
    return sum(1 << k for k, rev in enumerate(session["reversed_constraints"]) if rev is not None)


def _history(turns: list[RawTurn], upto: int) -> list[Message]:
    out: list[Message] = []
    for turn in turns[:upto]:
        out += [
            Message(role="human", value=turn["query"]),
            Message(role="gpt", value=turn["reference_response"]),
        ]
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
    raw = _raw(session)
    n = len(session.profile.constraints)
    reversible = _reversible_mask(raw)
    lang = detect_lang(session.profile)
    counters.sessions += 1
    for t, turn in enumerate(raw["turns"]):
        counters.turns += 1
        masks, texts, judged = _distinct_samples(turn, counters)
        plan = _plan_turn(masks, n, reversible, non_reversible, counters)
        _record_turn_stats(counters, n, masks, judged, plan)
        history = _history(raw["turns"], t)
        chosen, rejected, margins, kept, flipped = plan
        for c, r, margin in zip(chosen, rejected, margins):
            constraints = _prompt_constraints(raw, kept[c], flipped[c])
            system = render_system_prompt(session.profile, constraints, lang)
            yield PreferenceRecord(
                conversations=[
                    Message(role="system", value=system),
                    *history,
                    Message(role="human", value=turn["query"]),
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
    raw = _raw(session)
    system = Message(role="system", value=render_system_prompt(session.profile))
    counters.sessions += 1
    for t, turn in enumerate(raw["turns"]):
        counters.turns += 1
        masks, texts, _ = _distinct_samples(turn, counters)
        history = _history(raw["turns"], t)
        for c, r in _dpo_plan(masks, counters):
            yield PreferenceRecord(
                conversations=[system, *history, Message(role="human", value=turn["query"])],
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
    yield from _kto_records(_raw(session), session.profile, counters)


def _kto_records(session: RawSession, profile: ProfileCore, counters: Counters) -> Iterator[dict[str, Any]]:
    n = len(profile.constraints)
    full = (1 << n) - 1
    lang = detect_lang(profile)
    counters.sessions += 1
    for t, turn in enumerate(session["turns"]):
        counters.turns += 1
        masks, texts, _ = _distinct_samples(turn, counters)
        chosen = _kto_plan(masks)
        if chosen is None:
            continue
        history = [m.model_dump(by_alias=True) for m in _history(session["turns"], t)]
        for index, tag, kept in (
            (chosen[0], True, masks[chosen[0]]),
            (chosen[1], False, full & ~masks[chosen[1]]),
        ):
            system = render_system_prompt(profile, _prompt_constraints(session, kept, 0), lang)
            counters.pairs += 1
            if tag:
                counters.kto_desirable += 1
            else:
                counters.kto_undesirable += 1
            yield {
                "conversations": [
                    {"from": "system", "value": system},
                    *history,
                    {"from": "human", "value": turn["query"]},
                    {"from": "gpt", "value": texts[index]},
                ],
                "kto_tag": tag,
                "session_id": session["session_id"],
                "turn": t + 1,
            }


def _quoted(text: str) -> bytes:
    """`json.dumps(text, ensure_ascii=False).encode()`: the same bytes (orjson escapes as json does)."""
    try:
        return orjson.dumps(text)
    except TypeError:  # not encodable as UTF-8 (a lone surrogate): fail as the json path does
        return encode_basestring(text).encode()


def _message(role: str, text: str) -> bytes:
    """One sharegpt message as UTF-8 JSON, the form records are assembled from."""
    return b"".join((b'{"from": "', role.encode(), b'", "value": ', _quoted(text), b"}"))


def _escaped(text: str) -> bytes:
    """JSON string escaping of `text` without the quotes, UTF-8."""
    return _quoted(text)[1:-1]


_SEP = "\x7f"  # DEL: JSON escaping leaves it as it is


def _escaped_all(texts: list[str]) -> list[bytes]:
    """`_escaped` of each text, escaping them all in one call (joined by a character none holds)."""
    joined = _SEP.join(texts)
    if texts and joined.count(_SEP) == len(texts) - 1:
        try:
            return orjson.dumps(joined)[1:-1].split(_SEP.encode())
        except TypeError:
            pass
    return [_escaped(text) for text in texts]


_MARK = "\x00"
_LayoutKey = tuple[str, bool, bool, tuple[bool, ...], int]


@dataclass(frozen=True)
class _Layout:
    """The system prompt template for one shape of profile, split around its constraints.

    The prompt has count + 1 stretches before, between and after the constraints: `parts` holds the
    JSON-escaped text of those without profile values (the same for every profile, None for the
    others) and `dynamic` the others as (index, `str.format` string whose fields {n}, {d}, {s<i>}
    are the profile's name, description and skills). `lead` / `trail` name the profile field that
    opens / closes the prompt with nothing around it.
    """

    parts: list[bytes | None]
    dynamic: list[tuple[int, str]]
    lead: str | None
    trail: str | None


_LAYOUTS: dict[_LayoutKey, _Layout | None] = {}


def _layout(key: _LayoutKey) -> _Layout | None:
    """The layout of `key` = (lang, name given, description given, each skill given, constraint count).

    That is all a template decides its layout on: it is rendered once with placeholders for the values
    (empty values rendered empty, as they are) and split at them, then checked against a rendering
    with stand-in values. A template that does not put its values in verbatim, or puts constraints
    anywhere but once each in order, gets None: its prompts are rendered one by one.
    """
    if key in _LAYOUTS:
        return _LAYOUTS[key]
    lang, name, description, skills, count = key

    def render(value: Callable[[str], str]) -> str:
        profile = ProfileCore.model_construct(
            name=value("n") if name else "",
            description=value("d") if description else "",
            skills=[value(f"s{i}") if given else "" for i, given in enumerate(skills)],
            constraints=[],
        )
        return render_system_prompt(profile, [value(f"c{i}") for i in range(count)], lang)

    parts = render(lambda tag: f"{_MARK}{tag}{_MARK}").split(_MARK)
    tags = parts[1::2]
    fields = {"n", "d", *(f"s{i}" for i in range(len(skills)))}
    layout = None
    if (
        len(parts) % 2 == 1
        and set(tags) <= fields | {f"c{i}" for i in range(count)}
        and [tag for tag in tags if tag not in fields] == [f"c{i}" for i in range(count)]
        and render(lambda tag: f"<{tag}>")
        == "".join(p if i % 2 == 0 else f"<{p}>" for i, p in enumerate(parts))
    ):
        groups = [parts[0].replace("{", "{{").replace("}", "}}")]
        for tag, literal in zip(tags, parts[2::2]):
            literal = literal.replace("{", "{{").replace("}", "}}")
            if tag in fields:
                groups[-1] += "{" + tag + "}" + literal
            else:
                groups.append(literal)
        dynamic = [(i, g) for i, g in enumerate(groups) if "{" in g.replace("{{", "")]
        layout = _Layout(
            parts=[None if (i, g) in dynamic else _escaped(g.format()) for i, g in enumerate(groups)],
            dynamic=dynamic,
            lead=tags[0] if tags and not parts[0] and tags[0] in fields else None,
            trail=tags[-1] if tags and not parts[-1] and tags[-1] in fields else None,
        )
    _LAYOUTS[key] = layout
    return layout


_SYSTEM_OPEN = b'{"from": "system", "value": "'
_SYSTEM_CLOSE = b'"}'


class _SessionEncoder:
    """JSON pieces of one session, each encoded once: system prompts by constraint list, turns, samples.

    A system prompt is assembled from the template's layout for its number of constraints (`_layout`,
    shared by every profile of the same shape) with this session's profile and constraint texts put in.
    JSON-escaping is per character, so escaping each piece once and concatenating gives the same bytes
    as rendering and encoding each prompt directly. The rendered prompt is stripped, so a value at the
    very start or end of the prompt with whitespace at that edge (or an empty constraint) would be cut
    differently: such prompts are rendered directly.
    """

    def __init__(self, session: RawSession, profile: ProfileCore | None = None):
        self.session = session
        self._profile = profile
        raw = session["profile"]
        name, description, skills = raw["name"], raw.get("description", ""), raw.get("skills", [])
        constraints = raw["constraints"]
        reversed_constraints = session["reversed_constraints"]
        # the language is told by CJK characters: a profile all in ASCII has none (no regex needed)
        ascii_only = all(t.isascii() for t in (name, description, *skills, *constraints))
        self.lang = "en" if ascii_only else detect_lang(self.profile)
        self.tail = b', "session_id": ' + _quoted(session["session_id"]) + b', "turn": '
        self.n = n = len(constraints)
        self.full = (1 << n) - 1
        given = [c for c in reversed_constraints if c is not None]
        escaped = _escaped_all([*constraints, *given])
        self._original = escaped[:n]
        rest = iter(escaped[n:])
        self._reversed = [b"" if c is None else next(rest) for c in reversed_constraints]
        self._direct_only = any(not t or t[0].isspace() or t[-1].isspace() for t in (*constraints, *given))
        self._shape = (self.lang, bool(name), bool(description), tuple(map(bool, skills)))
        self._values = {"n": name, "d": description, **{f"s{i}": skill for i, skill in enumerate(skills)}}
        self._skeletons: dict[int, list[bytes] | None] = {}
        self._groups: dict[str, bytes] = {}
        self._choices: list[tuple[bytes, bytes]] | None = None
        self.opening = b""

    @property
    def profile(self) -> ProfileCore:
        if self._profile is None:
            self._profile = _profile(self.session)
        return self._profile

    def _skeleton(self, count: int) -> list[bytes] | None:
        """The prompt's JSON message around its `count` constraints: count + 1 pieces, or None (render)."""
        if count in self._skeletons:
            return self._skeletons[count]
        layout = None if self._direct_only else _layout((*self._shape, count))
        parts = None
        if layout is not None and self._edges_fit(layout):
            parts = layout.parts.copy()
            for i, group in layout.dynamic:
                data = self._groups.get(group)
                if data is None:
                    data = self._groups[group] = _escaped(group.format_map(self._values))
                parts[i] = data
            parts[0] = _SYSTEM_OPEN + parts[0]  # type: ignore[operator]
            parts[-1] += _SYSTEM_CLOSE  # type: ignore[operator]
        self._skeletons[count] = parts  # type: ignore[assignment]
        return parts  # type: ignore[return-value]

    def _edges_fit(self, layout: _Layout) -> bool:
        """No profile value that opens or closes the prompt has whitespace at that edge."""
        values = self._values
        return not (layout.lead and values[layout.lead][0].isspace()) and not (
            layout.trail and values[layout.trail][-1].isspace()
        )

    def choices(self) -> list[tuple[bytes, bytes]]:
        """Per constraint, for prompts keeping all of them: (its text, its reversal) with what follows
        it in the prompt; the opening before the first is `opening`. Empty where prompts are rendered."""
        if self._choices is None:
            parts = self._skeleton(self.n)
            self._choices = []
            if parts is not None and self.n:
                self.opening = parts[0]
                self._choices = [
                    (text + part, rev + part)
                    for text, rev, part in zip(self._original, self._reversed, parts[1:])
                ]
        return self._choices

    def system_pieces(self, kept: int, flipped: int, before: bytes = b"") -> list[bytes]:
        """The system message of a prompt as pieces to join (after `before`): the kept constraints,
        reversed where flipped."""
        if kept == self.full and self.choices():
            pieces = [before, self.opening]
            pieces += map(getitem, self._choices, _bits(flipped, self.n))  # type: ignore[arg-type]
            return pieces
        parts = self._skeleton(kept.bit_count())
        if parts is None:
            return [before, _message("system", self._direct(kept, flipped))]
        original, reversed_ = self._original, self._reversed
        pieces = [before] * (2 * len(parts))
        pieces[1::2] = parts
        pieces[2::2] = [
            reversed_[k] if flipped >> k & 1 else text for k, text in enumerate(original) if kept >> k & 1
        ]
        return pieces

    def system(self, kept: int, flipped: int) -> bytes:
        """The system message of a prompt (see `system_pieces`), joined."""
        return b"".join(self.system_pieces(kept, flipped))

    def _direct(self, kept: int, flipped: int) -> str:
        constraints = _prompt_constraints(self.session, kept, flipped)
        return render_system_prompt(self.profile, constraints, self.lang)

    def turns(self) -> Iterator[tuple[int, RawTurn, bytes]]:
        """(1-based turn number, turn, encoded history + query) for each turn."""
        history = b""
        for t, turn in enumerate(self.session["turns"]):
            query = _message("human", turn["query"])
            yield t + 1, turn, history + query
            history += query + b", " + _message("gpt", turn["reference_response"]) + b", "


_BIT_TABLE: list[tuple[int, ...]] = []


def _bits(mask: int, n: int) -> Sequence[int]:
    """The low `n` bits of `mask`, bit 0 first (at least `n` items; a table lookup below 2**12)."""
    if mask < 4096 and n <= 12:
        if not _BIT_TABLE:
            _BIT_TABLE.extend(tuple(m >> k & 1 for k in range(12)) for m in range(4096))
        return _BIT_TABLE[mask]
    return [mask >> k & 1 for k in range(n)]


Encoded = tuple[bytes, int]
"""A session's records as UTF-8 JSON objects joined by `,\\n`, and how many there are."""

_NUMBERS = [str(i).encode() for i in range(1024)]


def _number(i: int) -> bytes:
    return _NUMBERS[i] if i < 1024 else str(i).encode()


_MARGINS = [b'"}, "margin": ' + _number(m) for m in range(65)]


def _margin_pieces(top: int) -> list[bytes]:
    """`"}, "margin": m` (closing the rejected answer) for m = 0..top."""
    if top < len(_MARGINS):
        return _MARGINS[: top + 1]
    return [b'"}, "margin": ' + _number(m) for m in range(top + 1)]


_RPO_OPEN = b',\n{"conversations": ['
_RPO_REJECTED = b'"}, "rejected": {"from": "gpt", "value": "'


def _encode_rpo(session: RawSession, non_reversible: NonReversible, counters: Counters) -> Encoded:
    """A session's RPO records: each record is three pieces, the part up to the rejected answer
    (one per chosen sample), the rejected answer and the margin with the closing fields."""
    enc = _SessionEncoder(session)
    n, full, choices = enc.n, enc.full, enc.choices()
    reversible = _reversible_mask(session)
    pieces: list[bytes] = []
    counters.sessions += 1
    for t, turn, dialogue in enc.turns():
        counters.turns += 1
        masks, texts, judged = _distinct_samples(turn, counters)
        plan = _plan_turn(masks, n, reversible, non_reversible, counters)
        _record_turn_stats(counters, n, masks, judged, plan)
        chosen, rejected, margins, kept, flipped = plan
        if not margins:
            continue
        answers = _escaped_all(texts)
        middle = b", " + dialogue + b'], "chosen": {"from": "gpt", "value": "'
        heads = []
        for c, answer in enumerate(answers):
            if kept[c] == full and choices:  # the common prompt: every constraint, some reversed
                head = [_RPO_OPEN, enc.opening]
                head += map(getitem, choices, _bits(flipped[c], n))
            else:
                head = enc.system_pieces(kept[c], flipped[c], _RPO_OPEN)
            head += (middle, answer, _RPO_REJECTED)
            heads.append(b"".join(head))
        tail = enc.tail + _number(t) + b"}"
        closing = [piece + tail for piece in _margin_pieces(max(margins))]
        start = len(pieces)
        pieces += margins * 3
        pieces[start::3] = map(heads.__getitem__, chosen)
        pieces[start + 1 :: 3] = map(answers.__getitem__, rejected)
        pieces[start + 2 :: 3] = map(closing.__getitem__, margins)
    if pieces:
        pieces[0] = pieces[0][2:]
    return b"".join(pieces), len(pieces) // 3


def _encode_dpo(session: RawSession, counters: Counters) -> Encoded:
    enc = _SessionEncoder(session)
    n = enc.n
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


def _encode_kto(session: RawSession, counters: Counters) -> Encoded:
    records = _kto_records(session, _profile(session), counters)
    out = [json.dumps(record, ensure_ascii=False).encode() for record in records]
    return b",\n".join(out), len(out)


def _build(
    detail_path: str | Path,
    output_dir: str | Path,
    dataset_name: str,
    counters: Counters,
    encode: Callable[[RawSession], Encoded],
    entry: dict[str, Any],
    workers: int | None,
) -> Counters:
    """Stream a detail file through `encode` into `{output_dir}/{dataset_name}.json`, then register it.

    `encode` updates `counters`. A large plain file is encoded by `workers` forked processes (default:
    one per CPU; see `rpo.utils.pairs.parallel_array`), whose copies of `counters` are merged back.
    """
    path = _detail_file(detail_path)
    output = Path(output_dir) / f"{dataset_name}.json"
    workers = parallel_array.default_workers() if workers is None else workers
    if workers > 1 and path.suffix != ".gz" and path.stat().st_size >= parallel_array.PARALLEL_MIN_BYTES:

        def encode_line(lineno: int, line: bytes) -> Encoded:
            session = _parse_session(path, lineno, line)
            return (b"", 0) if session is None else encode(session)

        _, states = parallel_array.write_json_array(path, output, encode_line, counters, workers)
        for state in states:
            counters.merge(state)
    else:
        with JsonArrayWriter(output) as writer:
            for session in _read_sessions(path):
                writer.write_encoded(*encode(session))
    update_dataset_info(output_dir, dataset_name, {"file_name": output.name, **entry})
    counters.output = str(output)
    return counters


def build_rpo_dataset(
    detail_path: str | Path = "data/rpo_data/demo_detail.jsonl",
    output_dir: str | Path = "data",
    dataset_name: str = "rpo",
    non_reversible: str = "drop",
    workers: int | None = None,
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
    encode = functools.partial(_encode_rpo, non_reversible=mode, counters=counters)
    return _build(detail_path, output_dir, dataset_name, counters, encode, entry, workers)


def build_dpo_dataset(
    detail_path: str | Path = "data/rpo_data/demo_detail.jsonl",
    output_dir: str | Path = "data",
    dataset_name: str = "dpo",
    workers: int | None = None,
) -> Counters:
    """Build the DPO baseline ranking dataset (no margin column) and register it."""
    counters = Counters(kind="dpo")
    entry = {
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        "tags": SHAREGPT_TAGS,
    }
    encode = functools.partial(_encode_dpo, counters=counters)
    return _build(detail_path, output_dir, dataset_name, counters, encode, entry, workers)


def build_kto_dataset(
    detail_path: str | Path = "data/rpo_data/demo_detail.jsonl",
    output_dir: str | Path = "data",
    dataset_name: str = "kto",
    workers: int | None = None,
) -> Counters:
    """Build the KTO dataset (a `kto_tag` column, not ranking) and register it."""
    counters = Counters(kind="kto")
    entry = {
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "kto_tag": "kto_tag"},
        "tags": SHAREGPT_TAGS,
    }
    encode = functools.partial(_encode_kto, counters=counters)
    return _build(detail_path, output_dir, dataset_name, counters, encode, entry, workers)


def detail_stats(detail_path: str | Path, non_reversible: str = "drop") -> Counters:
    """Counts, margins and Table 4 rates of a detail file, without writing a dataset."""
    mode = _check_mode(non_reversible)
    counters = Counters(kind="rpo")
    for session in _read_sessions(detail_path):
        n = len(session["profile"]["constraints"])
        reversible = _reversible_mask(session)
        counters.sessions += 1
        for turn in session["turns"]:
            counters.turns += 1
            masks, _, judged = _distinct_samples(turn, counters)
            _record_turn_stats(counters, n, masks, judged, _plan_turn(masks, n, reversible, mode, counters))
    return counters
