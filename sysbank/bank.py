"""An in-memory SysBank with filters, fast search and statistics.

Searching 32k prompts many times (the web page searches as you type) must stay well under a
fifth of a second, so the searchable text of every record is joined once into one lowercased
string: a query is then a handful of C-level `str.find` / regex scans instead of a Python loop.

Regular expressions come from users (and from a web page), and a backtracking one such as
`(\\w|\\w)*#` can take tens of seconds, so they run on the `regex` engine under a deadline and with
the GIL released. Only patterns whose shape can backtrack without end (a repeat inside a repeat,
alternatives under a repeat, a backreference, syntax Python's parser does not read) get the short
deadline; an ordinary pattern such as `not exceed (80|120) words` scans in time proportional to the
text and gets `ORDINARY_TIMEOUT_FACTOR` times as long. A search that runs out of time is refused with
a message that says which of the two it was.
"""

from __future__ import annotations

import random
import re
import re._constants as sre_constants
import re._parser as sre_parser
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import regex as regex_engine
from rpo.utils.io import InputError
from rpo.utils.schema import SystemProfile

from sysbank.loader import SAMPLE_PATH, Location, duplicate_id, iter_profiles, profile_language
from sysbank.ontology import CATEGORIES, OTHER, categorize

LANGUAGES = ("en", "zh")
# How long a regular expression that can backtrack may search; legitimate ones take well under 0.1 s
# on 32k prompts. Ordinary patterns (no such shape) get ORDINARY_TIMEOUT_FACTOR times as long.
REGEX_TIMEOUT_S = 2.0
ORDINARY_TIMEOUT_FACTOR = 10
# Keeps one record's text apart from the next in the joined search string; no query can contain it.
_SEP = "\n\x00\n"


class SearchError(InputError):
    """A search that cannot run or did not finish, worded without any flag (the CLI and the web page
    each say it in their own terms)."""


