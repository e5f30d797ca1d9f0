"""LLM-backed conversation roles: the responder, the simulated user and the critic that rewrites.

They implement the protocols of `rpo.utils.roles.protocols`, so stages work the
same with rule-based or in-process stand-ins.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz
from rpo.utils.llm.client import LLMClient
from rpo.utils.prompts import render_lang
from rpo.utils.prompts.language import resolve_lang
from rpo.utils.roles.protocols import Reply
from rpo.utils.schema import Messages, ProfileCore, UserProfile, Verdicts
from rpo.utils.stats import Tally, counter

DEFAULT_PERSONA = {
    "en": "An ordinary adult who uses chat assistants every day and asks about whatever is on their mind.",
    "zh": "一位每天都会使用聊天助手的普通成年人，想到什么就问什么。",
}
_LABEL = re.compile(r"^\s*(user|query|用户|问题)\s*[:：]\s*", re.IGNORECASE)
_QUOTES = ('""', "''", "“”", "「」")


class LLMResponder:
    """`Responder`: n samples from one chat request (the client tops up servers without `n`); a
    sample the token cap cut off is marked truncated."""

    def __init__(self, client: LLMClient, role: str = "response", **overrides: Any):
        self.client = client
        self.role = role
        self.overrides = overrides

    async def respond(self, messages: Messages, n: int) -> list[Reply]:
        result = await self.client.chat(self.role, messages, n=n, **self.overrides)
        return [Reply(text, result.truncated(i)) for i, text in enumerate(result.texts)]


def clean_query(text: str) -> str:
    """Strip the labels and wrapping quotes a model sometimes puts around the user's message."""
    text = _LABEL.sub("", text.strip()).strip()
    for pair in _QUOTES:
        if len(text) > 1 and text[0] == pair[0] and text[-1] == pair[1]:
            text = text[1:-1].strip()
    return text


TONES = {
    "en": (
        "polite", "warm", "cheerful", "bored", "insecure", "dismissive", "arrogant", "shy", "outgoing",
        "puzzled", "calm", "irritable", "argumentative", "provocative", "lazy", "flustered", "inquisitive",
        "humble", "considerate", "gentle", "torn", "sarcastic", "let down", "mocking", "hostile", "cute",
        "taciturn", "terse", "breezy", "earnest", "hopeless", "proud", "conflicted", "showing off",
        "melodramatic", "preachy", "bossy", "rude", "deadpan", "goofy", "meme-loving", "nosy", "chatty",
        "blunt", "formal", "elegant", "naive", "childish", "stubborn", "anxious", "impulsive", "careful",
        "cynical", "flattering", "nostalgic", "excited", "sleepy", "old-fashioned", "teenage slang",
        "like a grandparent", "like a five-year-old", "like a busy office worker", "like a college student",
    ),
    "zh": (
        "礼貌", "热情", "开朗", "无聊", "自卑", "不屑", "傲慢", "害羞", "外向", "困惑", "淡定", "烦躁",
        "爱抬杠", "挑衅", "懒散", "慌张", "追问到底", "谦虚", "体贴", "温和", "纠结", "阴阳怪气", "失望",
        "嘲讽", "敌意", "卖萌", "寡言", "惜字", "爽快", "真诚", "绝望", "得意", "矛盾", "显摆", "戏精",
        "说教", "霸道", "粗鲁", "冷幽默", "搞笑", "爱玩梗", "八卦", "话多", "直来直去", "正式", "文雅",
        "天真", "孩子气", "固执", "焦虑", "冲动", "谨慎", "愤世嫉俗", "拍马屁", "怀旧", "激动", "没睡醒",
        "老派", "网络用语", "像老奶奶一样", "像五岁小孩一样", "像忙碌的上班族一样", "像大学生一样",
    ),
}
"""The tones a simulated user may take; each session draws `TONES_PER_SESSION` of them."""
TONES_PER_SESSION = 10
_CLAUSE_END = re.compile(r"[,，.。;；:：!！?？\"'“”‘’]")


def opening(query: str, lang: str) -> str:
    """How a query opens: its first clause, cut to 8 characters (zh) or 4 words (en)."""
    clause = _CLAUSE_END.split(query.strip(), maxsplit=1)[0].strip()
    return clause[:8] if lang == "zh" else " ".join(clause.split()[:4])


