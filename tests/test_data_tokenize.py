"""Tokenization with step spans: the boundary rule on the real byte-level BPE tokenizer, truncation, errors."""

from __future__ import annotations

import copy
import json
import logging
import random
from collections import Counter

import pytest
import torch
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer, CTRLTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from trl_implicit_prm.data import (
    DataFormatError,
    ImplicitPRMCollator,
    PromptTooLongError,
    rollouts_to_pairs,
    rollouts_to_unpaired,
    split_steps,
    tokenize_dataset,
    tokenize_example,
)

SEPARATORS = ["\n\n", "\n", " ки\n"]
ALPHABET = ["a", "b", "x", "Q", "S", "0", "7", "9", ".", ".", "\n", " ", " ", "é", "ки", "結果", "=", "+"]
_BYTES = {c: b for b, c in bytes_to_unicode().items()}


def _token_bytes(tokenizer, token_id: int) -> bytes:
    token = tokenizer.convert_ids_to_tokens(token_id)
    if token in tokenizer.all_special_tokens or token in tokenizer.get_added_vocab():
        return token.encode()
    return bytes(_BYTES[c] for c in token)


def _expected(tokenizer, prompt, completion, sep):
    """Independently render the text and the character range [start, end) of every step (separator included)."""
    chat = isinstance(prompt, list)
    prompt_text = (
        tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False) if chat else prompt
    )
    if isinstance(completion, list) and isinstance(completion[0], dict):
        full = tokenizer.apply_chat_template([*prompt, completion[0]], tokenize=False)
        steps = split_steps(completion[0]["content"], sep)
        suffix = full[len(prompt_text) + len(completion[0]["content"]) :]
    else:
        steps = completion if isinstance(completion, list) else split_steps(completion, sep)
        full, suffix = prompt_text + sep.join(steps), ""
    ranges, pos = [], len(prompt_text)
    for k, step in enumerate(steps):
        end = pos + len(step) + (len(sep) if k < len(steps) - 1 else len(suffix))
        ranges.append((pos, end))
        pos = end
    assert pos == len(full)
    return full, len(prompt_text), ranges, not chat


def _check_spans(tokenizer, prompt, completion, sep, out) -> None:
    """Every invariant of the step spans, verified against an independent tokenization of the full text."""
    full, prompt_chars, ranges, special = _expected(tokenizer, prompt, completion, sep)
    enc = tokenizer(full, add_special_tokens=special, return_offsets_mapping=True)
    ids, steps = out["input_ids"], out["step_index"]
    assert ids == enc["input_ids"]
    assert len(steps) == len(ids) == len(out["completion_mask"])
    assert out["completion_mask"] == [int(s >= 0) for s in steps]
    num_steps = len(ranges)
    assert out["num_steps"] == num_steps and out["num_truncated_steps"] == 0

    # The boundary rule, token by token, from the offsets: a token belongs to the range holding its last character.
    for (start, end), step in zip(enc["offset_mapping"], steps, strict=True):
        if end == start == 0 or end <= prompt_chars:
            assert step == -1
        else:
            assert 0 <= step < num_steps
            lo, hi = ranges[step]
            assert lo <= end - 1 < hi, (step, start, end, ranges)

    # Spans: prompt first, then exactly K contiguous, non-empty spans in order covering every completion token.
    n_prompt = out["prompt_length"]
    assert steps[:n_prompt] == [-1] * n_prompt and -1 not in steps[n_prompt:]
    assert len(set(steps[n_prompt:])) == num_steps
    assert steps[n_prompt:] == sorted(steps[n_prompt:])
    assert steps[-1] == num_steps - 1

    # Decoded spans are the step texts (separator included) up to merges at the boundaries: a boundary moves
    # earlier only by the part of one token that straddles it.
    token_bytes = [_token_bytes(tokenizer, i) for i in ids]
    full_bytes, added = (
        full.encode(),
        (b"<s>" if special else b""),
    )  # BOS added by the tokenizer, not in the text
    assert b"".join(token_bytes) == added + full_bytes
    byte_end = [len(full[:end].encode()) for _, end in ranges]
    cursor = sum(len(b) for b in token_bytes[:n_prompt]) - len(added)
    prompt_bytes = len(full[:prompt_chars].encode())
    assert (
        cursor <= prompt_bytes < cursor + len(token_bytes[n_prompt])
    )  # straddles the prompt end, or starts at it
    for k in range(num_steps):
        span = [t for t, s in enumerate(steps) if s == k]
        data = b"".join(token_bytes[t] for t in span)
        assert data == full_bytes[cursor : cursor + len(data)]
        cursor += len(data)
        assert cursor <= byte_end[k]
        if k + 1 < num_steps:
            assert cursor + len(token_bytes[span[-1] + 1]) > byte_end[k]
    assert cursor == len(full_bytes)


