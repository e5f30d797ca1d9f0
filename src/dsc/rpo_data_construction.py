"""Build the RPO preference dataset from a judged session detail file.

    python src/dsc/rpo_data_construction.py [--detail_path=data/rpo_data/demo_detail.jsonl]
        [--output_dir=data] [--dataset_name=rpo] [--non_reversible=drop|skip]
        [--prompt_constraints=triggered|all] [--min_margin=M] [--max_margin=M] [--max_pairs=N]
        [--seed=0] [--gap_buckets]

Writes `{output_dir}/{dataset_name}.json`, registers it in `{output_dir}/dataset_info.json` with its
margin column, and prints what was built: counts, margin histogram, non-reversible constraint counts
and the paper's Table 4 rates for direct vs reversed pairing; exits 1 when no record was built. `--min_margin`, `--max_margin` and
`--max_pairs` (a sample drawn with `--seed`) select among the pairs; `--gap_buckets` writes instead
paper Table 2's three datasets of equal size, margin >= 3, = 2 and = 1 (`{dataset_name}_gap_ge3`,
`_gap_2`, `_gap_1`). Only light modules are imported.
"""

from __future__ import annotations

from rpo.utils import cli
from rpo.utils.cli import warn_workers_ignored
from rpo.utils.io import InputError, exit_on_input_error
from rpo.utils.pairs.build import EmptyGapBucket, build_rpo_dataset, build_rpo_gap_buckets


@exit_on_input_error
def main(
    detail_path: str = "data/rpo_data/demo_detail.jsonl",
    output_dir: str = "data",
    dataset_name: str = "rpo",
    non_reversible: str = "drop",
    prompt_constraints: str = "triggered",
    min_margin: int | None = None,
    max_margin: int | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
    gap_buckets: bool = False,
    workers: int | None = None,
) -> None:
    """Build and register the RPO dataset (or the three gap buckets), then print the summary."""
    warn_workers_ignored(workers)
    dataset_name = cli.name("dataset_name", dataset_name)
    mode = cli.choice("non_reversible", non_reversible, ("drop", "skip"))
    which = cli.choice("prompt_constraints", prompt_constraints, ("triggered", "all"))
    low = None if min_margin is None else cli.integer("min_margin", min_margin, minimum=0)
    high = None if max_margin is None else cli.integer("max_margin", max_margin, minimum=0)
    if low is not None and high is not None and low > high:
        raise InputError(f"--min_margin: {low} is above --max_margin={high}")
    max_pairs = None if max_pairs is None else cli.integer("max_pairs", max_pairs, minimum=1)
    seed = cli.integer("seed", seed, minimum=0)
    if gap_buckets is not False:
        if gap_buckets is not True:
            raise InputError(f"--gap_buckets: a switch, got {gap_buckets!r}")
        if low is not None or high is not None:
            raise InputError(
                "--gap_buckets: sets the margins itself; leave out --min_margin and --max_margin"
            )
        try:
            counts = build_rpo_gap_buckets(detail_path, output_dir, dataset_name, mode, which, max_pairs, seed)
        except EmptyGapBucket as err:
            raise InputError(f"--gap_buckets: {err}") from None
    else:
        counts = build_rpo_dataset(detail_path, output_dir, dataset_name, mode, which, low, high, max_pairs, seed)
    print(counts.summary())
    cli.conclude("RPO records", counts.pairs)


if __name__ == "__main__":
    cli.run(main)
