"""SysBench metrics over judged evaluation sessions, with bootstrap confidence intervals.

A session is a list of turns; a turn is its list of per-constraint verdicts.
- CSR: satisfied judgments over all turn × constraint judgments, pooled.
- ISR: share of turns that satisfy all their constraints.
- SSR: per session, consecutive fully satisfied turns from the first ÷ the session's turns; mean.
"""

from __future__ import annotations

import random

Session = list[list[bool]]


def csr(sessions: list[Session]) -> float:
    judgments = [v for session in sessions for turn in session for v in turn]
    return sum(judgments) / len(judgments) if judgments else 0.0


def isr(sessions: list[Session]) -> float:
    turns = [all(turn) for session in sessions for turn in session]
    return sum(turns) / len(turns) if turns else 0.0


def ssr(sessions: list[Session]) -> float:
    def streak(session: Session) -> float:
        run = 0
        for turn in session:
            if not all(turn):
                break
            run += 1
        return run / len(session)

    scored = [streak(s) for s in sessions if s]
    return sum(scored) / len(scored) if scored else 0.0


METRICS = {"CSR": csr, "ISR": isr, "SSR": ssr}


def score(sessions: list[Session]) -> dict[str, float]:
    return {name: fn(sessions) for name, fn in METRICS.items()}


def bootstrap_ci95(sessions: list[Session], rounds: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """2.5th and 97.5th percentiles of each metric over sessions resampled with replacement."""
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {name: [] for name in METRICS}
    for _ in range(rounds):
        resample = [sessions[rng.randrange(len(sessions))] for _ in sessions]
        for name, fn in METRICS.items():
            draws[name].append(fn(resample))
    ci = {}
    for name, values in draws.items():
        values.sort()
        ci[name] = [round(values[int(0.025 * rounds)], 4), round(values[int(0.975 * rounds) - 1], 4)]
    return ci
