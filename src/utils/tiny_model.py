"""Build a tiny random Llama model and a tokenizer trained on the spot.

    python src/utils/tiny_model.py out/models/tiny [--texts=my_texts.jsonl] [--vocab_size=1024]
        [--hidden_size=64] [--num_layers=2] [--seed=0] [--eos_scale=1]

No weights can be downloaded in tests or in the offline demo, so they build their models here:
a byte-level BPE tokenizer trained on the given texts (a second) and a randomly initialised small
Llama that LLaMA-Factory trains on CPU in seconds. Use it with LLaMA-Factory's `template: chatml`.
`--texts` trains the tokenizer on your own texts: a `.jsonl` file holds one JSON string, or one
object with a `text` field, per line; any other file one text per line. Without it a few built-in
sentences are used, which leaves most words split into bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from rpo.utils import cli
from rpo.utils.io import InputError, exit_on_input_error, iter_lines

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEFAULT_TEXTS = [
    "You are a helpful assistant. Follow every constraint in the system prompt.",
    "The user asks a question and the assistant answers it clearly and briefly.",
    "Mention the keyword, never use commas, end with a question, write at most twenty words.",
    "Hello! How can I help you today? Here is a short list: first, second, third.",
]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer with chatml special tokens, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(
    output_dir: str | Path,
    texts: Iterable[str] | None = None,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    seed: int = 0,
    eos_scale: float = 1.0,
) -> Path:
    """Write a random Llama model and its tokenizer to `output_dir`; returns the path.

    `eos_scale` multiplies the end-of-text row of the (tied) embedding: above 1, a random model's
    replies often end on their own (`finish_reason: stop`) instead of always running into the
    token cap, as a trained chat model's do; 1 leaves the initialisation as it is."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    output_dir = Path(output_dir)
    tokenizer = train_tokenizer(texts if texts is not None else DEFAULT_TEXTS, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if eos_scale != 1.0:
        with torch.no_grad():
            model.get_output_embeddings().weight[tokenizer.eos_token_id] *= eos_scale
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def read_texts(path: str | Path) -> list[str]:
    """The texts of `path` (see the module docstring); a bad line is one `InputError` naming it."""
    jsonl = Path(path).name.removesuffix(".gz").endswith(".jsonl")
    texts = []
    for lineno, line in iter_lines(path):
        if not jsonl:
            texts.append(line.rstrip("\n"))
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: line {lineno}: invalid JSON ({err.msg})") from None
        text = value.get("text") if isinstance(value, dict) else value
        if not isinstance(text, str):
            raise InputError(f"{path}: line {lineno}: expected a JSON string or an object with a text field")
        texts.append(text)
    if not texts:
        raise InputError(f"{path}: no texts (the file is empty or holds only blank lines)")
    return texts


@exit_on_input_error
def main(output_dir: str, texts: str | None = None, vocab_size: int = 512, hidden_size: int = 64,
         num_layers: int = 2, seed: int = 0, eos_scale: float = 1.0) -> None:
    """Build a tiny model in OUTPUT_DIR (its tokenizer trained on `--texts` when given)."""
    minimum = 256 + len(SPECIAL_TOKENS)  # the byte alphabet and the special tokens
    vocab_size = cli.integer("vocab_size", vocab_size, minimum=minimum)
    hidden_size = cli.integer("hidden_size", hidden_size, minimum=4)
    num_layers = cli.integer("num_layers", num_layers, minimum=1)
    if isinstance(eos_scale, bool) or not isinstance(eos_scale, int | float) or not 0 < eos_scale < 1e6:
        raise InputError(f"--eos_scale: expected a positive number, got {eos_scale!r}")
    if hidden_size % 4:
        raise InputError(f"--hidden_size: must be a multiple of the 4 attention heads, got {hidden_size}")
    corpus = read_texts(texts) if texts is not None else None
    path = build_tiny_model(output_dir, corpus, vocab_size=vocab_size, hidden_size=hidden_size,
                            num_layers=num_layers, seed=seed, eos_scale=eos_scale)
    print(f"tiny model written to {path} (template: chatml)")


if __name__ == "__main__":
    cli.run(main)
