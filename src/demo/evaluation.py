"""Held-out evaluation in the demo world, scored the way SysBench scores a model.

Each turn is judged on the constraints its query triggers (a conditional whose trigger word the
query does not mention is not in play, so it is neither a success nor a failure). The headline
setting is SysBench's: the policy answers turn by turn with its own earlier replies as history.
Beside it, the reference setting answers every turn after the self-play reference replies, which
isolates each turn from the policy's earlier mistakes.

A turn that triggers nothing has no verdicts: it adds nothing to CSR and counts as followed in ISR
and SSR, as in SysBench's scoring, where a turn fails only on a "no" verdict. In this world it
cannot happen: every profile holds at least two unconditional constraints.
"""

from __future__ import annotations

from typing import Protocol

from rpo.demo.constraints import parse
from rpo.demo.rules import triggered
from rpo.eval.metrics import Session
from rpo.utils.schema import Messages, SelfPlaySession
from rpo.utils.stages.sampling import policy_messages

HISTORIES = ("own", "reference")


class Policy(Protocol):
    def generate(self, prompts: list[Messages], greedy: bool) -> list[str]:
        """One reply per prompt."""
        ...


def judge_turn(constraints: list[str], query: str, reply: str) -> list[bool]:
    """Verdicts of the constraints `query` triggers, in profile order."""
    return [parse(constraints[k]).check(query, reply) for k in triggered(constraints, query)]


def with_replies(session: SelfPlaySession, replies: list[str]) -> SelfPlaySession:
    """The session with `replies` in place of its first reference replies (the policy's own history)."""
    turns = [turn.model_copy(update={"reference_response": reply}) for turn, reply in zip(session.turns, replies)]
    return session.model_copy(update={"turns": turns + session.turns[len(replies) :]})


def replies(policy: Policy, sessions: list[SelfPlaySession]) -> dict[str, list[list[str]]]:
    """Greedy replies to every turn, per history setting, in as few sequential passes as there
    are turns.

    Own history goes turn by turn, each turn after the policy's own earlier replies. Reference
    history prompts are known up front, so they ride along with the first pass; a first turn has
    no history, so its prompt and greedy reply are the same in both settings and it is answered once.
    """
    reference_keys = [(i, t) for i, s in enumerate(sessions) for t in range(1, len(s.turns))]
    reference_prompts = [policy_messages(sessions[i], t, "en") for i, t in reference_keys]
    own: list[list[str]] = [[] for _ in sessions]
    reference: list[list[str]] = [[] for _ in sessions]
    for t in range(max((len(s.turns) for s in sessions), default=0)):
        active = [i for i, s in enumerate(sessions) if t < len(s.turns)]
        prompts = [policy_messages(with_replies(sessions[i], own[i]), t, "en") for i in active]
        answered = policy.generate(prompts + (reference_prompts if t == 0 else []), greedy=True)
        for i, reply in zip(active, answered):
            own[i].append(reply)
            if t == 0:
                reference[i].append(reply)
        for (i, _), reply in zip(reference_keys if t == 0 else [], answered[len(active) :]):
            reference[i].append(reply)
    return {"own": own, "reference": reference}


def judge_sessions(sessions: list[SelfPlaySession], replies: list[list[str]]) -> list[Session]:
    return [
        [judge_turn(s.profile.constraints, turn.query, reply) for turn, reply in zip(s.turns, session_replies)]
        for s, session_replies in zip(sessions, replies)
    ]


def evaluate(policy: Policy, sessions: list[SelfPlaySession]) -> dict[str, list[Session]]:
    """Judged sessions per history setting ("own", "reference")."""
    return {history: judge_sessions(sessions, answered) for history, answered in replies(policy, sessions).items()}
