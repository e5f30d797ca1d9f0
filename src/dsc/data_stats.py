"""Statistics without building anything: Table 4 rates and margins of a detail file, lengths of a dataset.

    python src/dsc/data_stats.py [--detail_path=data/rpo_data/demo_detail.jsonl] [--non_reversible=drop|skip]
        [--dataset=data/rpo.json] [--tokenizer=PATH]

`--dataset` adds length percentiles of a built dataset, for choosing `cutoff_len`: in tokens with
`--tokenizer` (a local tokenizer directory or hub name), else in characters.
"""

from __future__ import annotations

from rpo.utils import cli
from rpo.utils.io import exit_on_input_error
from rpo.utils.pairs.records import detail_stats
from rpo.utils.pairs.stats import length_percentiles


@exit_on_input_error
def main(
    detail_path: str | None = "data/rpo_data/demo_detail.jsonl",
    non_reversible: str = "drop",
    dataset: str | None = None,
    tokenizer: str | None = None,
) -> None:
    """Print the detail file's pairing statistics and, if asked, a dataset's length percentiles."""
    if detail_path:
        mode = cli.choice("non_reversible", non_reversible, ("drop", "skip"))
        print(detail_stats(detail_path, mode).summary())
    if dataset:
        stats = length_percentiles(dataset, tokenizer)
        points = ", ".join(f"{k} {v}" for k, v in stats.items() if k.startswith("p"))
        print(f"{dataset}: {stats['records']} records, length in {stats['unit']}: {points}")


if __name__ == "__main__":
    cli.run(main)
