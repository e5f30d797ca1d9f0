"""LLM-backed conversation roles: the responder, the simulated user and the critic/refiner.

They implement the protocols of `rpo.utils.roles.protocols`, so stages work the
same with rule-based or in-process stand-ins.
"""

from __future__ import annotations

import re
from typing import Any

from rpo.utils.llm.client import LLMClient
from rpo.utils.prompts import render_lang
from rpo.utils.prompts.language import resolve_lang
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.schema import Messages, ProfileCore, UserProfile, Verdicts

DEFAULT_PERSONA = {
    "en": "An ordinary adult who uses chat assistants every day and asks about whatever is on their mind.",
    "zh": "一位每天都会使用聊天助手的普通成年人，想到什么就问什么。",
}
_LABEL = re.compile(r"^\s*(user|query|用户|问题)\s*[:：]\s*", re.IGNORECASE)
_QUOTES = ('""', "''", "“”", "「」")


class LLMResponder:
    """`Responder`: n samples from one chat request (the client tops up servers without `n`)."""

    def __init__(self, client: LLMClient, role: str = "response", **overrides: Any):
        self.client = client
        self.role = role
        self.overrides = overrides

    async def respond(self, messages: Messages, n: int) -> list[str]:
        return (await self.client.chat(self.role, messages, n=n, **self.overrides)).texts


def clean_query(text: str) -> str:
    """Strip the labels and wrapping quotes a model sometimes puts around the user's message."""
    text = _LABEL.sub("", text.strip()).strip()
    for pair in _QUOTES:
        if len(text) > 1 and text[0] == pair[0] and text[-1] == pair[1]:
            text = text[1:-1].strip()
    return text


class LLMUserSimulator:
    """`UserSimulator`: a persona writing natural, challenging queries that touch constraint triggers."""

    def __init__(
        self,
        client: LLMClient,
        user_profile: UserProfile | str | None = None,
        role: str = "user",
        lang: str | None = None,
    ):
        self.client = client
        self.user_profile = user_profile
        self.role = role
        self.lang = lang

    def persona(self, lang: str) -> str:
        if isinstance(self.user_profile, UserProfile):
            return self.user_profile.profile or self.user_profile.persona
        return self.user_profile or DEFAULT_PERSONA.get(lang, DEFAULT_PERSONA["en"])

    async def next_query(self, profile: ProfileCore, history: Messages, turn: int) -> str:
        lang = resolve_lang(self.lang, profile)
        prompt = render_lang(
            "user_query", lang, profile=profile, user_profile=self.persona(lang), history=history, turn=turn
        )
        text = (await self.client.chat(self.role, [{"role": "user", "content": prompt}])).texts[0]
        return clean_query(text)


class LLMRefiner:
    """`Refiner`: the critic role says what to fix, then the response role rewrites the reply."""

    def __init__(
        self,
        client: LLMClient,
        critic_role: str = "critic",
        refine_role: str = "response",
        lang: str | None = None,
    ):
        self.client = client
        self.critic_role = critic_role
        self.refine_role = refine_role
        self.lang = lang

    async def refine(
        self, profile: ProfileCore, history: Messages, query: str, response: str, verdicts: Verdicts
    ) -> str:
        lang = resolve_lang(self.lang, profile)
        follows = verdicts.follows or [False] * len(profile.constraints)
        reasons = verdicts.reasons or [""] * len(profile.constraints)
        items = [
            {"constraint": c, "reason": r, "follows": f}
            for c, r, f in zip(profile.constraints, reasons, follows)
            if f is not None  # not triggered by this query: neither kept nor broken
        ]
        critique_prompt = render_lang(
            "critic",
            lang,
            query=query,
            response=response,
            kept=[i for i in items if i["follows"]],
            broken=[i for i in items if not i["follows"]],
        )
        critique = (
            await self.client.chat(self.critic_role, [{"role": "user", "content": critique_prompt}])
        ).texts[0]
        refine_prompt = render_lang(
            "refine",
            lang,
            query=query,
            response=response,
            constraints=profile.constraints,
            critique=critique.strip(),
        )
        messages: Messages = [
            {"role": "system", "content": render_system_prompt(profile, lang=lang)},
            *history,
            {"role": "user", "content": refine_prompt},
        ]
        return (await self.client.chat(self.refine_role, messages)).texts[0].strip()
