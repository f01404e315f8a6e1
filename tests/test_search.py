"""PRM-guided search: incremental scoring equals full scoring, and the strategies keep what their rules say."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from trl_implicit_prm.data.rendering import PromptFormat
from trl_implicit_prm.inference import ProcessRewardComputer
from trl_implicit_prm.search import (
    GeneratedStep,
    IncrementalScorer,
    SearchAndLearnPRM,
    SearchConfig,
    TransformersStepGenerator,
    run_search,
)

TOL = 1e-5
PROMPTS = {
    "string": ("What is 2 + 3?\n", None),
    "chat messages": ([{"role": "user", "content": "What is 2 + 3?"}], None),
    "chat format": ("What is 2 + 3?", PromptFormat("chat")),
}


def _assert_equal_to_full(prm, prefix):
    full = prm.score_one(
        prefix.prompt, list(prefix.steps), complete=prefix.complete, step_open=prefix.step_open
    )
    assert len(prefix.step_rewards) == len(full.step_rewards) == len(prefix.steps)
    assert max(abs(a - b) for a, b in zip(prefix.step_rewards, full.step_rewards, strict=True)) < TOL
    assert abs(prefix.outcome_reward - full.outcome_reward) < TOL


@pytest.mark.parametrize("kind", list(PROMPTS))
def test_incremental_equals_full_scoring_with_forks_merges_and_pruning(model_and_ref, tokenizer, kind):
    policy, ref = model_and_ref
    prompt, fmt = PROMPTS[kind]
    prm = ProcessRewardComputer(
        policy, tokenizer, ref_model=ref, beta=0.5, prompt_format=fmt, append_eos=True
    )
    scorer = IncrementalScorer(prm)
    root = scorer.start([prompt])[0]
    # A fork: three continuations of one root, scored in one batch (different lengths, shared root past); the
    # first two are steps cut mid-way by a token budget (open: no separator after them).
    a, b, c = scorer.extend(
        [root] * 3, ["2 + 3 = 5.", "Add them", "Two plus three is five, so 5."], step_open=[True, True, False]
    )
    assert a.policy.segment.end == len(a.input_ids) - 1 and a.policy.segment.parent is root.policy.segment
    last = tokenizer.convert_ids_to_tokens
    assert last([int(a.input_ids[-1])]) == ["."] and last([int(c.input_ids[-1])]) == [".ĊĊ"]
    # The step closes: "." and the separator merge into ".\n\n" (BPE), so the old last token is read again.
    a1 = scorer.continue_step([a], [""])[0]
    assert last([int(a1.input_ids[-1])]) == [".ĊĊ"] and a1.new_tokens > len(a1.input_ids) - len(a.input_ids)
    a2 = scorer.extend([a1], ["So the answer is 5."])[0]  # after a closed step: only the new tokens
    assert a2.new_tokens == len(a2.input_ids) - len(a1.input_ids)
    b2 = scorer.continue_step([b], [" up: 5."])[0]  # an open step grown and closed
    a3 = scorer.extend([a2], ["Done."], complete=True)[0]  # ends with EOS, as append_eos says
    assert a3.input_ids[-1] == tokenizer.eos_token_id and a2.input_ids[-1] != tokenizer.eos_token_id
    c.release()  # pruning frees the caches
    assert c.cache_bytes == 0 and a.cache_bytes > 0
    with pytest.raises(ValueError, match="released"):
        scorer.extend([c], ["x."])
    with pytest.raises(ValueError, match="step_open has 1 flags for 2 prefixes"):
        scorer.extend([a2, b2], ["x.", "y."], step_open=[True])
    for prefix in (a, b, a1, a2, b2, a3):
        _assert_equal_to_full(prm, prefix)
    full = prm.score_one(prompt, list(a3.steps))
    inc = scorer.step_rewards(a3)
    assert inc.tokens == full.tokens and inc.token_steps == full.token_steps
    assert max(abs(x - y) for x, y in zip(inc.token_rewards, full.token_rewards, strict=True)) < TOL


def test_a_prefix_scores_each_step_as_the_whole_response_does(tiny_dir):
    """`complete=False`: a prefix's last step is followed by the separator, as in the whole response and in
    training (the separator after step k belongs to step k), so every step of the prefix gets its reward inside
    the whole response. `step_open=True` (a step cut mid-way) scores the step's own tokens, nothing appended."""
    prm = ProcessRewardComputer.from_pretrained(
        tiny_dir / "llama", ref_model=tiny_dir / "llama-ref", beta=0.5, device="cpu", append_eos=True
    )
    prompt, steps = "Q: 2 + 3?\n", ["2 + 3 = 5.", "So the answer is 5.", "Done."]
    whole = prm.score_one(prompt, steps)
    for k in (1, 2):
        prefix = prm.score_one(prompt, steps[:k], complete=False)
        assert prefix.step_rewards == pytest.approx(whole.step_rewards[:k], abs=TOL)
        assert "".join(prefix.tokens).endswith(steps[k - 1] + "\n\n")
        cut = prm.score_one(prompt, steps[:k], complete=False, step_open=True)
        assert "".join(cut.tokens).endswith(steps[k - 1])
        assert cut.step_rewards[:-1] == pytest.approx(whole.step_rewards[: k - 1], abs=TOL)
        assert abs(cut.step_rewards[-1] - whole.step_rewards[k - 1]) > TOL  # the separator's log-ratio
    # a prefix that already ends with the separator (search-and-learn keeps the stop string) gets no second one
    kept = prm.score_one(prompt, "\n\n".join(steps[:2]) + "\n\n", complete=False)
    assert kept.tokens == prm.score_one(prompt, steps[:2], complete=False).tokens
    with pytest.raises(ValueError, match="a finished response has no open step"):
        prm.score_one(prompt, steps, complete=True, step_open=True)


