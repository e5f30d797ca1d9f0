"""The demo's evaluation on a hand-made session: trigger selection, triggered-only scoring, own vs
reference history, and the trainer progress read from LLaMA-Factory's output."""

import asyncio

import pytest
from rpo.demo.evaluation import evaluate, judge_turn
from rpo.demo.rules import RuleTriggerSelector
from rpo.demo.training import TrainerProgress
from rpo.eval.metrics import score
from rpo.utils.schema import ProfileCore, SelfPlaySession, SelfPlayTurn

CONSTRAINTS = [
    'Mention the word "apple".',
    'If the user mentions "rain", mention "lemon".',
    "Use at most 5 words.",
    'If the user mentions "money", never mention "tiger".',
]
PROFILE = ProfileCore(name="T", constraints=CONSTRAINTS)
QUERIES = ["Tell me about cats.", "Tell me about cats and rain.", "Why do people like tea?"]
SESSION = SelfPlaySession(
    session_id="s",
    profile=PROFILE,
    turns=[SelfPlayTurn(query=q, reference_response=f"reference {i}") for i, q in enumerate(QUERIES)],
)


class ScriptedPolicy:
    """Replies by the query (and, on the last turn, by the history it is shown); records every prompt."""

    def __init__(self):
        self.prompts = []
        self.calls = 0

    def generate(self, prompts, greedy):
        assert greedy
        self.calls += 1
        self.prompts += prompts
        replies = []
        for messages in prompts:
            query = messages[-1]["content"]
            if "rain" in query:
                replies.append("apple and lemon")
            elif "tea" in query:
                history = [m["content"] for m in messages if m["role"] == "assistant"]
                own = history == ["apple cats", "apple and lemon"]
                replies.append("one two three four five six" if own else "apple")
            else:
                replies.append("apple cats")
        return replies


@pytest.mark.parametrize(
    ("query", "expected"),
    [("Tell me about cats.", [0, 2]), ("Cats and rain?", [0, 1, 2]), ("Rain or money?", [0, 1, 2, 3])],
)
def test_conditionals_trigger_on_the_query_words(query, expected):
    assert asyncio.run(RuleTriggerSelector().select(PROFILE, [], query)) == expected


def test_a_turn_is_judged_on_its_triggered_constraints_only():
    assert judge_turn(CONSTRAINTS, "Tell me about cats.", "no fruit at all here") == [False, True]
    assert judge_turn(CONSTRAINTS, "Cats and rain?", "apple only") == [True, False, True]


def test_own_history_is_the_headline_and_reference_history_beside():
    policy = ScriptedPolicy()
    judged = evaluate(policy, [SESSION])
    # own history: turn 3 sees the policy's replies and breaks both triggered constraints
    assert judged["own"] == [[[True, True], [True, True, True], [False, False]]]
    # reference history: turn 3 sees the references and follows
    assert judged["reference"] == [[[True, True], [True, True, True], [True, True]]]
    # 3 own-history turns + 2 reference turns in 3 passes: the history-free first turn is answered
    # once, the reference turns ride along with it
    assert (len(policy.prompts), policy.calls) == (5, 3)
    reference_last, own_last = policy.prompts[2], policy.prompts[4]
    assert [m["content"] for m in own_last if m["role"] == "assistant"] == ["apple cats", "apple and lemon"]
    assert [m["content"] for m in reference_last if m["role"] == "assistant"] == ["reference 0", "reference 1"]


def test_metrics_pool_triggered_judgments():
    judged = evaluate(ScriptedPolicy(), [SESSION])
    # 7 triggered judgments (2 + 3 + 2), 5 followed; scoring all 4 constraints would count the
    # untriggered conditionals as 5 extra successes (10 of 12)
    assert score(judged["own"]) == pytest.approx({"CSR": 5 / 7, "ISR": 2 / 3, "SSR": 2 / 3})
    assert score(judged["reference"]) == pytest.approx({"CSR": 1.0, "ISR": 1.0, "SSR": 1.0})


def test_a_turn_triggering_nothing_counts_as_followed_and_adds_no_judgment():
    assert score([[[], [True, False]], [[]]]) == pytest.approx({"CSR": 1 / 2, "ISR": 2 / 3, "SSR": (1 / 2 + 1) / 2})


def test_trainer_progress_follows_the_trainers_bar_in_any_chunking():
    output = (
        "[INFO|trainer.py] >> ***** Running training *****\n"
        "Running tokenizer on dataset: 100%|██████████| 92/92 [00:00<00:00, 1096.92 examples/s]\n"
        "\r  0%|          | 0/32 [00:00<?, ?it/s]\r  3%|▎         | 1/32 [00:01<00:58,  1.90s/it]"
        "\r 31%|███▏      | 10/32 [00:22<00:54,  2.48s/it]\r          \r{'loss': '5.582', 'grad_norm': '0.931'}\n"
        "\r100%|██████████| 32/32 [00:38<00:00,  1.93it/s]\n"
    ).encode()
    progress = TrainerProgress("sft")
    seen = []
    for start in range(0, len(output), 7):  # splits segments and multi-byte characters
        progress.feed(output[start : start + 7])
        if progress.bar is not None and progress.bar.n not in seen:
            seen.append(progress.bar.n)
    assert seen == [0, 1, 10, 32]
    assert (progress.bar.total, progress.bar.postfix) == (32, "loss 5.582")
    progress.close()
