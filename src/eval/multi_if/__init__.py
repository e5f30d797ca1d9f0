"""Multi-IF and IFEval: read the benchmark (`data`), check instructions as the benchmarks' own
checkers do (`checkers`, `language`, `scoring`), summarise (`summary`) and run a model (`run`)."""
