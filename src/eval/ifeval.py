"""IFEval's verifiable instructions, checked by the implementation that `lm-eval` ships.

Strict: the response as written. Loose: the instruction also counts as followed when any of IFEval's
seven relaxations of the response passes (first line dropped, last line dropped, both, and each of
these and the response itself with `*` removed). Prompt-level accuracy needs every instruction of a
prompt followed; instruction-level pools the instructions. An instruction id the library does not
know (some of Multi-IF's language-specific variants) is counted as not followed and reported,
never passed silently. `langdetect` is seeded, so a language check gives the same verdict every run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rpo.eval.nltk_data import ensure_punkt
from rpo.utils.io import InputError

STEP_METRICS = ("prompt_strict", "inst_strict", "prompt_loose", "inst_loose")


@lru_cache(maxsize=1)
def _library() -> Any:
    """lm-eval's IFEval modules; the Punkt model must be in place before they are imported."""
    ensure_punkt()
    import langdetect
    from lm_eval.tasks.ifeval import instructions_registry, utils

    langdetect.DetectorFactory.seed = 0
    return instructions_registry.INSTRUCTION_DICT, utils


def supported_instructions() -> set[str]:
    return set(_library()[0])


@dataclass(frozen=True)
class IFExample:
    """One prompt (one step of a Multi-IF conversation) and the instructions its answer must follow."""

    key: Any
    prompt: str
    instruction_ids: list[str]
    kwargs: list[dict[str, Any]]
    language: str = "en"


@dataclass
class IFResult:
    strict: list[bool]
    loose: list[bool]
    unsupported: list[str] = field(default_factory=list)


def check_response(example: IFExample, response: str) -> IFResult:
    """Strict and loose verdicts of each instruction of `example` for `response`."""
    registry, utils = _library()
    supported = [i for i, iid in enumerate(example.instruction_ids) if iid in registry]
    inp = utils.InputExample(
        key=example.key,
        instruction_id_list=[example.instruction_ids[i] for i in supported],
        prompt=example.prompt,
        kwargs=[example.kwargs[i] for i in supported],
    )
    try:
        strict = utils.test_instruction_following_strict(inp, response).follow_instruction_list
        loose = utils.test_instruction_following_loose(inp, response).follow_instruction_list
    except (TypeError, ValueError) as err:
        raise InputError(f"key {example.key}: instruction arguments rejected by the checker ({err})") from None
    by_index = dict(zip(supported, zip(strict, loose)))
    verdicts = [by_index.get(i, (False, False)) for i in range(len(example.instruction_ids))]
    return IFResult(
        strict=[s for s, _ in verdicts],
        loose=[lo for _, lo in verdicts],
        unsupported=[iid for iid in example.instruction_ids if iid not in registry],
    )


def step_accuracies(results: list[IFResult]) -> dict[str, float]:
    """The four accuracies of one step and their mean (the paper's headline per step)."""
    def prompt_level(kind: str) -> float:
        return sum(all(getattr(r, kind)) for r in results) / len(results) if results else 0.0

    def inst_level(kind: str) -> float:
        flat = [v for r in results for v in getattr(r, kind)]
        return sum(flat) / len(flat) if flat else 0.0

    acc = {
        "prompt_strict": prompt_level("strict"),
        "inst_strict": inst_level("strict"),
        "prompt_loose": prompt_level("loose"),
        "inst_loose": inst_level("loose"),
    }
    acc["mean"] = sum(acc.values()) / len(STEP_METRICS)
    return acc


def unsupported_counts(results: list[IFResult]) -> dict[str, int]:
    return dict(sorted(Counter(iid for r in results for iid in r.unsupported).items()))
