"""ProcessRewardComputer: parity with a naive per-response computation, invariants, batching, adapters, cache."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from trl_implicit_prm.data import DataFormatError, tokenize_example
from trl_implicit_prm.inference import ProcessRewardComputer, ReferenceCache, StepRewards
from trl_implicit_prm.inference.batching import plan_batches
from trl_implicit_prm.modeling import write_metadata

PROMPTS = {
    "plain": ["What is 12 + 7 * 3?\n", "Compute 5 * 6 - 4.\n", "Is 91 prime?\n", "Add 1 and 2.\n"],
    "chat": [
        [
            {"role": "system", "content": "Answer step by step."},
            {"role": "user", "content": "What is 12 + 7 * 3?"},
        ],
        [{"role": "user", "content": "Compute 5 * 6 - 4."}],
        [{"role": "user", "content": "Is 91 prime?"}],
        [{"role": "user", "content": "Add 1 and 2."}],
    ],
}
RESPONSES = [
    "Step 1: 7 * 3 = 21.\n\nStep 2: 12 + 21 = 33.\n\nThe answer is \\boxed{33}.",
    ["5 * 6 = 30.", "30 - 4 = 26.", "So the answer is 26."],
    "91 = 7 * 13.\n\nSo 91 is not prime, the answer is no. We check: 7 * 13 = 91 indeed, so it is composite.",
    "1 + 2 = 3.",
]
BETA = 0.3


def naive_scores(policy, ref_fn, tokenizer, prompt, response, beta, separator="\n\n"):
    """One response, no padding, full float64 log_softmax over the vocabulary, spans from tokenize_example.

    `ref_fn(ids)` returns reference logits, or None for reference-free.
    """
    enc = tokenize_example(tokenizer, prompt, response, step_separator=separator)
    ids = torch.tensor([enc["input_ids"]])

    def logps(logits):
        lp = torch.log_softmax(logits[0, :-1].double(), dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        return [0.0, *lp.tolist()]

    with torch.no_grad():
        pol = logps(policy(input_ids=ids).logits)
        ref_logits = ref_fn(ids)
        ref = logps(ref_logits) if ref_logits is not None else [0.0] * len(pol)
    tokens, steps = [], [0.0] * enc["num_steps"]
    for t, k in enumerate(enc["step_index"]):
        if k >= 0:
            r = beta * (pol[t] - ref[t])
            tokens.append(r)
            steps[k] += r
    return steps, tokens


def assert_matches(result: StepRewards, expected_steps, expected_tokens, tol=1e-5):
    assert len(result.step_rewards) == len(expected_steps)
    assert result.step_rewards == pytest.approx(expected_steps, abs=tol)
    assert result.token_rewards == pytest.approx(expected_tokens, abs=tol)
    assert result.outcome_reward == pytest.approx(sum(expected_steps), abs=tol)


def assert_invariants(result: StepRewards):
    assert len(result.step_rewards) == len(result.steps) == len(result.q_values)
    assert sum(result.step_rewards) == pytest.approx(result.outcome_reward, abs=1e-5)
    running = 0.0
    for r, q in zip(result.step_rewards, result.q_values, strict=True):
        running += r
        assert q == pytest.approx(running, abs=1e-5)
    assert result.q_values[-1] == pytest.approx(result.outcome_reward, abs=1e-5)
    assert len(result.tokens) == len(result.token_rewards) == len(result.token_steps)
    assert sorted(set(result.token_steps)) == list(range(len(result.steps)))  # every step owns a token


def sharpen(model, factor=25.0):
    """Random tiny models are near-uniform; scale the output head so log-ratios are far from zero."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(factor)
    return model


@pytest.fixture(scope="module")
def sharp_dir(tiny_dir, tokenizer, tmp_path_factory):
    """Copies of the fixture models with sharpened heads, so that score differences are large."""
    root = tmp_path_factory.mktemp("sharp")
    for arch in ("llama", "qwen2", "gpt2"):
        for name in (arch, f"{arch}-ref"):
            sharpen(AutoModelForCausalLM.from_pretrained(tiny_dir / name)).save_pretrained(root / name)
            tokenizer.save_pretrained(root / name)
    return root


