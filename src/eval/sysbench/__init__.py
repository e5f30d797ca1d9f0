"""SysBench evaluation, one module per job: `data` (its file formats, no LLM calls), `checkout`
(a user's SysBench repository), `judge`, `run`, `metrics` and `agree`. The command line is
`src/eval/sysbench.py`, run by path."""
