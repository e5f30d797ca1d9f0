"""Build a tiny random Llama model and a tokenizer trained on the spot.

No weights can be downloaded in tests or in the offline demo, so they build their models here:
a byte-level BPE tokenizer trained on the given texts (a second) and a randomly initialised small
Llama that LLaMA-Factory trains on CPU in seconds. Use it with LLaMA-Factory's `template: chatml`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rpo.utils import cli

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
) -> Path:
    """Write a random Llama model and its tokenizer to `output_dir`; returns the path."""
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
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def main(output_dir: str, vocab_size: int = 512, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> str:
    """CLI: `python -m rpo.utils.tiny_model OUTPUT_DIR` builds a tiny model for experiments."""
    return str(build_tiny_model(output_dir, vocab_size=vocab_size, hidden_size=hidden_size,
                                num_layers=num_layers, seed=seed))


if __name__ == "__main__":
    cli.run(main)