class FilterError(SearchError):
    """A filter value that cannot be used: `field` names the filter, `reason` says why."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)


def backtracking_shape(pattern: str) -> str | None:
    """What in a regular expression can make a search backtrack without end, or None for an ordinary
    pattern (one that scans in time proportional to the text)."""
    try:
        tree = sre_parser.parse(pattern, re.IGNORECASE | re.MULTILINE)
    except (re.error, RecursionError, OverflowError):
        return "syntax only the regex engine reads"
    return _shape(list(tree), in_repeat=False)


def _shape(items: list[tuple[Any, Any]], in_repeat: bool) -> str | None:
    for op, arg in items:
        found = None
        if op in _REPEATS:
            _, high, body = arg
            repeats = high == sre_constants.MAXREPEAT or high > 1
            if repeats and in_repeat:
                return "a repeat inside a repeat"
            if repeats and any(inner == sre_constants.BRANCH for inner, _ in body):
                return "alternatives inside a repeat"
            found = _shape(list(body), in_repeat or repeats)
        elif op in (sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS):
            return "a backreference"
        elif op == sre_constants.SUBPATTERN:
            inner = list(arg[-1])
            if in_repeat and any(kind == sre_constants.BRANCH for kind, _ in inner):
                return "alternatives inside a repeat"
            found = _shape(inner, in_repeat)
        elif op == sre_constants.BRANCH:
            found = next((shape for branch in arg[1] if (shape := _shape(list(branch), in_repeat))), None)
        elif op == sre_constants.ATOMIC_GROUP:
            found = _shape(list(arg), in_repeat)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            found = _shape(list(arg[1]), in_repeat)
        if found:
            return found
    return None


@dataclass(frozen=True)
class Filters:
    """Record filters shared by list, search, export and the web API (None = no filter)."""

    source: str | None = None
    language: str | None = None
    min_constraints: int | None = None
    max_constraints: int | None = None
    category: str | None = None

    def __post_init__(self) -> None:
        if self.language is not None and self.language not in LANGUAGES:
            raise FilterError("language", f"expected one of {', '.join(LANGUAGES)}, got {self.language!r}")
        if self.category is not None and self.category not in (*CATEGORIES, OTHER):
            raise FilterError("category", f"expected one of {', '.join((*CATEGORIES, OTHER))}, got {self.category!r}")
        for name in ("min_constraints", "max_constraints"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise FilterError(name, f"expected a whole number >= 0, got {value!r}")
        if self.min_constraints is not None and self.max_constraints is not None \
                and self.max_constraints < self.min_constraints:
            raise FilterError("max_constraints", f"{self.max_constraints} is below the minimum "
                                                 f"{self.min_constraints}, so nothing could match")


def searchable_text(profile: SystemProfile) -> str:
    """The fields a search looks at: name, description, skills and constraints."""
    return "\n".join([profile.name, profile.description, *profile.skills, *profile.constraints])


class Bank:
    """Loaded profiles plus what filtering and searching them needs."""

    def __init__(self, profiles: Sequence[SystemProfile], locations: Sequence[Location] | None = None):
        self.profiles = list(profiles)
        self.locations = list(locations) if locations is not None else [Location("", 0)] * len(self.profiles)
        self._by_id: dict[str, int] = {}
        for i, profile in enumerate(self.profiles):
            if profile.id in self._by_id:
                raise duplicate_id(profile.id, self.locations[i], self.locations[self._by_id[profile.id]])
            self._by_id[profile.id] = i
        self.languages = [profile_language(p) for p in self.profiles]
        self.sources = [p.source for p in self.profiles]
        self.n_constraints = [len(p.constraints) for p in self.profiles]
        texts = [searchable_text(p) for p in self.profiles]
        self._text = _SEP.join(texts)
        self._lower_parts = [t.lower() for t in texts]
        self._lower = _SEP.join(self._lower_parts)
        self._starts = _starts(texts)
        self._lower_starts = _starts(self._lower_parts)

    @classmethod
    def load(cls, paths: str | Path | Iterable[str | Path] = SAMPLE_PATH) -> Bank:
        """Load any number of release files/folders (`.jsonl`, `.jsonl.gz`)."""
        profiles: list[SystemProfile] = []
        locations: list[Location] = []
        for profile, where in iter_profiles(paths):
            profiles.append(profile)
            locations.append(where)
        return cls(profiles, locations)

    def __len__(self) -> int:
        return len(self.profiles)

    def get(self, record_id: str) -> int:
        """Index of the record with this id."""
        try:
            return self._by_id[record_id]
        except KeyError:
            raise InputError(f"no record with id {record_id!r} in the loaded files") from None

    @cached_property
    def constraint_categories(self) -> list[list[list[str]]]:
        """Ontology tags of every constraint of every record (computed on first use: stats, filters)."""
        return [[categorize(c) for c in p.constraints] for p in self.profiles]

    @cached_property
    def record_categories(self) -> list[frozenset[str]]:
        return [frozenset(tag for tags in per for tag in tags) for per in self.constraint_categories]

    # ------------------------------------------------------------ selection

    def select(self, filters: Filters = Filters(), candidates: Iterable[int] | None = None) -> list[int]:
        """Indices (in load order) of the records that pass the filters."""
        indices = range(len(self.profiles)) if candidates is None else candidates
        f = filters
        source = f.source.lower() if f.source else None
        out = []
        for i in indices:
            if source is not None and self.sources[i].lower() != source:
                continue
            if f.language is not None and self.languages[i] != f.language:
                continue
            if f.min_constraints is not None and self.n_constraints[i] < f.min_constraints:
                continue
            if f.max_constraints is not None and self.n_constraints[i] > f.max_constraints:
                continue
            if f.category is not None and f.category not in self.record_categories[i]:
                continue
            out.append(i)
        return out

    def search(self, text: str, regex: bool = False, filters: Filters = Filters(),
               timeout_s: float = REGEX_TIMEOUT_S) -> list[int]:
        """Records whose name, description, skills or constraints contain `text` (case-insensitive).

        With `regex=True`, `text` is a Python regular expression (also case-insensitive; `^`/`$`
        anchor at line ends, each skill and constraint being one line). A regular expression that
        is invalid, nested too deeply or still searching at its deadline (`timeout_s` seconds for a
        pattern that can backtrack, `ORDINARY_TIMEOUT_FACTOR` times that for an ordinary one) is a
        `SearchError`.
        """
        if regex:
            hits = self._regex_hits(compile_pattern(text), timeout_s)
        else:
            hits = self._substring_hits(text.lower())
        return self.select(filters, hits)
    def _substring_hits(self, needle: str) -> list[int]:
        if not needle:
            return list(range(len(self.profiles)))
        if "\x00" in needle:
            return []
        hay, starts, hits = self._lower, self._lower_starts, []
        pos = hay.find(needle)
        while pos >= 0:
            record = bisect_right(starts, pos) - 1
            hits.append(record)
            if record + 1 >= len(starts):
                break
            pos = hay.find(needle, starts[record + 1])
        return hits

    def _regex_hits(self, pattern: regex_engine.Pattern[str], timeout_s: float) -> list[int]:
        hay, starts, hits = self._text, self._starts, []
        shape = backtracking_shape(pattern.pattern)
        limit_s = timeout_s if shape else timeout_s * ORDINARY_TIMEOUT_FACTOR
        deadline = time.monotonic() + limit_s

        def search(pos: int, endpos: int | None = None) -> regex_engine.Match[str] | None:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                return pattern.search(hay, pos, endpos, concurrent=True, timeout=left)
            except TimeoutError:
                shown = _shown(pattern.pattern)
                if shape:
                    raise SearchError(f"search for {shown} stopped after {limit_s:g} s: it has {shape}, which can "
                                      "backtrack without end; simplify the pattern") from None
                raise SearchError(f"search for {shown} stopped after {limit_s:g} s (processor time, shared with the "
                                  f"searches running beside it) over {len(hay) / 1e6:.1f} MB of prompt text; make it "
                                  "more specific or filter first") from None

        match = search(0)
        while match is not None:
            record = bisect_right(starts, match.start()) - 1
            end = starts[record + 1] - len(_SEP) if record + 1 < len(starts) else len(hay)
            # A match that runs into the next record (e.g. `a[\s\S]*b`) is checked on this record alone.
            if match.end() <= end or search(starts[record], end):
                hits.append(record)
            if record + 1 >= len(starts):
                break
            match = search(starts[record + 1])
        return hits

    def sample(self, indices: Sequence[int], n: int, seed: int) -> list[int]:
        """A seeded random subset of `n` records, kept in load order."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InputError(f"--sample: expected a whole number >= 0, got {n!r}")
        if n >= len(indices):
            return list(indices)
        return sorted(random.Random(seed).sample(list(indices), n))

    # ------------------------------------------------------------ statistics

    def stats(self, indices: Sequence[int] | None = None) -> dict[str, Any]:
        """Counts by source and language, the constraints-per-prompt histogram and ontology categories."""
        idx = list(range(len(self.profiles))) if indices is None else list(indices)
        by_source = Counter(self.sources[i] or "(none)" for i in idx)
        by_language = Counter(self.languages[i] for i in idx)
        by_source_language = Counter(f"{self.sources[i] or '(none)'}/{self.languages[i]}" for i in idx)
        histogram = Counter(self.n_constraints[i] for i in idx)
        constraint_tags: Counter[str] = Counter()
        prompt_tags: Counter[str] = Counter()
        for i in idx:
            for tags in self.constraint_categories[i]:
                constraint_tags.update(tags)
            prompt_tags.update(self.record_categories[i])
        total_constraints = sum(self.n_constraints[i] for i in idx)
        kinds = (*CATEGORIES, OTHER)
        return {
            "records": len(idx),
            "constraints": total_constraints,
            "mean_constraints": round(total_constraints / len(idx), 2) if idx else 0.0,
            "by_source": dict(sorted(by_source.items())),
            "by_language": {lang: by_language.get(lang, 0) for lang in LANGUAGES},
            "by_source_language": dict(sorted(by_source_language.items())),
            "constraints_per_prompt": {str(k): histogram[k] for k in sorted(histogram)},
            "constraint_categories": {k: constraint_tags.get(k, 0) for k in kinds},
            "prompts_with_category": {k: prompt_tags.get(k, 0) for k in kinds},
        }


def compile_pattern(text: str) -> regex_engine.Pattern[str]:
    """A user's regular expression, case-insensitive and line-anchored, or a `SearchError` saying why not."""
    try:
        return regex_engine.compile(text, regex_engine.IGNORECASE | regex_engine.MULTILINE)
    except regex_engine.error as err:
        raise SearchError(f"invalid regular expression {_shown(text)} ({err})") from None
    except RecursionError:
        raise SearchError(f"regular expression {_shown(text)} is nested too deeply") from None


def _shown(text: str, width: int = 60) -> str:
    """A pattern quoted as the user typed it (control characters escaped), cut short to keep one line."""
    cut = text if len(text) <= width else text[:width]
    quoted = f"'{cut if cut.isprintable() else repr(cut)[1:-1]}'"
    return quoted if cut is text else f"{quoted}… ({len(text)} characters)"


def _starts(parts: Sequence[str]) -> list[int]:
    starts, pos = [], 0
    for part in parts:
        starts.append(pos)
        pos += len(part) + len(_SEP)
    return starts