@pytest.mark.parametrize("prompt_kind", ["plain", "chat"])
@pytest.mark.parametrize("with_reference", [True, False], ids=["ref", "ref-free"])
def test_matches_naive_computation(sharp_dir, arch, prompt_kind, with_reference):
    kwargs = {"ref_model": sharp_dir / f"{arch}-ref"} if with_reference else {"reference_free": True}
    prc = ProcessRewardComputer.from_pretrained(sharp_dir / arch, beta=BETA, device="cpu", **kwargs)
    prompts = PROMPTS[prompt_kind]
    results = prc.score(prompts, RESPONSES)
    policy = AutoModelForCausalLM.from_pretrained(sharp_dir / arch).eval()
    ref = AutoModelForCausalLM.from_pretrained(sharp_dir / f"{arch}-ref").eval() if with_reference else None
    spread = []
    for prompt, response, result in zip(prompts, RESPONSES, results, strict=True):
        steps, tokens = naive_scores(
            policy,
            (lambda ids: ref(input_ids=ids).logits) if ref else (lambda ids: None),
            prc.tokenizer,
            prompt,
            response,
            BETA,
        )
        assert_matches(result, steps, tokens)
        assert_invariants(result)
        spread.extend(steps)
    assert max(spread) - min(spread) > 0.5  # the comparison is not between near-zero numbers
    expected_steps = [3, 3, 2, 1]
    assert [len(r.step_rewards) for r in results] == expected_steps
    assert results[1].steps == RESPONSES[1]
    assert "".join(results[0].tokens).startswith("Step 1")


def make_adapter(base_dir, out_dir, arch: str, seed: int = 0):
    """A LoRA adapter on the fixture model with perturbed B weights (so it is not a no-op), saved to out_dir."""
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)  # LoRA A matrices are initialised randomly
    targets = ["c_attn", "c_fc"] if arch == "gpt2" else ["q_proj", "v_proj", "down_proj"]
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, fan_in_fan_out=arch == "gpt2")
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    peft_model.save_pretrained(out_dir)
    return peft_model


def test_adapter_dir_equals_merged_checkpoint_with_base_reference(sharp_dir, tokenizer, arch, tmp_path):
    base_dir = sharp_dir / arch
    peft_model = make_adapter(base_dir, tmp_path / "adapter", arch)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    tokenizer.save_pretrained(tmp_path / "merged")

    cache = ReferenceCache()
    from_adapter = ProcessRewardComputer.from_pretrained(
        tmp_path / "adapter", beta=BETA, device="cpu", reference_cache=cache
    )
    assert from_adapter.adapter_reference and from_adapter.ref_model is None  # one model in memory
    from_merged = ProcessRewardComputer.from_pretrained(
        tmp_path / "merged", ref_model=base_dir, beta=BETA, device="cpu", reference_cache=cache
    )
    prompts = PROMPTS["plain"]
    a = from_adapter.score(prompts, RESPONSES)
    # The merged computer's reference is the same base checkpoint: its log-probs come from the shared cache.
    calls = []
    from_merged.ref_model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
    b = from_merged.score(prompts, RESPONSES)
    assert calls == [] and cache.hits == len(prompts)
    uncached = ProcessRewardComputer.from_pretrained(
        tmp_path / "merged", ref_model=base_dir, beta=BETA, device="cpu", reference_cache=False
    ).score(prompts, RESPONSES)

    merged_model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    total_change = 0.0
    for prompt, response, ra, rb, rc in zip(prompts, RESPONSES, a, b, uncached, strict=True):
        assert ra.step_rewards == pytest.approx(rb.step_rewards, abs=1e-5)
        assert ra.step_rewards == pytest.approx(rc.step_rewards, abs=1e-5)
        steps, tokens = naive_scores(
            merged_model,
            lambda ids: base(input_ids=ids).logits,
            from_adapter.tokenizer,
            prompt,
            response,
            BETA,
        )
        assert_matches(ra, steps, tokens)
        total_change += sum(abs(x) for x in steps)
    assert total_change > 0.1  # the adapter changes the model: rewards are not all zero


