"""Browse SysBank from the command line: stats, list, show, search, export and a local web page.

    python sysbank/browse.py {stats,list,show,search,export,serve} [--path FILE_OR_DIR ...]

`--path` defaults to the bundled sample and takes any number of release files or folders
(`.jsonl`, `.jsonl.gz`). `--json` makes list/search/show print normalised JSONL records. Bad input,
a bad argument included, is reported in one line naming file, line and field, with exit status 2.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rpo.utils.io import InputError, atomic_write, exit_on_input_error
from rpo.utils.text_table import histogram, table

from sysbank.bank import (
    LANGUAGES,
    ORDINARY_TIMEOUT_FACTOR,
    REGEX_TIMEOUT_S,
    Bank,
    FilterError,
    Filters,
    SearchError,
)
from sysbank.loader import SAMPLE_PATH, to_jsonl_line
from sysbank.ontology import CATEGORIES, OTHER


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (an `InputError`) instead of the usage text and a line."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog}: {message} (see --help)")


def whole_number(text: str) -> int:
    """An argument that must be an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0 meaning any free one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return value


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="only records of this source (e.g. frgpts, gptstore)")
    parser.add_argument("--language", "--lang", choices=LANGUAGES, help="only records in this language")
    parser.add_argument("--min_constraints", "--min-constraints", type=whole_number,
                        help="at least this many constraints")
    parser.add_argument("--max_constraints", "--max-constraints", type=whole_number,
                        help="at most this many constraints")
    parser.add_argument("--category", choices=(*CATEGORIES, OTHER), help="with a constraint of this ontology kind")


def _add_common(parser: argparse.ArgumentParser, json_flag: bool = True) -> None:
    parser.add_argument(
        "--path", nargs="+", action="extend", metavar="FILE_OR_DIR",
        help=f"release files or folders (default: the bundled sample {SAMPLE_PATH.name})",
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print normalised JSONL records")


def _add_regex_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--regex_timeout", "--regex-timeout", type=seconds, default=REGEX_TIMEOUT_S, metavar="SECONDS",
                        help=f"stop a regular-expression search that can backtrack after this long, an ordinary "
                             f"one after {ORDINARY_TIMEOUT_FACTOR} times as long (default {REGEX_TIMEOUT_S:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sysbank/browse.py", description="Browse SysBank system prompts.")
    sub = parser.add_subparsers(dest="command", required=True)

    stats = sub.add_parser("stats", help="records by source and language, constraint histogram and kinds")
    _add_common(stats)
    _add_filters(stats)

    listing = sub.add_parser("list", help="one line per record")
    _add_common(listing)
    _add_filters(listing)
    listing.add_argument("--limit", type=whole_number, help="print at most this many")

    show = sub.add_parser("show", help="one record in full")
    show.add_argument("id")
    _add_common(show)

    search = sub.add_parser("search", help="case-insensitive search of name, description, skills, constraints")
    search.add_argument("text")
    search.add_argument("--regex", action="store_true", help="TEXT is a regular expression")
    _add_regex_timeout(search)
    _add_common(search)
    _add_filters(search)
    search.add_argument("--limit", type=whole_number, help="print at most this many")

    export = sub.add_parser("export", help="write the selected records as normalised profile JSONL, atomically")
    export.add_argument("--output", "-o", required=True, help="output .jsonl (or .jsonl.gz)")
    export.add_argument("--search", dest="text", help="only records matching this text")
    export.add_argument("--regex", action="store_true", help="--search is a regular expression")
    _add_regex_timeout(export)
    export.add_argument("--sample", type=whole_number, help="a seeded random subset of this many records")
    export.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    _add_common(export, json_flag=False)
    _add_filters(export)

    serve = sub.add_parser("serve", help="a local web page to search, filter and read prompts")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=8765, help="port (0 picks a free one; default 8765)")
    _add_regex_timeout(serve)
    _add_common(serve, json_flag=False)
    return parser


def _filters(args: argparse.Namespace) -> Filters:
    try:
        return Filters(
            source=args.source,
            language=args.language,
            min_constraints=args.min_constraints,
            max_constraints=args.max_constraints,
            category=args.category,
        )
    except FilterError as err:
        raise InputError(f"--{err.field}: {err.reason}") from None


def _limit(indices: list[int], limit: int | None) -> list[int]:
    return indices if limit is None else indices[:limit]


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_list(bank: Bank, indices: Sequence[int], as_json: bool) -> None:
    """One row per record: id, source, language, number of constraints, name."""
    for i in indices:
        p = bank.profiles[i]
        if as_json:
            print(to_jsonl_line(p))
        else:
            print(f"{p.id}\t{p.source or '-'}\t{bank.languages[i]}\t{len(p.constraints)}\t{_one_line(p.name, 60)}")


