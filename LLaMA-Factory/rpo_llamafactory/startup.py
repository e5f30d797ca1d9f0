"""Interpreter start-up hook, imported by `rpo_llamafactory.pth` in every Python process.

It only registers a post-import hook (cheap: no torch, no llamafactory import). The patches run
when llamafactory's own modules are first imported, in whatever process that happens: the
`llamafactory-cli` process, a Python API user, or a torchrun/DeepSpeed worker.
`RPO_PATCH_DISABLE=1` leaves LLaMA-Factory untouched.
"""

import os

if os.environ.get("RPO_PATCH_DISABLE", "").strip().lower() not in {"1", "true", "yes", "on"}:
    from rpo_llamafactory.hook import install

    install()