@pytest.mark.parametrize("method", ["compact", "fused"])
def test_loaded_peft_model_uses_disabled_adapters(sharp_dir, tokenizer, tmp_path, method):
    peft_model = make_adapter(sharp_dir / "llama", tmp_path / "adapter", "llama", seed=3).eval()
    prc = ProcessRewardComputer.from_pretrained(
        peft_model, tokenizer=tokenizer, beta=BETA, device="cpu", logps_method=method
    )
    assert prc.adapter_reference
    result = prc.score_one(PROMPTS["plain"][0], RESPONSES[0])
    base = AutoModelForCausalLM.from_pretrained(sharp_dir / "llama").eval()
    merged = peft_model.merge_and_unload().eval()
    steps, tokens = naive_scores(
        merged, lambda ids: base(input_ids=ids).logits, tokenizer, PROMPTS["plain"][0], RESPONSES[0], BETA
    )
    assert_matches(result, steps, tokens)
    assert max(abs(x) for x in steps) > 0.05


@pytest.mark.parametrize("arch_name", ["llama", "gpt2"])
def test_padding_invariance(sharp_dir, arch_name):
    prc = ProcessRewardComputer.from_pretrained(
        sharp_dir / arch_name,
        ref_model=sharp_dir / f"{arch_name}-ref",
        beta=BETA,
        device="cpu",
        reference_cache=False,
        max_batch_tokens=10**6,
    )
    target_prompt, target = "Q: 3 + 4?\n", "3 + 4 = 7.\n\nThe answer is 7."
    alone = prc.score_one(target_prompt, target)
    long_response = "\n\n".join(f"Step {k}: we add {k} and {k + 1} to get {2 * k + 1}." for k in range(1, 12))
    prompts = ["Long question with many words in it, " * 6 + "?\n", target_prompt, "Q\n", "Hi\n"]
    responses = [long_response, target, "1.", "2 + 2 = 4.\n\nYes."]
    batched = prc.score(prompts, responses)
    assert batched[1].step_rewards == pytest.approx(alone.step_rewards, abs=1e-5)
    assert batched[1].token_rewards == pytest.approx(alone.token_rewards, abs=1e-5)
    # And a small batch size (one response per batch) gives the same numbers for all.
    single = prc.score(prompts, responses, batch_size=1)
    for x, y in zip(batched, single, strict=True):
        assert x.step_rewards == pytest.approx(y.step_rewards, abs=1e-5)
    assert max(abs(r) for r in alone.step_rewards) > 0.05


def test_reference_cache_runs_reference_once(sharp_dir):
    ref_dir = sharp_dir / "llama-ref"
    cache = ReferenceCache()
    first = ProcessRewardComputer.from_pretrained(
        sharp_dir / "llama", ref_model=ref_dir, beta=BETA, device="cpu", reference_cache=cache
    )
    # A different checkpoint (another architecture, same tokenizer) sharing the reference and the cache.
    second = ProcessRewardComputer.from_pretrained(
        sharp_dir / "gpt2", ref_model=ref_dir, beta=BETA, device="cpu", reference_cache=cache
    )
    calls = []
    for prc in (first, second):
        prc.ref_model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
    prompts, responses = (
        PROMPTS["plain"] * 2,
        RESPONSES + [r + "\n\nDone." if isinstance(r, str) else [*r, "Done."] for r in RESPONSES],
    )
    a1 = first.score(prompts, responses)
    assert len(calls) == 1  # one batch, one reference forward
    b1 = second.score(prompts, responses)
    assert len(calls) == 1  # every reference log-prob came from the cache
    assert cache.misses == len(prompts) and cache.hits == len(prompts) and len(cache) == len(prompts)
    b2 = ProcessRewardComputer.from_pretrained(
        sharp_dir / "gpt2", ref_model=ref_dir, beta=BETA, device="cpu", reference_cache=False
    ).score(prompts, responses)
    for x, y in zip(b1, b2, strict=True):
        assert x.step_rewards == pytest.approx(y.step_rewards, abs=1e-6)
        assert x.token_rewards == pytest.approx(y.token_rewards, abs=1e-6)
    # Re-scoring with the first computer: identical results, still no reference forward.
    again = first.score(prompts, responses)
    assert len(calls) == 1
    assert [r.step_rewards for r in again] == [r.step_rewards for r in a1]
    # Different policies, same reference: the rewards differ.
    assert a1[0].step_rewards != pytest.approx(b1[0].step_rewards, abs=1e-3)


