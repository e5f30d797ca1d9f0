"""The shared counters: one way to count, print and add."""

from dataclasses import dataclass, field

from rpo.utils.stats import Tally, counter


@dataclass
class Example(Tally):
    judged: int = counter("judged")
    retries: int = counter("format retries")
    notes: list[str] = field(default_factory=list)  # not a count: never printed


def test_counts_print_in_declaration_order_with_their_labels():
    tally = Example()
    tally.judged += 3
    tally.retries += 1
    tally.notes.append("x")
    assert tally.counts() == {"judged": 3, "format retries": 1}
    assert tally.summary() == "judged 3, format retries 1"


def test_add_folds_in_another_tally():
    first, second = Example(judged=2), Example(judged=1, retries=4)
    first.add(second)
    assert (first.judged, first.retries) == (3, 4)


@dataclass
class Shares(Tally):
    SUMMARY = ("kept {kept} of {seen} ({share:.0%})",)
    kept: int = 0
    seen: int = 0

    @property
    def share(self) -> float:
        return self.kept / self.seen if self.seen else 0.0


def test_a_summary_template_reads_fields_and_properties():
    tally = Shares(kept=3, seen=4)
    assert tally.summary() == "kept 3 of 4 (75%)"
    tally.add(Shares(kept=1, seen=4))
    assert tally.summary() == "kept 4 of 8 (50%)"