def test_pruned_prefixes_free_their_caches_at_once(tiny_dir):
    prm = ProcessRewardComputer.from_pretrained(
        tiny_dir / "llama", ref_model=tiny_dir / "llama-ref", beta=0.5, device="cpu"
    )
    cfg = prm.model.config
    # Keys and values of one token, every layer, float32, policy and reference.
    per_token = (
        2
        * cfg.num_hidden_layers
        * 2
        * cfg.num_key_value_heads
        * (cfg.hidden_size // cfg.num_attention_heads)
        * 4
    )
    scorer = IncrementalScorer(prm)
    root = scorer.start(["Find x.\n"])[0]
    assert scorer.cache_bytes == per_token * (
        len(root.input_ids) - 1
    )  # the prompt's past: all tokens but the last
    a, b, c = scorer.extend([root] * 3, ["A is one", "B is two two", "C is three three three"])
    n = {"root": len(root.input_ids), "a": len(a.input_ids), "b": len(b.input_ids)}  # kept for after `del`
    for child in (a, b, c):  # no BPE merge across the root's end: a child re-reads the root's last token only
        assert child.input_ids[: n["root"]].tolist() == root.input_ids.tolist()
        assert child.new_tokens == len(child.input_ids) - n["root"]
    # By hand: the root's past once (shared), and each child's segment (the root's last token + its own but last).
    shared = n["root"] - 1
    assert scorer.cache_bytes == per_token * (shared + sum(x.new_tokens for x in (a, b, c)))
    c.release()  # pruned: its segment is freed at once, the shared root stays
    assert scorer.cache_bytes == per_token * (shared + a.new_tokens + b.new_tokens)
    a1, a2, b1 = scorer.extend([a, a, b], ["So x is 1.", "Or x is 11.", "So x is 2."])
    a2.release()
    del a, b, root  # parents dropped by the search: their segments live on in their children's chains
    parents = n["a"] - n["root"] + n["b"] - n["root"]
    assert scorer.cache_bytes == per_token * (shared + parents + a1.new_tokens + b1.new_tokens)
    _assert_equal_to_full(prm, scorer.extend([a1], ["Done."])[0])
    assert scorer.peak_cache_bytes > scorer.cache_bytes
    del a1, b1
    assert scorer.cache_bytes == 0  # nothing alive, nothing held


def _toy_generator(options, finish_at=2, tokens=3):
    """Deterministic: the k-th request for a context gets `options[len(steps)][k]` (with the parent's steps
    substituted), and the response ends after `finish_at` steps."""
    seen = Counter()

    def generate(requests):
        out = []
        for r in requests:
            key = (r.steps, r.partial)
            k = seen[key]
            seen[key] += 1
            text = options[len(r.steps)][k].format(parent=r.steps[-1][:1] if r.steps else "")
            out.append(GeneratedStep(text, True, len(r.steps) + 1 >= finish_at, tokens))
        return out

    return generate


def test_beam_search_keeps_the_beams_hand_computation_says(tiny_dir, tokenizer):
    prm = ProcessRewardComputer.from_pretrained(
        tiny_dir / "llama", ref_model=tiny_dir / "llama-ref", beta=0.5, device="cpu"
    )
    options = {0: ["A = 1.", "B = 22.", "C = 333.", "D = 4."], 1: ["{parent} so x.", "{parent} so y."] * 4}
    prompt = "Find x.\n"
    scorer = IncrementalScorer(prm)
    results = run_search(
        [prompt],
        _toy_generator(options),
        scorer,
        SearchConfig(method="beam", n=4, beam_width=2, aggregation="min"),
    )
    assert scorer.cache_bytes == 0 and results[0].peak_cache_bytes == scorer.peak_cache_bytes > 0
    # By hand: score the four first steps as partial responses, keep the best n // beam_width = 2 by min.
    first = prm.score([prompt] * 4, [[s] for s in options[0]], complete=False)
    mins = {s: min(r.step_rewards) for s, r in zip(options[0], first, strict=True)}
    kept = sorted(options[0], key=lambda s: -mins[s])[:2]
    assert results[0].trace == [[(s,) for s in kept]]
    # Each kept beam was forked twice; the four finished candidates, and the best of them by min.
    finals = [[s, f"{s[0]} so {x}."] for s in kept for x in "xy"]
    full = prm.score([prompt] * 4, finals)
    best = max(range(4), key=lambda i: (min(full[i].step_rewards), -i))
    assert sorted(c.steps for c in results[0].candidates) == sorted(finals)
    assert results[0].best_candidate.steps == finals[best]
    assert results[0].best_candidate.score == pytest.approx(min(full[best].step_rewards), abs=TOL)
    assert results[0].generated_tokens == 8 * 3  # 4 first steps + 4 second steps, 3 tokens each


def test_dvts_keeps_the_best_child_of_each_subtree(tiny_dir):
    prm = ProcessRewardComputer.from_pretrained(
        tiny_dir / "qwen2", reference_free=True, beta=1.0, device="cpu"
    )
    options = {0: ["A = 1.", "B = 22.", "C = 333.", "D = 4."], 1: ["{parent} so x."] * 4}
    prompt = "Find x.\n"
    results = run_search(
        [prompt],
        _toy_generator(options),
        IncrementalScorer(prm),
        SearchConfig(method="dvts", n=4, beam_width=2),
    )
    first = prm.score([prompt] * 4, [[s] for s in options[0]], complete=False)
    mins = [min(r.step_rewards) for r in first]
    by_hand = [options[0][0 if mins[0] >= mins[1] else 1], options[0][2 if mins[2] >= mins[3] else 3]]
    assert results[0].trace == [[(by_hand[0],)], [(by_hand[1],)]]
    # Round 2 forks each subtree's beam twice and both children end: they are all candidates.
    assert sorted(c.steps[0] for c in results[0].candidates) == sorted(by_hand * 2)


def test_early_rejection_drops_the_low_q_candidates_after_the_budget(tiny_dir):
    prm = ProcessRewardComputer.from_pretrained(
        tiny_dir / "gpt2", reference_free=True, beta=1.0, device="cpu"
    )
    texts = ["one two three.", "four five six.", "seven eight.", "nine ten."]
    seen = Counter()

    def generate(requests):  # one "token" per character; the step ends with the text
        out = []
        for r in requests:
            if r.partial:
                full = next(t for t in texts if t.startswith(r.partial))
                rest = full[len(r.partial) :]
                out.append(GeneratedStep(rest, True, True, len(rest)))
            else:
                k = seen[r.steps]
                seen[r.steps] += 1
                out.append(GeneratedStep(texts[k][: r.max_new_tokens], False, False, r.max_new_tokens))
        return out

    config = SearchConfig(method="early", n=4, reject_after_tokens=5, keep_fraction=0.5, reject_by="q")
    results = run_search(["Count.\n"], generate, IncrementalScorer(prm), config)
    partial = prm.score(["Count.\n"] * 4, [[t[:5]] for t in texts], complete=False, step_open=True)
    q = [r.outcome_reward for r in partial]
    kept = sorted(range(4), key=lambda i: (-q[i], i))[:2]
    assert results[0].trace == [[(texts[i][:5],) for i in kept]]
    assert sorted(c.steps[0] for c in results[0].candidates) == sorted(texts[i] for i in kept)
    assert results[0].generated_tokens == 4 * 5 + sum(len(texts[i]) - 5 for i in kept)


def test_search_with_transformers_generate_and_every_method(tiny_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    prm = ProcessRewardComputer.from_pretrained(
        tiny_dir / "llama", ref_model=tiny_dir / "llama-ref", device="cpu", append_eos=False
    )
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    generator = TransformersStepGenerator(policy, tokenizer, max_step_tokens=6, temperature=1.0)
    for method in ("bon", "beam", "dvts", "early"):
        config = SearchConfig(method=method, n=4, beam_width=2, max_steps=2, reject_after_tokens=3)
        scorer = IncrementalScorer(prm)
        (result,) = run_search(["Q: 1 + 1?\n"], generator, scorer, config)
        best = result.best_candidate
        assert 1 <= len(best.steps) <= 2 and result.generated_tokens > 0
        assert scorer.tokens_forwarded == result.scored_tokens
        full = prm.score_one("Q: 1 + 1?\n", best.steps, complete=best.finished)
        assert best.score == pytest.approx(min(full.step_rewards), abs=TOL)
        assert result.to_dict()["response"] == "\n\n".join(best.steps)


def test_search_and_learn_adapter_matches_the_computer(tiny_dir):
    prm = ProcessRewardComputer.from_pretrained(
        tiny_dir / "gpt2", ref_model=tiny_dir / "gpt2-ref", device="cpu"
    )
    adapter = SearchAndLearnPRM(prm)
    # search-and-learn's beams keep the "\n\n" they stopped at; a finished beam ends without it
    outputs = [["a.\n\nb.\n\n", "a.\n\nb.", "c."], ["d.\n\ne.\n\nf."]]
    scores = adapter.score(["Q1", "Q2"], outputs)
    assert [[len(s) for s in q] for q in scores] == [[2, 2, 1], [3]]
    prefix = prm.score(["Q1"], ["a.\n\nb."], complete=False)[0].step_rewards
    whole = prm.score(["Q1"], ["a.\n\nb."], complete=True)[0].step_rewards
    assert abs(prefix[-1] - whole[-1]) > 1e-4  # the separator after the last step is its own token here
    assert scores[0][0] == pytest.approx(prefix, abs=1e-9)
    assert scores[0][1] == pytest.approx(whole, abs=1e-9)
    assert scores[0][2] == pytest.approx(prm.score(["Q1"], ["c."])[0].step_rewards, abs=1e-9)
    assert SearchAndLearnPRM(prm, complete=False).score(["Q1"], [["a.\n\nb."]])[0][0] == pytest.approx(prefix)
    q_adapter = SearchAndLearnPRM(prm, values="q")
    assert q_adapter.score(["Q2"], [outputs[1]])[0][0][-1] == pytest.approx(math.fsum(scores[1][0]), abs=1e-9)
    with pytest.raises(ValueError, match="2 questions but 1"):
        adapter.score(["Q1", "Q2"], [["a."]])
    with pytest.raises(TypeError, match="pass complete=True or False"):
        adapter.score(["Q1"], [[["a.", "b."]]])
    with pytest.raises(ValueError, match="complete must be"):
        SearchAndLearnPRM(prm, complete="yes")


def test_search_config_refuses_bad_settings():
    with pytest.raises(ValueError, match="multiple of beam_width"):
        SearchConfig(method="beam", n=6, beam_width=4)
    with pytest.raises(ValueError, match="method must be one of"):
        SearchConfig(method="mcts")


def test_search_command_writes_jsonl_and_refuses_bad_input(tiny_dir, tmp_path, capsys):
    import json

    from trl_implicit_prm.cli import main

    rows = [
        {"prompt": "Q: 1 + 1?\n", "id": "a"},
        {"prompt": [{"role": "user", "content": "Q: 2 + 2?"}], "id": "b"},
    ]
    inp = tmp_path / "problems.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "found.jsonl"
    common = ["search", "--model", str(tiny_dir / "llama"), "--ref-model", str(tiny_dir / "llama-ref")]
    common += ["--policy", str(tiny_dir / "llama"), "--device", "cpu", "--output", str(out)]
    rc = main(
        [
            *common,
            *("--input", str(inp), "--method", "beam", "--n", "4", "--beam-width", "2"),
            *("--max-steps", "2", "--max-step-tokens", "5", "--with-candidates"),
        ]
    )
    assert rc == 0 and "searched 2 problem(s) with beam" in capsys.readouterr().out
    found = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in found] == ["a", "b"]
    for r in found:
        assert r["response"] == "\n\n".join(r["steps"]) and len(r["step_rewards"]) == len(r["steps"])
        assert r["score"] == pytest.approx(min(r["step_rewards"])) and r["generated_tokens"] > 0
        assert r["scored_tokens"] > 0 and 1 <= len(r["candidates"]) <= 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"question": "no prompt"}\n')
    assert main([*common, "--input", str(bad)]) == 2
    assert "bad.jsonl:2: expected a JSON object with a 'prompt'" in capsys.readouterr().err
    assert main([*common, "--input", str(inp), "--n", "6", "--beam-width", "4"]) == 2
    assert "--n 6 must be a multiple of --beam-width 4" in capsys.readouterr().err


