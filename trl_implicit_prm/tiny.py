"""Tiny real models and a locally trained tokenizer, built without any download.

The test suite and the embedded demo both need causal LMs and a fast tokenizer on a machine that cannot reach
the Hugging Face Hub. This module builds them from scratch:

- :func:`build_tokenizer` trains a byte-level BPE tokenizer with the `tokenizers` library. Its pre-tokenizer
  uses a Llama-3-style split pattern, so BPE merges punctuation with the newlines that follow it (``".\\n\\n"``
  becomes one token, as in real tokenizers) and a run of newlines may straddle a step boundary. That is what
  makes step-span computation non-trivial, and why the fixtures use it.
- :func:`build_model` instantiates a tiny Llama, Qwen2 or GPT-2 causal LM from a config.

Example:

```python
>>> from trl_implicit_prm.tiny import build_model, build_tokenizer
>>> tok = build_tokenizer(vocab_size=400)
>>> model = build_model("llama", tok, hidden_size=32, num_layers=2, seed=0)
>>> ids = tok("Step 1: 2 + 3 = 5.\\n\\n")["input_ids"]
>>> model(input_ids=__import__("torch").tensor([ids])).logits.shape[-1] == len(tok)
True

```
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

__all__ = ["ARCHITECTURES", "CHAT_TEMPLATE", "build_model", "build_tokenizer", "default_corpus"]

ARCHITECTURES = ("llama", "qwen2", "gpt2")

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

# A minimal role-tagged chat format. The generation prompt ends with a newline so that the assistant text
# starts on a fresh pre-token, as in common instruct templates.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Llama-3's published pre-tokenization pattern: contractions, letters with one leading non-letter, up to three
# digits, punctuation runs with trailing newlines, newline runs, other whitespace.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def default_corpus(n_lines: int = 3000, seed: int = 0) -> Iterator[str]:
    """Yield synthetic step-by-step arithmetic text with the separators the library uses."""
    rng = random.Random(seed)
    words = [
        "Step",
        "We",
        "compute",
        "add",
        "subtract",
        "multiply",
        "the",
        "result",
        "is",
        "so",
        "answer",
        "then",
        "first",
        "next",
        "total",
        "Let",
        "ки",
        "шаг",
        "число",
        "結果",
        "ステップ",
        "é",
        "ß",
    ]
    seps = ["\n\n", "\n", " ки\n"]
    for _ in range(n_lines):
        steps = []
        for k in range(rng.randint(1, 5)):
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            op = rng.choice("+-*")
            filler = " ".join(rng.choice(words) for _ in range(rng.randint(0, 4)))
            steps.append(f"Step {k + 1}: {filler} {a} {op} {b} = {a + b}.")
        yield rng.choice(seps).join(steps) + rng.choice(["", " The answer is \\boxed{42}.", "\n"])


def build_tokenizer(
    vocab_size: int = 600,
    corpus: Iterable[str] | None = None,
    model_max_length: int = 2048,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer locally and wrap it as a `PreTrainedTokenizerFast`.

    The tokenizer prepends `<s>` when `add_special_tokens=True` (as Llama's does), has `</s>` as EOS, `<pad>`
    as padding token, role tokens for its chat template, and supports `return_offsets_mapping`.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, BOS, EOS, *ROLE_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else default_corpus(), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=model_max_length,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(
    architecture: str,
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> PreTrainedModel:
    """Build a randomly initialised tiny causal LM of `architecture` ("llama", "qwen2" or "gpt2").

    Initialisation is deterministic in `seed`. The vocabulary size is the tokenizer's full length, and the
    special-token ids are copied into the config so generation and padding behave as with a real checkpoint.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vocab = len(tokenizer)
    inter = intermediate_size or 4 * hidden_size
    if architecture == "gpt2":
        config = AutoConfig.for_model(
            "gpt2",
            vocab_size=vocab,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_inner=inter,
            n_positions=max_position_embeddings,
            **ids,
        )
    else:
        config = AutoConfig.for_model(
            architecture,
            vocab_size=vocab,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=max(1, num_heads // 2),
            intermediate_size=inter,
            max_position_embeddings=max_position_embeddings,
            tie_word_embeddings=False,
            **ids,
        )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()
