"""ProcessRewardComputer on bad input: every mistake is a clear error naming the problem, never a wrong score."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from trl_implicit_prm.data import DataFormatError, tokenize_example
from trl_implicit_prm.inference import ProcessRewardComputer, ResponseTooLongError
from trl_implicit_prm.tiny import build_model, build_tokenizer

PROMPT = "Q: what is 2 + 3 + 4?\n"
STEPS = ["First, 2 + 3 = 5.", "Then, 5 + 4 = 9.", "The answer is 9."]


@pytest.fixture(scope="module")
def prc(tiny_dir):
    return ProcessRewardComputer.from_pretrained(
        tiny_dir / "llama", ref_model=tiny_dir / "llama-ref", beta=0.5, device="cpu"
    )


def test_mismatched_lengths_and_non_lists(prc):
    with pytest.raises(ValueError, match="same length, got 2 prompts and 1 responses"):
        prc.score([PROMPT, PROMPT], ["a."])
    with pytest.raises(TypeError, match=r"prompts must be a list.*score_one"):
        prc.score(PROMPT, ["a."])
    with pytest.raises(TypeError, match="responses must be a list"):
        prc.score([PROMPT], "a.")


@pytest.mark.parametrize(
    "response,match",
    [
        ("", r"'responses' row 1: expected a non-empty completion, got ''"),
        ("  \n\n ", r"'responses' row 1: expected a non-empty completion"),
        (["a.", ""], r"'responses' row 1, step 1: expected a step with a non-whitespace character"),
        ([], r"'responses' row 1"),
        (None, r"'responses' row 1"),
    ],
)
def test_empty_or_malformed_response(prc, response, match):
    with pytest.raises(DataFormatError, match=match):
        prc.score([PROMPT, PROMPT], ["fine.", response])


def test_malformed_prompt(prc):
    with pytest.raises(DataFormatError, match=r"'prompts' row 0"):
        prc.score([42], ["a."])
    with pytest.raises(DataFormatError, match=r"'prompts' row 0, message 0"):
        prc.score([[{"role": "user"}]], ["a."])


def _naive_truncated(policy, ref, tokenizer, prompt, steps, beta, max_length):
    enc = tokenize_example(tokenizer, prompt, steps, max_length=max_length)
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        pol = torch.log_softmax(policy(input_ids=ids).logits[0, :-1].double(), -1)
        rf = torch.log_softmax(ref(input_ids=ids).logits[0, :-1].double(), -1)
    tgt = ids[0, 1:, None]
    ratio = (pol.gather(-1, tgt) - rf.gather(-1, tgt)).squeeze(-1).tolist()
    per_step = [0.0] * enc["num_steps"]
    for t, k in enumerate(enc["step_index"][1:], start=1):
        if k >= 0:
            per_step[k] += beta * ratio[t - 1]
    return enc, per_step


def test_response_longer_than_max_length(tiny_dir, prc, tokenizer):
    full = tokenize_example(prc.tokenizer, PROMPT, STEPS)
    first_step_end = max(i for i, k in enumerate(full["step_index"]) if k == 0) + 1
    max_length = first_step_end + 3  # a few tokens into step 1 (0-based)
    short = ProcessRewardComputer(
        prc.model, prc.tokenizer, ref_model=prc.ref_model, beta=0.5, max_length=max_length
    )
    with pytest.raises(
        ResponseTooLongError,
        match=rf"responses\[0\]: prompt \+ response take {len(full['input_ids'])} "
        rf"tokens, more than max_length={max_length}.*truncation=True",
    ):
        short.score([PROMPT], [STEPS])

    result = short.score_one(PROMPT, STEPS, truncation=True)
    assert result.truncated and result.num_truncated_steps == 2
    assert result.steps == STEPS[:2] and result.unscored_steps == STEPS[2:]
    assert len(result.step_rewards) == 2 and len(result.token_rewards) == max_length - full["prompt_length"]
    _, expected = _naive_truncated(prc.model, prc.ref_model, prc.tokenizer, PROMPT, STEPS, 0.5, max_length)
    assert result.step_rewards == pytest.approx(expected, abs=1e-5)
    assert result.to_dict()["truncated"] is True
    # Truncation at construction time; a complete response is unaffected by the flag.
    lenient = ProcessRewardComputer(
        prc.model, prc.tokenizer, ref_model=prc.ref_model, beta=0.5, max_length=max_length, truncation=True
    )
    assert lenient.score_one(PROMPT, STEPS).truncated
    assert not lenient.score_one(PROMPT, "Short.").truncated

    with pytest.raises(ResponseTooLongError, match=r"prompts\[0\]: the prompt alone takes .* max_length=4"):
        ProcessRewardComputer(
            prc.model, prc.tokenizer, max_length=4, reference_free=True, truncation=True
        ).score([PROMPT], ["a."])


def test_default_max_length_is_the_model_context(tiny_dir):
    prc = ProcessRewardComputer.from_pretrained(
        tiny_dir / "gpt2", ref_model=tiny_dir / "gpt2-ref", device="cpu"
    )
    assert prc.max_length == 1024  # n_positions of the tiny GPT-2 (tokenizer allows 2048)
    long_response = "\n\n".join(f"Step {k}: {k} + {k} = {2 * k}." for k in range(200))
    with pytest.raises(ResponseTooLongError, match="more than max_length=1024"):
        prc.score_one(PROMPT, long_response)
    result = prc.score_one(PROMPT, long_response, truncation=True)
    assert result.truncated and len(result.steps) + len(result.unscored_steps) == 200
    assert (
        0 < len(result.steps) < 200
        and len(result.tokens) + tokenize_example(prc.tokenizer, PROMPT, long_response)["prompt_length"]
        == 1024
    )


def test_reference_with_a_different_vocabulary(tiny_dir, tmp_path):
    other_tok = build_tokenizer(vocab_size=500)
    other = build_model("llama", other_tok, seed=5)
    with pytest.raises(ValueError, match=r"vocabulary \(\d+ embeddings\) differs from the policy's"):
        ProcessRewardComputer.from_pretrained(tiny_dir / "llama", ref_model=other, device="cpu")
    other.save_pretrained(tmp_path / "other")
    other_tok.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="vocabulary"):
        ProcessRewardComputer.from_pretrained(tiny_dir / "llama", ref_model=tmp_path / "other", device="cpu")


def test_non_existent_paths(tiny_dir, tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=r"model: .*no-such-model.* does not exist"):
        ProcessRewardComputer.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match=r"ref_model: .*no-such-model.* does not exist"):
        ProcessRewardComputer.from_pretrained(tiny_dir / "llama", ref_model=str(missing), device="cpu")
    with pytest.raises(OSError, match=r"model: could not load a causal LM from 'no-such-org/no-such-model'"):
        ProcessRewardComputer.from_pretrained("no-such-org/no-such-model")


def test_reference_required_or_exclusive(tiny_dir):
    with pytest.raises(ValueError, match=r"no reference model.*ref_model=\.\.\..*reference_free=True"):
        ProcessRewardComputer.from_pretrained(tiny_dir / "llama", device="cpu")
    with pytest.raises(ValueError, match=r"either ref_model=\.\.\. or reference_free=True"):
        ProcessRewardComputer.from_pretrained(
            tiny_dir / "llama", ref_model=tiny_dir / "llama-ref", reference_free=True
        )


def test_bad_options(tiny_dir, tokenizer):
    with pytest.raises(ValueError, match="dtype must be a torch dtype"):
        ProcessRewardComputer.from_pretrained(tiny_dir / "llama", reference_free=True, dtype="float17")
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        ProcessRewardComputer(model, tokenizer, reference_free=True, beta=0)
    with pytest.raises(ValueError, match="logps_method must be one of"):
        ProcessRewardComputer(model, tokenizer, reference_free=True, logps_method="magic")
    with pytest.raises(ValueError, match="adapter_reference=True needs a PEFT model"):
        ProcessRewardComputer(model, tokenizer, adapter_reference=True)
    fresh = build_model("llama", tokenizer)  # in memory, saved nowhere: no tokenizer to find
    with pytest.raises(ValueError, match="pass tokenizer="):
        ProcessRewardComputer.from_pretrained(fresh, reference_free=True)
    with pytest.raises(TypeError, match="model must be a path"):
        ProcessRewardComputer.from_pretrained(42)
