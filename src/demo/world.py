"""The demo world: seeded system profiles, user queries and a response writer that obeys each
constraint on purpose (the oracle) or only part of the time (the noisy demonstrator).

Everything is drawn from small word lists so that a tiny model can learn the world in minutes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rpo.demo.constraints import (
    Bullets,
    Constraint,
    EndWith,
    Exclude,
    HasUppercase,
    IfMentionExclude,
    IfMentionInclude,
    Include,
    Lowercase,
    MaxWords,
    MinWords,
    NoComma,
    NotBullets,
    NotEndWith,
    NotStartWith,
    StartWith,
    UseComma,
    WordRange,
    mentions,
    parse,
)
from rpo.utils.schema import ProfileCore

TOPICS = ["cats", "rivers", "bread", "trains", "gardens", "stars", "coffee", "bikes", "forests", "music",
          "books", "boats", "snow", "tea", "birds", "clocks", "maps", "shoes", "lamps", "islands"]
ADJECTIVES = ["calm", "bright", "quiet", "warm", "simple", "old", "fresh", "strong", "gentle", "clever"]
KEYWORDS = ["apple", "silver", "banana", "orange", "planet", "candle", "pepper", "violet", "marble", "tiger",
            "lemon", "rocket", "velvet", "copper", "dragon", "mango"]
TRIGGERS = ["rain", "school", "money", "travel", "dinner", "winter"]
START_PHRASES = ["sure thing", "well now", "good question", "okay then"]
END_PHRASES = ["hope this helps", "that is all", "have a nice day", "thanks for asking"]
ROLES = ["Guide", "Helper", "Tutor", "Buddy", "Coach", "Scout"]
SKILLS = ["answers questions", "explains ideas", "gives short tips", "describes things"]

FILLERS = [
    "{T} are {A}.",
    "many people like {T}.",
    "{T} can be {A} and {B}.",
    "i find {T} {A}.",
    "{T} make the day {A}.",
    "there is a lot to say about {T}.",
    "{T} feel {A} in the morning.",
]
QUERY_TEMPLATES = ["Tell me about {T}.", "What do you think of {T}?", "Describe {T} for me.", "Why do people like {T}?"]
TRIGGER_TEMPLATES = ["Tell me about {T} and {R}.", "What do {T} have to do with {R}?"]


def sample_constraints(rng: random.Random, count: int) -> list[Constraint]:
    """`count` mutually compatible constraints: one per slot, so no two can contradict."""
    keyword_pool = rng.sample(KEYWORDS, 4)
    slots = {
        "word": lambda: rng.choice([Include(keyword_pool[0]), Exclude(keyword_pool[0])]),
        "word2": lambda: rng.choice([Include(keyword_pool[1]), Exclude(keyword_pool[1])]),
        "length": lambda: rng.choice(
            [MaxWords(rng.choice([10, 14, 18])), MinWords(rng.choice([8, 12])),
             WordRange(*rng.choice([(6, 12), (10, 20)]))]
        ),
        "start": lambda: rng.choice([StartWith, NotStartWith])(rng.choice(START_PHRASES)),
        "end": lambda: rng.choice([EndWith, NotEndWith])(rng.choice(END_PHRASES)),
        "case": lambda: rng.choice([Lowercase(), HasUppercase()]),
        "comma": lambda: rng.choice([NoComma(), UseComma()]),
        "bullets": lambda: rng.choice([Bullets, NotBullets])(rng.choice([2, 3])),
        "conditional": lambda: rng.choice([IfMentionInclude, IfMentionExclude])(
            rng.choice(TRIGGERS), keyword_pool[2]
        ),
    }
    return [slots[name]() for name in rng.sample(sorted(slots), count)]


def make_profile(
    rng: random.Random, index: int, profile_id: str | None = None, min_constraints: int = 3, max_constraints: int = 8
) -> ProfileCore:
    role = rng.choice(ROLES)
    constraints = sample_constraints(rng, rng.randint(min_constraints, max_constraints))
    return ProfileCore(
        name=f"{role} {index}",
        description=f"A {rng.choice(ADJECTIVES)} assistant that talks about everyday things.",
        skills=rng.sample(SKILLS, 2),
        constraints=[c.text for c in constraints],
        id=profile_id or f"profile-{index}",
    )


def make_query(rng: random.Random, profile: ProfileCore) -> str:
    """Half the queries carry a trigger word (one of the profile's triggers when it has one)."""
    topic = rng.choice(TOPICS)
    if rng.random() < 0.5:
        triggers = [c.trigger for c in map(parse, profile.constraints) if hasattr(c, "trigger")]
        trigger = rng.choice(triggers) if triggers and rng.random() < 0.8 else rng.choice(TRIGGERS)
        return rng.choice(TRIGGER_TEMPLATES).format(T=topic, R=trigger)
    return rng.choice(QUERY_TEMPLATES).format(T=topic)


def query_topic(query: str) -> str:
    return next((t for t in TOPICS if mentions(query, t)), "things")


@dataclass
class ResponseWriter:
    """Writes a response that follows exactly the constraints it is told to (when it can)."""

    rng: random.Random

    def write(self, constraints: list[Constraint], query: str, follow: list[bool], attempts: int = 30) -> str:
        """Best effort at a response whose checker results equal `follow`; the closest one found
        is returned (the caller judges it anyway)."""
        best, best_hits = "", -1
        for _ in range(attempts):
            response = self._draft(constraints, query, follow)
            hits = sum(c.check(query, response) == want for c, want in zip(constraints, follow))
            if hits == len(constraints):
                return response
            if hits > best_hits:
                best, best_hits = response, hits
        return best

    def _draft(self, constraints: list[Constraint], query: str, follow: list[bool]) -> str:
        rng = self.rng
        topic = query_topic(query)
        want = dict(zip(constraints, follow))
        present: set[str] = set()
        absent: set[str] = set()
        for c, ok in want.items():
            if isinstance(c, (Include, Exclude)):
                (present if ok == isinstance(c, Include) else absent).add(c.word)
            elif isinstance(c, (IfMentionInclude, IfMentionExclude)) and mentions(query, c.trigger):
                (present if ok == isinstance(c, IfMentionInclude) else absent).add(c.word)
            elif isinstance(c, (IfMentionInclude, IfMentionExclude)):
                (present if rng.random() < 0.3 else absent).add(c.word)
        sentences = [f"{w} comes to mind." for w in sorted(present - absent)]
        length_rule = next((c for c in constraints if isinstance(c, (MaxWords, MinWords, WordRange))), None)
        target_words = self._target_length(length_rule, want.get(length_rule))
        fillers = [self._filler(topic) for _ in range(8)]
        rng.shuffle(sentences)
        while fillers and (len(sentences) < 2 or sum(len(s.split()) for s in sentences) < target_words - 3):
            sentences.insert(rng.randrange(len(sentences) + 1), fillers.pop())

        bullet_rule = next((c for c in constraints if isinstance(c, (Bullets, NotBullets))), None)
        as_bullets = bullet_rule is not None or rng.random() < 0.3
        if as_bullets:
            lines = self._bullet_target(bullet_rule, want.get(bullet_rule), len(sentences))
            sentences = self._regroup(sentences, lines)
        text = "\n".join(f"- {s}" for s in sentences) if as_bullets else " ".join(sentences)

        for c, ok in want.items():
            if isinstance(c, (StartWith, NotStartWith)) and ok == isinstance(c, StartWith):
                text = f"{c.phrase} {text}" if not text.startswith("- ") else f"{c.phrase}\n{text}"
            if isinstance(c, (EndWith, NotEndWith)) and ok == isinstance(c, EndWith):
                text = f"{text} {c.phrase}"
        comma_rule = next((c for c in constraints if isinstance(c, (NoComma, UseComma))), None)
        needs_comma = (want[comma_rule] == isinstance(comma_rule, UseComma)) if comma_rule else rng.random() < 0.5
        text = text.replace(",", "")
        if needs_comma:
            cut = text.find(" ", len(text) // 3)
            text = text[:cut] + "," + text[cut:] if cut > 0 else text + ","
        case_rule = next((c for c in constraints if isinstance(c, (Lowercase, HasUppercase))), None)
        lower = (want[case_rule] == isinstance(case_rule, Lowercase)) if case_rule else rng.random() < 0.5
        return text.lower() if lower else _capitalise(text)

    def _filler(self, topic: str) -> str:
        a, b = self.rng.sample(ADJECTIVES, 2)
        return self.rng.choice(FILLERS).format(T=topic, A=a, B=b)

    def _target_length(self, rule: Constraint | None, ok: bool | None) -> int:
        if isinstance(rule, MaxWords):
            return rule.limit - 4 if ok else rule.limit + 6
        if isinstance(rule, MinWords):
            return rule.limit + 6 if ok else rule.limit - 4
        if isinstance(rule, WordRange):
            return (rule.low + rule.high) // 2 if ok else self.rng.choice([rule.low - 4, rule.high + 6])
        return self.rng.randint(8, 20)

    def _bullet_target(self, rule: Constraint | None, ok: bool | None, available: int) -> int:
        if rule is None:
            return max(2, min(available, 3))
        exact = ok == isinstance(rule, Bullets)
        return rule.count if exact else self.rng.choice([n for n in (1, 2, 3, 4) if n != rule.count])

    def _regroup(self, sentences: list[str], lines: int) -> list[str]:
        while len(sentences) < lines:
            sentences.append(f"{self.rng.choice(ADJECTIVES)} indeed.")
        while len(sentences) > lines:
            tail = sentences.pop()
            sentences[-1] = f"{sentences[-1]} {tail}"
        return sentences


def _capitalise(text: str) -> str:
    """Capital after the start, a line break or a sentence end (the writer's default style)."""
    out, upper_next = [], True
    for ch in text:
        out.append(ch.upper() if upper_next and ch.isalpha() else ch)
        if ch.isalpha():
            upper_next = False
        elif ch in ".?!\n":
            upper_next = True
    return "".join(out)


def follows(constraints: list[Constraint], query: str, response: str) -> list[bool]:
    return [c.check(query, response) for c in constraints]

