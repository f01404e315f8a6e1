"""The offline fixtures are real: a fast BPE tokenizer that merges across separators, and loadable tiny LMs."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_implicit_prm.tiny import ARCHITECTURES


def test_tokenizer_round_trip_and_merges_across_separators(tiny_dir):
    tok = AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")
    assert tok.is_fast and tok.chat_template
    text = "Step 1: 2 + 3 = 5.\n\nStep 2: 5 * 2 = 10."
    enc = tok(text, return_offsets_mapping=True)
    assert enc["input_ids"][0] == tok.bos_token_id
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == text
    pieces = [text[a:b] for a, b in enc["offset_mapping"][1:]]
    assert "".join(pieces) == text
    # BPE merged the period with the separator that follows it: spans must come from offsets, not prefixes.
    assert ".\n\n" in pieces
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "2+3?"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.startswith(tok.bos_token) and chat.endswith("<|assistant|>\n")


def test_models_load_from_disk_with_matching_vocabulary(tiny_dir, tokenizer):
    ids = torch.tensor([tokenizer("2 + 3 = 5")["input_ids"]])
    for arch in ARCHITECTURES:
        model = AutoModelForCausalLM.from_pretrained(tiny_dir / arch)
        assert model.config.model_type == arch
        assert model.get_input_embeddings().num_embeddings == len(tokenizer)
        ref = AutoModelForCausalLM.from_pretrained(tiny_dir / f"{arch}-ref")
        with torch.no_grad():
            a, b = model(input_ids=ids).logits, ref(input_ids=ids).logits
        assert a.shape == (1, ids.size(1), len(tokenizer))
        assert not torch.allclose(a, b)  # policy and reference differ


def test_load_tokenizer_gives_the_saved_ids_for_every_architecture(tiny_dir, tokenizer, caplog):
    """transformers 5 rebuilds a qwen2 checkpoint's tokenizer with Qwen2's own pipeline (other ids);
    `load_tokenizer` notices and loads the saved tokenizer.json as is."""
    from trl_implicit_prm.modeling import load_tokenizer

    text = "Step 12: 345 + 6 = 351.\n\nThe answer is 351."
    want = tokenizer(text)["input_ids"]
    assert AutoTokenizer.from_pretrained(tiny_dir / "qwen2")(text)["input_ids"] != want  # the trap
    for arch in ARCHITECTURES:
        tok = load_tokenizer(tiny_dir / arch)
        assert tok(text)["input_ids"] == want, arch
        assert tok.chat_template == tokenizer.chat_template and tok.eos_token == tokenizer.eos_token
    assert "loading the saved tokenizer.json as is" in caplog.text