@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=80),
    budget=st.integers(1, 4000),
    rows=st.one_of(st.none(), st.integers(1, 16)),
)
def test_plan_batches_covers_every_row_within_budget(lengths, budget, rows):
    batches = plan_batches(lengths, budget, rows)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * longest <= budget  # only a lone over-long row may exceed the budget
        assert rows is None or len(b) <= rows
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
        # Padding bound: past the first min_rows rows, no row is shorter than 80% of the longest.
        assert all(lengths[i] >= 0.8 * longest for i in b[8:])


def test_reference_cache_is_bounded_lru():
    import numpy as np

    cache = ReferenceCache(max_bytes=40, max_entries=3)  # 10 float32 values
    keys = [cache.key("ref", [1, 2, i], 1) for i in range(5)]
    assert (
        len(set(keys)) == 5
        and cache.key("other", [1, 2, 0], 1) != keys[0]
        and cache.key("ref", [1, 2, 0], 2) != keys[0]
    )
    for k in keys[:3]:
        cache.put(k, np.zeros(2, dtype=np.float32))
    assert len(cache) == 3 and cache.nbytes == 24
    cache.get(keys[0])  # keys[0] becomes most recent
    cache.put(keys[3], np.zeros(2, dtype=np.float32))  # entry bound: evicts keys[1], the least recently used
    assert keys[1] not in cache and keys[0] in cache and len(cache) == 3
    cache.put(keys[4], np.zeros(6, dtype=np.float32))  # byte bound: 24 + 24 > 40 bytes
    assert (
        cache.nbytes == 40 and keys[2] not in cache and all(k in cache for k in (keys[0], keys[3], keys[4]))
    )
    cache.put(cache.key("ref", [9], 0), np.zeros(11, dtype=np.float32))  # larger than the cache: not stored
    assert len(cache) == 3 and cache.nbytes == 40
    with pytest.raises(ValueError, match="max_bytes"):
        ReferenceCache(max_bytes=0)


def test_in_memory_models_and_shared_reference_object(sharp_dir, tokenizer):
    policy = AutoModelForCausalLM.from_pretrained(sharp_dir / "gpt2")
    ref = AutoModelForCausalLM.from_pretrained(sharp_dir / "gpt2-ref")
    cache = ReferenceCache()
    a = ProcessRewardComputer.from_pretrained(
        policy, ref_model=ref, tokenizer=tokenizer, beta=BETA, reference_cache=cache, device="cpu"
    )
    b = ProcessRewardComputer(policy, tokenizer, ref_model=ref, beta=BETA, reference_cache=cache)
    assert a.reference_id == b.reference_id and a.reference_id.startswith("object:")
    other_ref = AutoModelForCausalLM.from_pretrained(sharp_dir / "gpt2-ref")
    assert ProcessRewardComputer(policy, tokenizer, ref_model=other_ref).reference_id != a.reference_id
    ra = a.score_one(PROMPTS["chat"][1], RESPONSES[1])
    rb = b.score_one(PROMPTS["chat"][1], RESPONSES[1])
    assert cache.hits == 1 and ra.step_rewards == rb.step_rewards


@pytest.mark.parametrize("method", ["fused", "logits", "compact"])
def test_logps_methods_agree(sharp_dir, method):
    prc = ProcessRewardComputer.from_pretrained(
        sharp_dir / "qwen2",
        ref_model=sharp_dir / "qwen2-ref",
        beta=BETA,
        device="cpu",
        logps_method=method,
        reference_cache=False,
    )
    results = prc.score(PROMPTS["plain"], RESPONSES)
    policy = AutoModelForCausalLM.from_pretrained(sharp_dir / "qwen2").eval()
    ref = AutoModelForCausalLM.from_pretrained(sharp_dir / "qwen2-ref").eval()
    for prompt, response, result in zip(PROMPTS["plain"], RESPONSES, results, strict=True):
        steps, tokens = naive_scores(
            policy, lambda ids: ref(input_ids=ids).logits, prc.tokenizer, prompt, response, BETA
        )
        assert_matches(result, steps, tokens)