def repeated_opening(query: str, earlier: list[str], lang: str) -> str | None:
    """The opening of an earlier query that `query` opens like, or None.

    Alike: a fuzzy ratio above 60 between the openings, or the same first 3 characters (zh) or
    first 2 words (en).
    """
    mine = opening(query, lang)
    for past in earlier:
        theirs = opening(past, lang)
        start = (mine[:3] == theirs[:3]) if lang == "zh" else (mine.split()[:2] == theirs.split()[:2])
        if mine and theirs and (fuzz.ratio(mine, theirs) > 60 or start):
            return theirs
    return None


@dataclass
class UserStats(Tally):
    """What the simulated users wrote: queries, and how many were reworded for opening like an earlier one."""

    queries: int = counter("queries")
    rephrased: int = counter("rephrased (opened like an earlier query)")


class LLMUserSimulator:
    """`UserSimulator`: a persona writing natural, challenging queries that touch constraint triggers.

    As the authors' user does, it draws its tones once per session (seeded by `session_id`, so a
    rerun asks the same prompts and hits the cache), keeps queries to about 20 words or Chinese
    characters, and rewords a query that opens like an earlier one of the session.
    """

    def __init__(
        self,
        client: LLMClient,
        user_profile: UserProfile | str | None = None,
        role: str = "user",
        lang: str | None = None,
        session_id: str = "",
        stats: UserStats | None = None,
    ):
        self.client = client
        self.user_profile = user_profile
        self.role = role
        self.lang = lang
        self.session_id = session_id
        self.stats = stats if stats is not None else UserStats()

    def persona(self, lang: str) -> str:
        if isinstance(self.user_profile, UserProfile):
            return self.user_profile.profile or self.user_profile.persona
        return self.user_profile or DEFAULT_PERSONA.get(lang, DEFAULT_PERSONA["en"])

    def tones(self, lang: str) -> list[str]:
        """This session's tones: a fixed draw from `TONES[lang]`."""
        return random.Random(f"tones|{self.session_id}").sample(TONES[lang], TONES_PER_SESSION)

    async def next_query(self, profile: ProfileCore, history: Messages, turn: int) -> str:
        lang = resolve_lang(self.lang, profile)
        prompt = render_lang(
            "user_query",
            lang,
            profile=profile,
            user_profile=self.persona(lang),
            history=history,
            turn=turn,
            tones=self.tones(lang),
        )
        query = clean_query((await self.client.chat(self.role, [{"role": "user", "content": prompt}])).texts[0])
        self.stats.queries += 1
        earlier = [m["content"] for m in history if m["role"] == "user"]
        like = repeated_opening(query, earlier, lang)
        if like is None:
            return query
        self.stats.rephrased += 1
        reword = render_lang("user_rephrase", lang, opening=like, query=query)
        return clean_query((await self.client.chat(self.role, [{"role": "user", "content": reword}])).texts[0])


class LLMRefiner:
    """`Refiner`: the critic role rewrites the reply itself, as the authors' refinement does.

    It is shown the query, the reply, the rules the reply obeys and those it breaks (with the
    judge's reasons), and asked for the smallest rewrite that obeys them all. Rules the turn's
    query does not trigger (None in `verdicts`) are neither shown as kept nor as broken.
    """

    def __init__(self, client: LLMClient, role: str = "critic", lang: str | None = None):
        self.client = client
        self.role = role
        self.lang = lang

    async def refine(
        self, profile: ProfileCore, history: Messages, query: str, response: str, verdicts: Verdicts
    ) -> Reply:
        lang = resolve_lang(self.lang, profile)
        follows = verdicts.follows or [False] * len(profile.constraints)
        reasons = verdicts.reasons or [""] * len(profile.constraints)
        items = [
            {"constraint": c, "reason": r, "follows": f}
            for c, r, f in zip(profile.constraints, reasons, follows)
            if f is not None
        ]
        prompt = render_lang(
            "critic",
            lang,
            query=query,
            response=response,
            kept=[i for i in items if i["follows"]],
            broken=[i for i in items if not i["follows"]],
        )
        result = await self.client.chat(self.role, [{"role": "user", "content": prompt}])
        return Reply(result.texts[0].strip(), result.truncated(0))