def _make_case(choice):
    """A random (prompt, completion, separator); `choice(options)` picks one option (hypothesis or random).

    Steps are non-empty and not whitespace-only (those are rejected, see test_data_formats). Steps often end
    with "." and sometimes start with a newline or a space, and prompts sometimes end with a space: that is
    what makes tokens straddle boundaries (".\n\n" across a "\n" separator, " Q" across the prompt end).
    """
    sep = choice([*SEPARATORS, "\n"])  # "\n" twice: with it, ".\n\n" can straddle a boundary

    def text(max_size):
        return "".join(choice(ALPHABET) for _ in range(choice(range(1, max_size + 1))))

    steps = []
    for _ in range(choice(range(1, 6))):
        step = choice(["", "\n", " "]) + text(6) + choice(["", ".", "."])
        steps.append(step if step.strip() else step + "a")
    prompt_text = choice(["", text(6)]) + choice(["", " ", " ", "\n"])
    chat = choice([False, True])
    prompt = [{"role": "user", "content": prompt_text}] if chat else prompt_text
    form = choice(["steps", "steps", "string", "assistant"] if chat else ["steps", "steps", "string"])
    if form == "string":
        return prompt, sep.join(steps), sep
    if form == "assistant":
        return prompt, [{"role": "assistant", "content": sep.join(steps)}], sep
    return prompt, steps, sep


def _run_case(tokenizer, case) -> list[str]:
    """Check one case; return what it exercised: "no_token", or "straddle_step" / "straddle_prompt" (a token
    crosses a step boundary / the prompt end), or "plain"."""
    prompt, completion, sep = case
    full, prompt_chars, ranges, special = _expected(tokenizer, prompt, completion, sep)
    offsets = tokenizer(full, add_special_tokens=special, return_offsets_mapping=True)["offset_mapping"]
    try:
        out = tokenize_example(tokenizer, prompt, completion, step_separator=sep)
    except DataFormatError as err:
        # Only possible when all characters of a step are merged into a token ending in the next step: check
        # on the offsets that no token ends in the step the message names.
        assert "got no token of its own" in str(err)
        k = int(str(err).split(", step ")[1].split(":")[0])
        lo, hi = ranges[k]
        assert not any(lo <= end - 1 < hi for _, end in offsets)
        return ["no_token"]
    _check_spans(tokenizer, prompt, completion, sep, out)
    tags = []
    if any(start < end_k < end for start, end in offsets for _, end_k in ranges[:-1]):
        tags.append("straddle_step")
    if any(start < prompt_chars < end for start, end in offsets):
        tags.append("straddle_prompt")
    return tags or ["plain"]


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_step_spans_property(tokenizer, data):
    _run_case(tokenizer, _make_case(lambda options: data.draw(st.sampled_from(options))))


def test_step_spans_on_seeded_cases_cover_the_hard_boundaries(tokenizer):
    """The same invariants on 500 seeded cases, and proof that they exercise merges across boundaries."""
    rng = random.Random(0)
    outcomes = Counter(tag for _ in range(500) for tag in _run_case(tokenizer, _make_case(rng.choice)))
    assert outcomes["straddle_step"] >= 40, outcomes  # e.g. ".\n\n" across a "\n" separator
    assert outcomes["straddle_prompt"] >= 10, outcomes  # e.g. " Q" across the prompt's trailing space
    assert outcomes["no_token"] <= 25, outcomes  # the error path stays the exception


