"""Multi-IF / IFEval evaluation: answer the steps of each conversation, check the verifiable instructions.

    python src/eval/multi_if.py run --data=FILE --output_dir=DIR --model=NAME --base_url=URL
        [--languages=en,zh] [--api_key_env=VAR] [--concurrency=N] [--config=conf/pipeline/X.yaml]
        [--limit=N] [--temperature=T] [--top_p=P] [--max_tokens=N] [--keep_think]
    python src/eval/multi_if.py score --data=FILE --responses=FILE_OR_DIR [--languages=en,zh] [--json]
        [--keep_think]

`run` answers the (up to) three steps of every Multi-IF row in one conversation, appending each
answer to `DIR/responses.jsonl` as it arrives (a killed run resumes, a finished one makes no calls),
then writes `DIR/metrics.json` and prints the table. `score` also takes IFEval's own files
(`input_data.jsonl` + a `{prompt, response}` JSONL). Instructions are checked by Multi-IF's
language-aware rules (IFEval's files by IFEval's); `<think>` blocks are removed first unless
`--keep_think`.
"""

from rpo.eval.multi_if.run import main

if __name__ == "__main__":
    main()
