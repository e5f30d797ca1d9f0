"""A user's checkout of the SysBench repository: its data file and its own judge-request builder.

SysBench's judge request is the text its `utils.get_eval_pattern(messages, criteria)` builds; to
send exactly that, it is taken from the checkout at run time, never copied into this project.
Its `utils.py` imports pandas and numpy at the top for its spreadsheet analysis, which the judge
request does not need, so the module is not imported: the function's own definition is taken from
the parsed source and compiled alone (it uses only built-ins). A checkout whose function needs
more than that fails when called, and that is reported as a one-line error.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rpo.utils.io import InputError

DATA_FILE = Path("datas") / "system_benchmark_eval_datas.json"
BUILDER = "get_eval_pattern"
PatternBuilder = Callable[[list[dict[str, str]], dict[str, Any]], str]


def checkout_data(checkout: str | Path) -> Path:
    """The release data file of a checkout."""
    path = Path(checkout) / DATA_FILE
    if not path.is_file():
        raise InputError(f"--sysbench_dir {checkout}: no {DATA_FILE} (is it a checkout of SysBench?)")
    return path


def load_pattern_builder(checkout: str | Path) -> PatternBuilder:
    """`get_eval_pattern` as defined in the checkout's `utils.py`, compiled on its own."""
    source_path = Path(checkout) / "utils.py"
    try:
        source = source_path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(source_path))
    except FileNotFoundError:
        raise InputError(f"--sysbench_dir {checkout}: no utils.py (is it a checkout of SysBench?)") from None
    except (UnicodeDecodeError, SyntaxError, ValueError) as err:
        raise InputError(f"{source_path}: cannot be read as Python ({type(err).__name__})") from None
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == BUILDER]
    if not found:
        raise InputError(f"{source_path}: no function {BUILDER}")
    namespace: dict[str, Any] = {}
    code = compile(ast.Module(body=found[-1:], type_ignores=[]), str(source_path), "exec")
    exec(code, namespace)  # noqa: S102 - the user's own checkout, the one function we run from it
    builder = namespace[BUILDER]

    def build(messages: list[dict[str, str]], criteria: dict[str, Any]) -> str:
        try:
            pattern = builder(messages=messages, criteria=criteria)
        except Exception as err:  # noqa: BLE001 - the checkout's own code: any failure is the checkout's
            raise InputError(f"{source_path}: {BUILDER} failed ({type(err).__name__}: {err})") from None
        if not isinstance(pattern, str):
            raise InputError(f"{source_path}: {BUILDER} returned {type(pattern).__name__}, not text")
        return pattern

    return build