def test_merged_tokens_at_boundaries_follow_their_last_character(tokenizer):
    prompt, steps = "Q: 2 + 3 = ", ["Step 1: add.", "Step 2: so 5."]
    out = tokenize_example(tokenizer, prompt, steps)
    tokens = tokenizer.convert_ids_to_tokens(out["input_ids"])
    pieces = [
        (tokenizer.convert_tokens_to_string([t]), s) for t, s in zip(tokens, out["step_index"], strict=True)
    ]
    assert pieces[0] == ("<s>", -1)
    # ".\n\n" is one token: it ends in step 0, the separator belongs to step 0.
    assert (".\n\n", 0) in pieces and pieces[pieces.index((".\n\n", 0)) + 1][1] == 1
    # " Step" straddles the prompt/completion boundary (the prompt's trailing space): it is a step-0 token.
    first_completion = pieces[out["prompt_length"]]
    assert first_completion == (" Step", 0)
    # Re-tokenizing the prompt alone gives one more prompt token: the drift this module avoids.
    assert len(tokenizer(prompt)["input_ids"]) == out["prompt_length"] + 1
    assert out["num_steps"] == 2


def test_string_completion_is_split_and_repeated_separators_merge(tokenizer):
    out = tokenize_example(tokenizer, "Q\n", "\n\nA.\n\n\n\nB.\n\n")
    assert out["num_steps"] == 2
    _check_spans(tokenizer, "Q\n", "\n\nA.\n\n\n\nB.\n\n", "\n\n", out)
    as_list = tokenize_example(tokenizer, "Q\n", ["\n\nA.\n\n", "B.\n\n"])
    assert as_list == out


