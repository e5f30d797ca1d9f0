"""The demo world: exact checkers and reversals, the rule judge/reverser, the oracle."""

import asyncio
import random

import pytest
from rpo.demo.constraints import FAMILIES, parse
from rpo.demo.rules import OracleResponder, RuleJudge, RuleReverser, triggered
from rpo.demo.world import ResponseWriter, make_profile, make_query, sample_constraints
from rpo.utils.schema import ProfileCore
from rpo.utils.stages.selfplay import response_messages

CASES = [
    ('Mention the word "apple".', "Tell me about cats.", "I like apple pie.", True),
    ('Mention the word "apple".', "Tell me about cats.", "I like pineapples.", False),
    ('Never mention the word "apple".', "Tell me about cats.", "Apple!", False),
    ("Use at most 3 words.", "Hi.", "one two three", True),
    ("Use more than 3 words.", "Hi.", "one two three", False),
    ('Start your reply with "sure thing".', "Hi.", "Sure thing, friend.", True),
    ('Do not end your reply with "that is all".', "Hi.", "ok that is all", False),
    ("Write only in lowercase letters.", "Hi.", "all lower here", True),
    ("Use at least one uppercase letter.", "Hi.", "all lower here", False),
    ("Do not use any commas.", "Hi.", "a, b", False),
    ("Use at least one comma.", "Hi.", "a, b", True),
    ("Answer with exactly 2 bullet points.", "Hi.", "- a\n- b", True),
    ("Do not answer with exactly 2 bullet points.", "Hi.", "- a\n- b\n- c", True),
    ('If the user mentions "rain", mention "lemon".', "Cats and rain?", "no fruit here", False),
    ('If the user mentions "rain", mention "lemon".', "Cats?", "no fruit here", True),
    ('If the user mentions "rain", never mention "lemon".', "Rain today?", "a lemon", False),
    ("Use between 2 and 4 words.", "Hi.", "one two three", True),
]


@pytest.mark.parametrize(("text", "query", "response", "expected"), CASES)
def test_checkers(text, query, response, expected):
    constraint = parse(text)
    assert constraint.text == text
    assert constraint.check(query, response) is expected


def test_reversal_is_exact_opposite_and_an_involution():
    rng = random.Random(0)
    families = set()
    for _ in range(200):
        for constraint in sample_constraints(rng, 6):
            families.add(constraint.family)
            opposite = constraint.reverse()
            if not constraint.reversible:
                assert opposite is None
                continue
            assert opposite.reverse() == constraint
            for query, response in (("Tell me about rain.", "- Sure thing, apple\n- b"), ("Hi.", "plain text")):
                untriggered = hasattr(constraint, "trigger") and constraint.trigger not in query
                # a conditional whose trigger is absent is followed both ways; otherwise exactly one holds
                assert untriggered or opposite.check(query, response) != constraint.check(query, response)
    assert len(families) >= 12 and len(FAMILIES) >= 9


def test_unknown_text_is_rejected():
    with pytest.raises(ValueError, match="not a demo-world constraint"):
        parse("Be nice.")


def test_rule_judge_and_reverser_follow_the_interfaces():
    profile = ProfileCore(name="T", constraints=['Mention the word "apple".', "Use between 2 and 4 words."])
    verdicts = asyncio.run(RuleJudge().judge(profile, [], "Hi.", "apple pie"))
    assert verdicts.follows == [True, True]
    assert asyncio.run(RuleReverser().reverse(profile)) == ['Never mention the word "apple".', None]


def test_writer_hits_targets_and_oracle_is_mostly_perfect():
    rng = random.Random(1)
    writer = ResponseWriter(rng)
    exact = perfect = 0
    for i in range(200):
        profile = make_profile(rng, i)
        constraints = [parse(t) for t in profile.constraints]
        query = make_query(rng, profile)
        target = [rng.random() < 0.7 for _ in constraints]
        response = writer.write(constraints, query, target)
        exact += [c.check(query, response) for c in constraints] == target
        messages = response_messages(profile, [], query, "en", triggered(profile.constraints, query))
        oracle = asyncio.run(OracleResponder(i).respond(messages, 1))[0].text
        perfect += all(c.check(query, oracle) for c in constraints)
    assert exact / 200 > 0.7 and perfect / 200 > 0.9