def test_metadata_defaults_and_dtype(sharp_dir, tokenizer, tmp_path):
    ckpt = tmp_path / "ckpt"
    AutoModelForCausalLM.from_pretrained(sharp_dir / "llama").save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    write_metadata(
        ckpt,
        beta=0.2,
        reference_free=False,
        reference_model=str(sharp_dir / "llama-ref"),
        step_separator="\n",
    )
    prc = ProcessRewardComputer.from_pretrained(ckpt, device="cpu")
    assert prc.beta == 0.2 and prc.step_separator == "\n" and prc.ref_model is not None
    result = prc.score_one("Q\n", "a = 1.\nb = 2.\nc = 3.")
    assert len(result.step_rewards) == 3
    explicit = ProcessRewardComputer.from_pretrained(
        ckpt, ref_model=sharp_dir / "llama-ref", beta=0.4, step_separator="\n", device="cpu"
    )
    assert explicit.score_one("Q\n", "a = 1.\nb = 2.\nc = 3.").step_rewards == pytest.approx(
        [2 * r for r in result.step_rewards], abs=1e-5
    )  # β only rescales
    write_metadata(ckpt, beta=0.1, reference_free=True, reference_model=None, step_separator="\n\n")
    free = ProcessRewardComputer.from_pretrained(ckpt, device="cpu", dtype="bfloat16")
    assert free.reference_free and next(free.model.parameters()).dtype == torch.bfloat16
    r16 = free.score_one("Q\n", "a = 1.\n\nb = 2.")
    assert all(math.isfinite(x) for x in r16.step_rewards) and len(r16.step_rewards) == 2
    r32 = ProcessRewardComputer.from_pretrained(ckpt, device="cpu", dtype=torch.float32).score_one(
        "Q\n", "a = 1.\n\nb = 2."
    )
    assert r16.step_rewards == pytest.approx(r32.step_rewards, rel=0.05, abs=0.05)


def test_step_rewards_aggregate_to_dict_and_html():
    r = StepRewards(
        steps=["a", "<b>"],
        step_rewards=[0.5, -0.25],
        q_values=[0.5, 0.25],
        token_rewards=[0.5, -0.25],
        tokens=["a", "<b>"],
        token_steps=[0, 1],
        outcome_reward=0.25,
    )
    assert r.aggregates() == pytest.approx(
        {"min": -0.25, "sum": 0.25, "mean": 0.125, "last": 0.25, "max": 0.5}
    )
    with pytest.raises(ValueError, match="aggregation"):
        r.aggregate("median")
    data = json.loads(json.dumps(r.to_dict()))
    assert StepRewards.from_dict(data) == r
    page = r._repr_html_()
    assert "&lt;b&gt;" in page and "<html" not in page and "first error?" in page


def test_progress_bar(sharp_dir, capsys):
    prc = ProcessRewardComputer.from_pretrained(sharp_dir / "llama", reference_free=True, device="cpu")
    prc.score(["Q\n"] * 3, ["a.\n\nb."] * 3, show_progress=True)
    assert "Scoring" in capsys.readouterr().err
    prc.score(["Q\n"] * 3, ["a.\n\nb."] * 3)
    assert "Scoring" not in capsys.readouterr().err  # auto: no bar for a handful of responses


_PIECES = [*"ab 12+=.\n:é結ки", "Step ", "\n\n", " = ", ".\n"]
_STEP_TEXT = (
    st.lists(st.sampled_from(_PIECES), min_size=1, max_size=12).map("".join).filter(lambda s: s.strip())
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP_TEXT, min_size=1, max_size=6), chat=st.booleans())
def test_invariants_hold_for_arbitrary_steps(invariant_prc, steps, chat):
    prompt = [{"role": "user", "content": "Go."}] if chat else "Go.\n"
    try:
        result = invariant_prc.score_one(prompt, steps)
    except (
        DataFormatError
    ) as err:  # a step swallowed whole by its neighbour's token: refused, never mis-scored
        assert "got no token of its own" in str(err)
        return
    assert result.steps == steps
    assert_invariants(result)
    # The decoded tokens spell the completion (a first token straddling the prompt boundary adds prompt text).
    text, completion = "".join(result.tokens), "\n\n".join(steps)
    assert text.endswith(completion)
    assert (prompt if isinstance(prompt, str) else "<|assistant|>\n").endswith(
        text[: len(text) - len(completion)]
    )


@pytest.fixture(scope="module")
def invariant_prc(sharp_dir):
    return ProcessRewardComputer.from_pretrained(
        sharp_dir / "llama", ref_model=sharp_dir / "llama-ref", device="cpu"
    )