def test_assistant_message_end_of_turn_belongs_to_last_step(tokenizer):
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"}]
    completion = [{"role": "assistant", "content": "Add 2 and 3.\n\nThe answer is 5."}]
    out = tokenize_example(tokenizer, prompt, completion)
    full = tokenizer.apply_chat_template([*prompt, *completion], tokenize=False)
    assert out["input_ids"] == tokenizer(full, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(out["input_ids"][-2:]) == "<|end|>\n"
    assert out["step_index"][-2:] == [1, 1]
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert (
        out["input_ids"][: out["prompt_length"]]
        == tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    )
    _check_spans(tokenizer, prompt, completion, "\n\n", out)


def test_chat_prompt_with_string_completion_has_no_end_of_turn(tokenizer):
    prompt = [{"role": "user", "content": "2+3?"}]
    out = tokenize_example(tokenizer, prompt, "Add.\n\n5.")
    assert tokenizer.decode(out["input_ids"]).endswith("<|assistant|>\nAdd.\n\n5.")
    assert out["input_ids"].count(tokenizer.bos_token_id) == 1
    _check_spans(tokenizer, prompt, "Add.\n\n5.", "\n\n", out)


# ----------------------------------------------------------------------------------------------- truncation


def test_truncation_keeps_prompt_and_cuts_the_completion_end(tokenizer):
    prompt, steps = (
        "Compute 12 + 30.\n",
        ["Step 1: add 12 and 30.", "Step 2: the sum is 42.", "So the answer is 42."],
    )
    full = tokenize_example(tokenizer, prompt, steps)
    starts = [full["step_index"].index(k) for k in range(3)]
    # Cut in the middle of step 1: step 1 partly kept, step 2 gone.
    max_length = starts[1] + 2
    out = tokenize_example(tokenizer, prompt, steps, max_length=max_length)
    assert len(out["input_ids"]) == max_length
    assert out["input_ids"] == full["input_ids"][:max_length]
    assert out["step_index"] == full["step_index"][:max_length]
    assert out["prompt_length"] == full["prompt_length"]
    assert out["num_steps"] == 2 and out["num_truncated_steps"] == 2
    assert out["step_index"][-2:] == [1, 1]
    # Cut exactly at a step boundary: steps 0 and 1 whole, step 2 gone.
    out = tokenize_example(tokenizer, prompt, steps, max_length=starts[2])
    assert out["num_steps"] == 2 and out["num_truncated_steps"] == 1
    # Room for everything: nothing truncated.
    out = tokenize_example(tokenizer, prompt, steps, max_length=len(full["input_ids"]))
    assert out == full


def test_prompt_too_long(tokenizer):
    prompt = "What is 1 + 2 + 3 + 4?\n"
    n_prompt = tokenize_example(tokenizer, prompt, "10.")["prompt_length"]
    with pytest.raises(PromptTooLongError, match=f"max_length={n_prompt}") as info:
        tokenize_example(tokenizer, prompt, "10.", max_length=n_prompt)
    assert info.value.prompt_length == n_prompt
    out = tokenize_example(tokenizer, prompt, "10.", max_length=n_prompt + 1)
    assert out["num_steps"] == 1 and len(out["input_ids"]) == n_prompt + 1


def test_dataset_drops_too_long_prompts_and_truncates_step_labels(tokenizer, caplog):
    ds = Dataset.from_dict(
        {
            "prompt": ["Q?\n", "A long question with many many words in it?\n", "Q2?\n"],
            "completions": [["Step one.", "Step two.", "Step three."], ["Only."], ["One."]],
            "labels": [[True, True, False], [True], [0.25]],
            "source": ["a", "b", "c"],
        }
    )
    one = tokenize_example(tokenizer, "Q?\n", ["Step one.", "Step two.", "Step three."])
    max_length = one["step_index"].index(1) + 1  # one token of step 1 kept
    with caplog.at_level(logging.WARNING, logger="trl_implicit_prm.data.tokenize"):
        out = tokenize_dataset(ds, tokenizer, step_separator="\n\n", max_length=max_length)
    assert out["source"] == ["a", "c"]
    assert f"dropped 1 of 3 rows whose prompt is longer than max_length={max_length}" in caplog.text
    assert out[0]["num_steps"] == 2 and out[0]["num_truncated_steps"] == 2
    assert out[0]["step_labels"] == [1.0, 1.0]
    assert out[0]["label"] == 0.0  # the response's outcome, from all of its steps
    assert out[1]["step_labels"] == [0.25] and out[1]["label"] == 0.25


# ---------------------------------------------------------------------------------------------- datasets


def test_dataset_path_equals_example_path(tokenizer):
    prompts = ["2+3=", "Q: é?\n", "x", "Compute 7*6. ", "結果:"]
    completions = [" 5.\n\nDone.", "ки\n\nYes.\n\nNo", "a.b", "42\n\n\n\n.", "Step 1.\n\nStep 2."]
    ds = Dataset.from_dict({"prompt": prompts, "completion": completions, "label": [1, 0, 0.5, True, False]})
    out = tokenize_dataset(ds, tokenizer, batch_size=2)
    assert out.features["input_ids"].feature.dtype == "int32"
    assert out.features["completion_mask"].feature.dtype == "int8"
    assert out["label"] == [1.0, 0.0, 0.5, 1.0, 0.0]
    for row, prompt, completion in zip(out, prompts, completions, strict=True):
        one = tokenize_example(tokenizer, prompt, completion)
        assert {k: row[k] for k in ("input_ids", "completion_mask", "step_index", "num_steps")} == {
            k: one[k] for k in ("input_ids", "completion_mask", "step_index", "num_steps")
        }


def _rows(conversational: bool):
    def prompt(text):
        return [{"role": "user", "content": text}] if conversational else text + "\n"

    def response(text):
        return [{"role": "assistant", "content": text}] if conversational else text

    rollouts = [
        {
            "prompt": prompt("2+3?"),
            "completions": [response("Add.\n\nIt is 5."), response("Guess.\n\nIt is 6.")],
            "correctness": [True, False],
        },
        {
            "prompt": prompt("1+1?"),
            "completions": [response("It is 2."), response("So 2.\n\nDone.")],
            "correctness": [1.0, 0.75],
        },
        {
            "prompt": prompt("9-4?"),
            "completions": [response("It is 5."), response("It is 3."), response("4.")],
            "correctness": [0.9, 0.0, False],
        },
    ]
    stepwise = [
        {"prompt": prompt("2+3?"), "completions": ["Add 2 and 3.", "It is 5."], "labels": [True, True]},
        {
            "prompt": prompt("9-4?"),
            "completions": ["Subtract.", "It is 3.", "Done."],
            "labels": [True, False, False],
        },
    ]
    return rollouts, stepwise


def _decoded_steps(tokenizer, ids, steps, k):
    return tokenizer.decode([t for t, s in zip(ids, steps, strict=True) if s == k])


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_round_trip_all_formats(tiny_dir, arch, conversational):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / arch)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / arch).eval()
    rollouts, stepwise = _rows(conversational)
    collate = ImplicitPRMCollator(pad_token_id=tokenizer.pad_token_id)
    end = "<|end|>\n" if conversational else ""

    pairs = rollouts_to_pairs(rollouts)
    assert len(pairs) == 1 + 2  # 2+3: one pair, 1+1: none (all correct), 9-4: 1 x 2
    paired = tokenize_dataset(pairs, tokenizer)
    assert _decoded_steps(tokenizer, paired[0]["chosen_input_ids"], paired[0]["chosen_step_index"], 1) == (
        "It is 5." + end
    )
    assert _decoded_steps(
        tokenizer, paired[0]["rejected_input_ids"], paired[0]["rejected_step_index"], 0
    ) == ("Guess.\n\n")
    batch = collate(list(paired))
    assert batch["input_ids"].shape[0] == 2 * len(paired)
    assert torch.equal(batch["num_steps"], torch.tensor([2, 1, 1, 2, 1, 1]))

    unpaired = rollouts_to_unpaired(rollouts)
    tok_unpaired = tokenize_dataset(unpaired, tokenizer)
    assert tok_unpaired["label"] == [1.0, 0.0, 1.0, 0.75, 0.9, 0.0, 0.0]
    for row, source in zip(tok_unpaired, unpaired, strict=True):
        text = source["completion"][0]["content"] if conversational else source["completion"]
        completion_ids = [t for t, m in zip(row["input_ids"], row["completion_mask"], strict=True) if m]
        assert tokenizer.decode(completion_ids) == text + end
        for k, step in enumerate(split_steps(text)):
            suffix = "\n\n" if k < row["num_steps"] - 1 else end
            assert _decoded_steps(tokenizer, row["input_ids"], row["step_index"], k) == step + suffix

    tok_stepwise = tokenize_dataset(Dataset.from_list(stepwise), tokenizer)
    assert tok_stepwise["step_labels"] == [[1.0, 1.0], [1.0, 0.0, 0.0]]
    assert _decoded_steps(tokenizer, tok_stepwise[1]["input_ids"], tok_stepwise[1]["step_index"], 1) == (
        "It is 3.\n\n"
    )
    batch = collate(list(tok_stepwise))
    assert batch["step_label_mask"].tolist() == [[True, True, False], [True, True, True]]

    # The batches are consumable by the architecture's model, and the prompt renders as its template says.
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape[:2] == batch["input_ids"].shape
    prompt_ids = [
        t
        for t, m in zip(tok_stepwise[0]["input_ids"], tok_stepwise[0]["completion_mask"], strict=True)
        if not m
    ]
    expected_prompt = (
        tokenizer.apply_chat_template(stepwise[0]["prompt"], add_generation_prompt=True, tokenize=False)
        if conversational
        else "<s>" + stepwise[0]["prompt"]
    )
    assert tokenizer.decode(prompt_ids) == expected_prompt