def test_demo_search_stage_writes_its_plot_and_numbers(tiny_dir, tokenizer, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from trl_implicit_prm.demo import search_stage
    from trl_implicit_prm.demo.task import ArithmeticTask

    monkeypatch.setattr(search_stage, "SIZES", (2, 4))  # the demo's sizes, scaled down for a test
    monkeypatch.setattr(search_stage, "BEAM_SIZES", (4,))
    monkeypatch.setattr(search_stage, "MAX_STEP_TOKENS", 6)
    monkeypatch.setattr(search_stage, "DVTS_SIZES", (4,))
    monkeypatch.setattr(search_stage, "EARLY_KEEP", (0.5,))
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    prm = ProcessRewardComputer.from_pretrained(
        tiny_dir / "llama", ref_model=tiny_dir / "llama-ref", device="cpu"
    )
    problems = ArithmeticTask(n_terms=3, seed=0).make_problems(2, seed=0)
    out = search_stage.run_search_stage(policy, tokenizer, prm, problems, tmp_path)
    assert set(out["methods"]) == {
        "best-of-N (min)",
        "weighted vote",
        "beam search",
        "DVTS",
        "early rejection",
    }
    for curve in out["methods"].values():
        assert len(curve["budget_tokens"]) == len(curve["accuracy"]) >= 1
        assert all(t > 0 for t in curve["budget_tokens"]) and all(0 <= a <= 1 for a in curve["accuracy"])
    bon = out["methods"]["best-of-N (min)"]["budget_tokens"]
    assert bon[0] < bon[1]  # 2 of the 4 samples cost fewer tokens than all 4
    assert out["comparison"]["best_of_n"] == 4 and out["comparison"]["best_of_n_tokens"] == bon[-1]
    assert (tmp_path / "search.png").stat().st_size > 0
