"""The demo's verifiable-constraint library: one class per family, each with its phrasing, an exact
checker and an exact reversal (or none).

A constraint is fully described by its text, so the rule judge and rule reverser work from the
strings stored in session records: `parse()` turns a text back into a checkable constraint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar


def words(text: str) -> list[str]:
    return text.split()


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", text, re.IGNORECASE) is not None


def bullet_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("- "))


@dataclass(frozen=True)
class Constraint:
    """A family instance. Subclasses set `pattern` (regex over the text) and implement the rest."""

    family: ClassVar[str]
    pattern: ClassVar[str]
    reversible: ClassVar[bool] = True

    @property
    def text(self) -> str:
        raise NotImplementedError

    def check(self, query: str, response: str) -> bool:
        raise NotImplementedError

    def reverse(self) -> Constraint | None:
        raise NotImplementedError

    def triggered_by(self, query: str) -> bool:
        """Whether `query` puts this constraint in play; only conditionals ever sit a turn out."""
        return True


@dataclass(frozen=True)
class Include(Constraint):
    word: str
    family = "include"
    pattern = r'Mention the word "(?P<word>[^"]+)"\.'

    @property
    def text(self) -> str:
        return f'Mention the word "{self.word}".'

    def check(self, query: str, response: str) -> bool:
        return mentions(response, self.word)

    def reverse(self) -> Constraint:
        return Exclude(self.word)


@dataclass(frozen=True)
class Exclude(Constraint):
    word: str
    family = "exclude"
    pattern = r'Never mention the word "(?P<word>[^"]+)"\.'

    @property
    def text(self) -> str:
        return f'Never mention the word "{self.word}".'

    def check(self, query: str, response: str) -> bool:
        return not mentions(response, self.word)

    def reverse(self) -> Constraint:
        return Include(self.word)


@dataclass(frozen=True)
class MaxWords(Constraint):
    limit: int
    family = "max_words"
    pattern = r"Use at most (?P<limit>\d+) words\."

    @property
    def text(self) -> str:
        return f"Use at most {self.limit} words."

    def check(self, query: str, response: str) -> bool:
        return len(words(response)) <= self.limit

    def reverse(self) -> Constraint:
        return MinWords(self.limit)


@dataclass(frozen=True)
class MinWords(Constraint):
    limit: int
    family = "min_words"
    pattern = r"Use more than (?P<limit>\d+) words\."

    @property
    def text(self) -> str:
        return f"Use more than {self.limit} words."

    def check(self, query: str, response: str) -> bool:
        return len(words(response)) > self.limit

    def reverse(self) -> Constraint:
        return MaxWords(self.limit)


@dataclass(frozen=True)
class StartWith(Constraint):
    phrase: str
    family = "start"
    pattern = r'Start your reply with "(?P<phrase>[^"]+)"\.'

    @property
    def text(self) -> str:
        return f'Start your reply with "{self.phrase}".'

    def check(self, query: str, response: str) -> bool:
        return response.lower().startswith(self.phrase.lower())

    def reverse(self) -> Constraint:
        return NotStartWith(self.phrase)


@dataclass(frozen=True)
class NotStartWith(Constraint):
    phrase: str
    family = "not_start"
    pattern = r'Do not start your reply with "(?P<phrase>[^"]+)"\.'

    @property
    def text(self) -> str:
        return f'Do not start your reply with "{self.phrase}".'

    def check(self, query: str, response: str) -> bool:
        return not response.lower().startswith(self.phrase.lower())

    def reverse(self) -> Constraint:
        return StartWith(self.phrase)


@dataclass(frozen=True)
class EndWith(Constraint):
    phrase: str
    family = "end"
    pattern = r'End your reply with "(?P<phrase>[^"]+)"\.'

    @property
    def text(self) -> str:
        return f'End your reply with "{self.phrase}".'

    def check(self, query: str, response: str) -> bool:
        return response.rstrip().lower().endswith(self.phrase.lower())

    def reverse(self) -> Constraint:
        return NotEndWith(self.phrase)


@dataclass(frozen=True)
class NotEndWith(Constraint):
    phrase: str
    family = "not_end"
    pattern = r'Do not end your reply with "(?P<phrase>[^"]+)"\.'

    @property
    def text(self) -> str:
        return f'Do not end your reply with "{self.phrase}".'

    def check(self, query: str, response: str) -> bool:
        return not response.rstrip().lower().endswith(self.phrase.lower())

    def reverse(self) -> Constraint:
        return EndWith(self.phrase)


@dataclass(frozen=True)
class Lowercase(Constraint):
    family = "lowercase"
    pattern = r"Write only in lowercase letters\."

    @property
    def text(self) -> str:
        return "Write only in lowercase letters."

    def check(self, query: str, response: str) -> bool:
        return response == response.lower()

    def reverse(self) -> Constraint:
        return HasUppercase()


@dataclass(frozen=True)
class HasUppercase(Constraint):
    family = "uppercase"
    pattern = r"Use at least one uppercase letter\."

    @property
    def text(self) -> str:
        return "Use at least one uppercase letter."

    def check(self, query: str, response: str) -> bool:
        return response != response.lower()

    def reverse(self) -> Constraint:
        return Lowercase()


@dataclass(frozen=True)
class NoComma(Constraint):
    family = "no_comma"
    pattern = r"Do not use any commas\."

    @property
    def text(self) -> str:
        return "Do not use any commas."

    def check(self, query: str, response: str) -> bool:
        return "," not in response

    def reverse(self) -> Constraint:
        return UseComma()


@dataclass(frozen=True)
class UseComma(Constraint):
    family = "comma"
    pattern = r"Use at least one comma\."

    @property
    def text(self) -> str:
        return "Use at least one comma."

    def check(self, query: str, response: str) -> bool:
        return "," in response

    def reverse(self) -> Constraint:
        return NoComma()


@dataclass(frozen=True)
class Bullets(Constraint):
    count: int
    family = "bullets"
    pattern = r"Answer with exactly (?P<count>\d+) bullet points\."

    @property
    def text(self) -> str:
        return f"Answer with exactly {self.count} bullet points."

    def check(self, query: str, response: str) -> bool:
        return bullet_count(response) == self.count

    def reverse(self) -> Constraint:
        return NotBullets(self.count)


@dataclass(frozen=True)
class NotBullets(Constraint):
    count: int
    family = "not_bullets"
    pattern = r"Do not answer with exactly (?P<count>\d+) bullet points\."

    @property
    def text(self) -> str:
        return f"Do not answer with exactly {self.count} bullet points."

    def check(self, query: str, response: str) -> bool:
        return bullet_count(response) != self.count

    def reverse(self) -> Constraint:
        return Bullets(self.count)


@dataclass(frozen=True)
class IfMentionInclude(Constraint):
    trigger: str
    word: str
    family = "if_include"
    pattern = r'If the user mentions "(?P<trigger>[^"]+)", mention "(?P<word>[^"]+)"\.'

    @property
    def text(self) -> str:
        return f'If the user mentions "{self.trigger}", mention "{self.word}".'

    def check(self, query: str, response: str) -> bool:
        return not self.triggered_by(query) or mentions(response, self.word)

    def triggered_by(self, query: str) -> bool:
        return mentions(query, self.trigger)

    def reverse(self) -> Constraint:
        return IfMentionExclude(self.trigger, self.word)


@dataclass(frozen=True)
class IfMentionExclude(Constraint):
    trigger: str
    word: str
    family = "if_exclude"
    pattern = r'If the user mentions "(?P<trigger>[^"]+)", never mention "(?P<word>[^"]+)"\.'

    @property
    def text(self) -> str:
        return f'If the user mentions "{self.trigger}", never mention "{self.word}".'

    def check(self, query: str, response: str) -> bool:
        return not self.triggered_by(query) or not mentions(response, self.word)

    def triggered_by(self, query: str) -> bool:
        return mentions(query, self.trigger)

    def reverse(self) -> Constraint:
        return IfMentionInclude(self.trigger, self.word)


@dataclass(frozen=True)
class WordRange(Constraint):
    """Non-reversible: the opposite ("fewer than A or more than B words") is a disjunction that
    no single clear instruction states, so pairs needing it are dropped as the paper's are."""

    low: int
    high: int
    family = "word_range"
    pattern = r"Use between (?P<low>\d+) and (?P<high>\d+) words\."
    reversible = False

    @property
    def text(self) -> str:
        return f"Use between {self.low} and {self.high} words."

    def check(self, query: str, response: str) -> bool:
        return self.low <= len(words(response)) <= self.high

    def reverse(self) -> None:
        return None


FAMILIES: tuple[type[Constraint], ...] = (
    Include, Exclude, MaxWords, MinWords, StartWith, NotStartWith, EndWith, NotEndWith, Lowercase,
    HasUppercase, NoComma, UseComma, Bullets, NotBullets, IfMentionInclude, IfMentionExclude, WordRange,
)
_COMPILED = [(family, re.compile(family.pattern + r"\Z")) for family in FAMILIES]


def parse(text: str) -> Constraint:
    """The constraint a text states; ValueError for a text no family phrases."""
    for family, regex in _COMPILED:
        match = regex.match(text.strip())
        if match:
            values = {k: int(v) if v.isdigit() else v for k, v in match.groupdict().items()}
            return family(**values)
    raise ValueError(f"not a demo-world constraint: {text!r}")
