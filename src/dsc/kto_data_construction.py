"""Build the KTO dataset from a judged session detail file (paper appendix D.1).

    python src/dsc/kto_data_construction.py [--detail_path=data/rpo_data/demo_detail.jsonl]
        [--output_dir=data] [--dataset_name=kto]

Per turn, the highest-scoring sample is desirable under a prompt without the constraints it failed,
the lowest-scoring one undesirable under a prompt without those it followed. Exits 1 when no
record was built.
"""

from __future__ import annotations

from rpo.utils import cli
from rpo.utils.cli import warn_workers_ignored
from rpo.utils.io import exit_on_input_error
from rpo.utils.pairs.build import build_kto_dataset


@exit_on_input_error
def main(
    detail_path: str = "data/rpo_data/demo_detail.jsonl",
    output_dir: str = "data",
    dataset_name: str = "kto",
    workers: int | None = None,
) -> None:
    """Build and register the KTO dataset, then print its summary."""
    warn_workers_ignored(workers)
    counts = build_kto_dataset(detail_path, output_dir, cli.name("dataset_name", dataset_name))
    print(counts.summary())
    cli.conclude("KTO records", counts.pairs)


if __name__ == "__main__":
    cli.run(main)