def print_profile(bank: Bank, i: int) -> None:
    """A readable view of one record, each constraint tagged with its ontology kinds."""
    p = bank.profiles[i]
    print(f"{p.name}  [{p.id}]")
    print(f"source: {p.source or '-'}   language: {bank.languages[i]}   gen_model: {p.gen_model or '-'}")
    print(f"from: {bank.locations[i]}")
    if p.description:
        print("\nDescription:")
        print(textwrap.indent(p.description, "  "))
    if p.skills:
        print("\nSkills:")
        for n, skill in enumerate(p.skills, 1):
            print(f"  {n}. {skill}")
    print(f"\nConstraints ({len(p.constraints)}):")
    for n, (constraint, tags) in enumerate(zip(p.constraints, bank.constraint_categories[i], strict=True), 1):
        print(f"  {n}. [{', '.join(tags)}] {constraint}")
    if p.inspired_corpus:
        print("\nInspired by:")
        print(textwrap.indent(_one_line(p.inspired_corpus, 300), "  "))


def print_stats(stats: dict[str, object]) -> None:
    print(f"records: {stats['records']}   constraints: {stats['constraints']}   "
          f"mean per prompt: {stats['mean_constraints']}")
    for title, key in (("by source", "by_source"), ("by language", "by_language"),
                       ("by source/language", "by_source_language")):
        print(f"\n{title}:")
        for name, count in stats[key].items():  # type: ignore[attr-defined]
            print(f"  {name:<24}{count:>8}")
    hist: dict[str, int] = stats["constraints_per_prompt"]  # type: ignore[assignment]
    print("\nconstraints per prompt:")
    print(histogram(hist))
    cats: dict[str, int] = stats["constraint_categories"]  # type: ignore[assignment]
    prompts: dict[str, int] = stats["prompts_with_category"]  # type: ignore[assignment]
    total = max(1, int(stats["constraints"]))  # type: ignore[call-overload]
    print("\nconstraint kinds (paper's ontology, by keyword; a constraint may have several):")
    rows = [(kind, count, f"{count / total:.1%}", prompts[kind]) for kind, count in cats.items()]
    print(table(("kind", "constraints", "share", "prompts"), rows))


def export(bank: Bank, indices: Sequence[int], output: str | Path) -> int:
    """Write records as normalised JSONL in one atomic step (gzip when the name ends in .gz).

    Nothing selected is an error, not an empty file: the loader refuses empty files, so such an
    export could never be read back.
    """
    if not indices:
        raise InputError(f"--output: nothing to write to {output}: no record passes the filters (no file written)")
    output = Path(output)
    data = "".join(to_jsonl_line(bank.profiles[i]) + "\n" for i in indices).encode("utf-8")
    try:
        with atomic_write(output, "wb") as fh:
            fh.write(gzip.compress(data, mtime=0) if output.suffix == ".gz" else data)
    except OSError as err:
        raise InputError(f"--output: cannot write {output} ({err.strerror or err})") from None
    return len(indices)


@exit_on_input_error
def main(argv: Sequence[str] | None = None) -> None:
    try:
        run(build_parser().parse_args(argv))
    except BrokenPipeError:
        # output piped into `head` and friends: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _search(bank: Bank, text: str, regex: bool, filters: Filters, timeout_s: float) -> list[int]:
    """`Bank.search`, its refusals worded with the flag they concern."""
    try:
        return bank.search(text, regex=regex, filters=filters, timeout_s=timeout_s)
    except SearchError as err:
        raise InputError(f"--regex: {err}") from None


def run(args: argparse.Namespace) -> None:
    """Carry out one parsed subcommand."""
    bank = Bank.load(args.path or [SAMPLE_PATH])
    if args.command == "show":
        i = bank.get(args.id)
        if args.json:
            print(to_jsonl_line(bank.profiles[i]))
        else:
            print_profile(bank, i)
    elif args.command == "stats":
        stats = bank.stats(bank.select(_filters(args)))
        if args.json:
            print(json.dumps(stats, ensure_ascii=False))
        else:
            print_stats(stats)
    elif args.command == "list":
        print_list(bank, _limit(bank.select(_filters(args)), args.limit), args.json)
    elif args.command == "search":
        hits = _search(bank, args.text, args.regex, _filters(args), args.regex_timeout)
        print_list(bank, _limit(hits, args.limit), args.json)
        if not args.json:
            print(f"{len(hits)} match(es)", file=sys.stderr)
    elif args.command == "export":
        filters = _filters(args)
        if args.regex and args.text is None:
            raise InputError("--regex: needs --search TEXT (the regular expression)")
        if args.text is None:
            chosen = bank.select(filters)
        else:
            chosen = _search(bank, args.text, args.regex, filters, args.regex_timeout)
        if args.sample is not None:
            chosen = bank.sample(chosen, args.sample, args.seed)
        n = export(bank, chosen, args.output)
        print(f"wrote {n} profile(s) to {args.output}")
    elif args.command == "serve":
        from sysbank.server import serve

        serve(bank, host=args.host, port=args.port, regex_timeout_s=args.regex_timeout)


if __name__ == "__main__":
    main()
