"""The tiny policy as a `Responder`, sampled in-process with batched `generate`.

Concurrent `respond` calls made in one event-loop pass are gathered into one batch, so the
sampling stage's concurrency turns into batch size instead of many small forward passes.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import torch
from rpo.utils.roles.protocols import Reply
from rpo.utils.schema import Messages
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as transformers_logging

transformers_logging.disable_progress_bar()  # a tiny model loads in no time; its bar is noise
# `from_pretrained` is not thread-safe: two loads at once in one process can leave a model's tied
# `lm_head` untied and newly initialised (the experiments' `--jobs 2` evaluates two arms in threads).
LOADING = threading.Lock()


class LocalPolicy:
    def __init__(
        self,
        model_dir: str | Path,
        seed: int = 0,
        temperature: float = 1.0,
        max_new_tokens: int = 64,
        batch_size: int = 64,
    ):
        with LOADING:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.generator_seed = seed
        torch.manual_seed(seed)
        self._pending: list[tuple[Messages, int, asyncio.Future]] = []

    async def respond(self, messages: Messages, n: int) -> list[Reply]:
        """Sampled replies, never marked truncated: the demo scores a reply cut at `max_new_tokens`
        as it stands, as its calibration (README) was made."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((messages, n, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        prompts = [messages for messages, n, _ in pending for _ in range(n)]
        try:
            texts = self.generate(prompts, greedy=False)
        except Exception as err:  # noqa: BLE001 - re-raised in every waiting caller
            for _, _, future in pending:
                future.set_exception(err)
            return
        start = 0
        for _, n, future in pending:
            future.set_result([Reply(text) for text in texts[start : start + n]])
            start += n

    @torch.inference_mode()
    def generate(self, prompts: list[Messages], greedy: bool) -> list[str]:
        """One reply per prompt; sampling at `temperature`, or greedy decoding."""
        texts: list[str] = []
        eos = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            rendered = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chunk]
            batch = self.tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False)
            output = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                do_sample=not greedy,
                temperature=self.temperature if not greedy else None,
                top_k=0 if not greedy else None,
                top_p=1.0 if not greedy else None,
                eos_token_id=eos,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            texts += [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        return texts
