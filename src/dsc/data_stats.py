"""Statistics without building anything: Table 4 rates and margins of a detail file, lengths of a dataset.

    python src/dsc/data_stats.py [--detail_path=data/rpo_data/demo_detail.jsonl] [--non_reversible=drop|skip]
        [--dataset=data/rpo.json] [--tokenizer=PATH]

`--dataset` adds length percentiles of a built dataset (read as the `dataset_info.json` beside it
registers it), for choosing `cutoff_len`: in tokens under `--tokenizer`'s chat template (a local
tokenizer directory or hub name), with the `cutoff_len` that `generate_conf_file.py` would choose,
else in characters.
"""

from __future__ import annotations

from rpo.utils import cli
from rpo.utils.dataset_lengths import char_lengths, cutoff_len, file_examples, nearest_rank, token_lengths
from rpo.utils.io import exit_on_input_error
from rpo.utils.pairs.records import detail_stats

POINTS = (50, 90, 95, 99, 100)


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
        examples = file_examples(dataset)
        if tokenizer is None:
            lengths, unit = char_lengths(examples), "chars"
        else:
            from transformers import AutoTokenizer

            lengths, unit = token_lengths(AutoTokenizer.from_pretrained(tokenizer), examples), "tokens"
        points = ", ".join(f"p{p} {nearest_rank(lengths, p / 100)}" for p in POINTS)
        cutoff = f"; cutoff_len {cutoff_len(lengths)}" if tokenizer else ""
        print(f"{dataset}: {len(lengths)} records, length in {unit}: {points}{cutoff}")


if __name__ == "__main__":
    cli.run(main)
