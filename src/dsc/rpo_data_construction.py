"""Build the RPO preference dataset from a judged session detail file (SPEC §4.4-4.5).

    python src/dsc/rpo_data_construction.py [--detail_path=data/rpo_data/demo_detail.jsonl]
        [--output_dir=data] [--dataset_name=rpo] [--non_reversible=drop|skip] [--workers=N]

Writes `{output_dir}/{dataset_name}.json`, registers it in `{output_dir}/dataset_info.json` with its
margin column, and prints what was built: counts, margin histogram, non-reversible constraint counts
and the paper's Table 4 rates for direct vs reversed pairing. Only light modules are imported.
A large detail file is encoded by one process per CPU (`--workers` to choose; the output is the same).
"""

from __future__ import annotations

import fire
from rpo.utils.io import exit_on_input_error
from rpo.utils.pairs.build import build_rpo_dataset


@exit_on_input_error
def main(
    detail_path: str = "data/rpo_data/demo_detail.jsonl",
    output_dir: str = "data",
    dataset_name: str = "rpo",
    non_reversible: str = "drop",
    workers: int | None = None,
) -> None:
    """Build and register the RPO dataset, then print its summary."""
    print(build_rpo_dataset(detail_path, output_dir, dataset_name, non_reversible, workers).summary())


if __name__ == "__main__":
    fire.Fire(main)