# ------------------------------------------------------------------------------------------------- errors


def test_slow_tokenizer_is_refused(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"<unk>": 0, "a": 1, "b": 2}))
    (tmp_path / "merges.txt").write_text("#version\n")
    slow = CTRLTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert not slow.is_fast
    with pytest.raises(TypeError, match=r"use_fast=True.*PreTrainedTokenizerFast"):
        tokenize_example(slow, "a", "b")
    with pytest.raises(TypeError, match="use_fast=True"):
        tokenize_dataset(Dataset.from_dict({"prompt": ["a"], "completion": ["b"], "label": [1]}), slow)


def test_chat_prompt_without_template(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")
    tokenizer.chat_template = None
    with pytest.raises(DataFormatError, match=r"column 'prompt': .*set `tokenizer.chat_template`"):
        tokenize_example(tokenizer, [{"role": "user", "content": "hi"}], "hello")
    ds = Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": "hi"}]], "completion": ["x"], "label": [1]}
    )
    with pytest.raises(DataFormatError, match=r"column 'prompt' row 0: .*tokenizer.chat_template"):
        tokenize_dataset(ds, tokenizer)


def test_template_that_does_not_extend_the_prompt(tokenizer):
    other = copy.deepcopy(tokenizer)
    # Marks the last message: the prompt with a generation prompt is not a prefix of the full conversation.
    other.chat_template = (
        "{% for m in messages %}{% if loop.last %}[last]{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(DataFormatError, match=r"column 'completion': the chat template .* prefix"):
        tokenize_example(other, [{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "yo"}])


def test_assistant_message_needs_chat_prompt(tokenizer):
    with pytest.raises(
        DataFormatError, match=r"column 'completion': an assistant-message completion needs a chat prompt"
    ):
        tokenize_example(tokenizer, "hi", [{"role": "assistant", "content": "yo"}])


def test_step_without_a_token_of_its_own(tokenizer):
    # ".\n" + "\nb": the tokenizer has ".\n\n" as one token, which ends in step 2 and swallows step 1.
    with pytest.raises(DataFormatError, match=r"column 'completion', step 1: '.\\n' got no token"):
        tokenize_example(tokenizer, "x", ["a", ".", "\nb"], step_separator="\n")


def test_rollouts_are_not_tokenized_directly(tokenizer):
    ds = Dataset.from_dict({"prompt": ["q"], "completions": [["a", "b"]], "correctness": [[True, False]]})
    with pytest.raises(DataFormatError, match=r"rollouts_to_pairs.*rollouts_to_unpaired"):
        tokenize_dataset(ds, tokenizer)


def test_bad_rows_are_reported_with_their_index(tokenizer):
    ds = Dataset.from_dict(
        {"prompt": ["a", "b", "c"], "completion": ["x", "y", "z"], "label": [1.0, 0.0, 1.5]}
    )
    with pytest.raises(
        DataFormatError, match=r"column 'label' row 2: expected bool, 0/1 or a float in \[0, 1\]"
    ):
        tokenize_dataset(ds, tokenizer, batch_size=2)
    with pytest.raises(DataFormatError, match=r"column 'completion', step 1"):
        tokenize_example(tokenizer, "a", ["x", "  "])
    with pytest.raises(ValueError, match="max_length"):
        tokenize_example(tokenizer, "a", "b", max_length=0)


@pytest.fixture
def split_counter(monkeypatch):
    """Count the calls of the one step splitter, wherever a package module refers to it."""
    import sys

    from trl_implicit_prm.data import formats

    calls = []
    real = formats.split_steps

    def counting(text, step_separator="\n\n"):
        calls.append(text)
        return real(text, step_separator)

    for name, module in list(sys.modules.items()):
        if name.startswith("trl_implicit_prm") and getattr(module, "split_steps", None) is real:
            monkeypatch.setattr(module, "split_steps", counting)
    return calls


def test_each_completion_is_split_once_on_the_way_to_tokens(tokenizer, split_counter):
    """Validation splits a completion into steps and tokenization renders from that split (the old code split
    each completion two to four times: in validation, rendering and, for scoring, again for its step texts)."""
    from trl_implicit_prm.inference.encoding import encode_response

    texts = [f"Add {i}.\n\nGet {i + 1}." for i in range(3)]
    ds = Dataset.from_dict({"prompt": ["Q: "] * 3, "chosen": texts, "rejected": texts[::-1]})
    tokenize_dataset(ds, tokenizer)
    assert sorted(split_counter) == sorted(texts * 2)  # each of the 6 completions once
    split_counter.clear()
    out = encode_response(
        tokenizer, "Q: ", texts[0], index=0, separator="\n\n", max_length=None, truncation=False
    )
    assert split_counter == [texts[0]] and out.steps == ["Add 0.", "Get 1."]
