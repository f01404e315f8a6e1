"""Reward math: token alignment (Proposition 3.1 by enumeration), log-prob parity, step/outcome invariants."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trl_implicit_prm.logps import completion_logps
from trl_implicit_prm.rewards import (
    aggregate_steps,
    outcome_rewards,
    q_values,
    step_mask,
    step_q_values,
    step_rewards,
    token_log_ratios,
    token_rewards,
)


def naive_logps(model, input_ids, attention_mask, completion_mask):
    """Full-vocabulary float64 log_softmax + gather, aligned with input_ids (the reference computation)."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.double()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    out = torch.cat([torch.zeros_like(logp[:, :1]), logp], dim=1)
    return out * completion_mask


def _tiny_llama(vocab: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = LlamaForCausalLM(cfg).double().eval()
    # Random init is near-uniform; sharpen the heads so policy and reference really differ.
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model


@pytest.mark.parametrize("method", ["fused", "logits"])
@pytest.mark.parametrize("vocab,horizon", [(3, 5), (5, 4)])
def test_proposition_3_1_by_enumeration(method, vocab, horizon):
    """q_t (library, cumulative log-ratio) == β·log Σ_{continuations} πref(cont|x,y≤t)·exp(r(y)/β)."""
    policy, ref = _tiny_llama(vocab, seed=1), _tiny_llama(vocab, seed=2)
    prompt = [1, 2]
    conts = list(itertools.product(range(vocab), repeat=horizon))
    ids = torch.tensor([prompt + list(c) for c in conts])
    attn = torch.ones_like(ids)
    cmask = torch.zeros_like(ids)
    cmask[:, len(prompt) :] = 1
    with torch.no_grad():
        lp_pol = completion_logps(policy, ids, attn, cmask, method=method).double()
        lp_ref = completion_logps(ref, ids, attn, cmask, method=method).double()
    # The right-hand side is computed independently from full log-softmaxes.
    naive_ref = naive_logps(ref, ids, attn, cmask)
    naive_pol = naive_logps(policy, ids, attn, cmask)
    seq_log_ratio = (naive_pol - naive_ref).sum(-1)  # r(y)/β for every full sequence
    # Sanity: the enumerated sequences form a distribution under each model.
    assert torch.logsumexp(naive_ref.sum(-1), 0).abs() < 1e-9
    assert torch.logsumexp(lp_pol.sum(-1), 0).abs() < 1e-5

    for beta in (0.05, 0.5, 2.0):
        q = q_values(token_rewards(lp_pol, lp_ref, cmask, beta))
        for t in range(1, horizon + 1):  # prefix y_≤t
            pos = len(prompt) + t - 1
            prefix_of = {}
            for row, c in enumerate(conts):
                prefix_of.setdefault(c[:t], []).append(row)
            for prefix, rows in prefix_of.items():
                rows_t = torch.tensor(rows)
                # log πref(continuation | x, y≤t) = sum of reference log-probs after position pos
                log_ref_cont = naive_ref[rows_t, pos + 1 :].sum(-1)
                rhs = beta * torch.logsumexp(log_ref_cont + seq_log_ratio[rows_t], 0)
                lhs = q[rows_t, pos]
                assert torch.allclose(lhs, rhs.expand_as(lhs), atol=1e-5), (beta, t, prefix)


def _padded_batch(tokenizer, padding_side="right"):
    texts = [
        ("Problem: 2 + 3?\n", "Step 1: 2 + 3 = 5.\n\nThe answer is 5."),
        ("Q: é?\n", "ки 12 * 3 = 36.\n\n結果 36"),
        ("Hi\n", "x"),
    ]
    rows = []
    for p, c in texts:
        p_ids = tokenizer(p)["input_ids"]
        c_ids = tokenizer(c, add_special_tokens=False)["input_ids"]
        rows.append((p_ids + c_ids, [0] * len(p_ids) + [1] * len(c_ids)))
    width = max(len(r[0]) for r in rows)
    ids, attn, cmask = [], [], []
    for seq, m in rows:
        pad = width - len(seq)
        if padding_side == "right":
            ids.append(seq + [tokenizer.pad_token_id] * pad)
            attn.append([1] * len(seq) + [0] * pad)
            cmask.append(m + [0] * pad)
        else:
            ids.append([tokenizer.pad_token_id] * pad + seq)
            attn.append([0] * pad + [1] * len(seq))
            cmask.append([0] * pad + m)
    return torch.tensor(ids), torch.tensor(attn), torch.tensor(cmask)


@pytest.mark.parametrize("method", ["fused", "logits"])
def test_completion_logps_match_naive_log_softmax(model_and_ref, tokenizer, method):
    policy, _ = model_and_ref
    ids, attn, cmask = _padded_batch(tokenizer)
    with torch.no_grad():
        got = completion_logps(policy, ids, attn, cmask, method=method)
    want = naive_logps(policy, ids, attn, cmask)
    assert got.dtype == torch.float32 and got.shape == ids.shape
    assert (got[cmask == 0] == 0).all()
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def test_completion_logps_left_padding_equals_right_padding(model_and_ref, tokenizer):
    policy, _ = model_and_ref
    ids_r, attn_r, cm_r = _padded_batch(tokenizer, "right")
    ids_l, attn_l, cm_l = _padded_batch(tokenizer, "left")
    with torch.no_grad():
        right = completion_logps(policy, ids_r, attn_r, cm_r)
        left = completion_logps(policy, ids_l, attn_l, cm_l)
    torch.testing.assert_close(right.sum(-1), left.sum(-1), atol=1e-5, rtol=0)


def test_completion_logps_has_gradients(model_and_ref, tokenizer):
    policy, _ = model_and_ref
    ids, attn, cmask = _padded_batch(tokenizer)
    completion_logps(policy, ids, attn, cmask).sum().backward()
    assert policy.get_output_embeddings().weight.grad.abs().sum() > 0


def test_step_rewards_sum_to_outcome_reward(model_and_ref, tokenizer):
    policy, ref = model_and_ref
    ids, attn, cmask = _padded_batch(tokenizer)
    # Three steps of completion tokens per row, assigned in order.
    step_index = torch.full_like(ids, -1)
    for b in range(ids.size(0)):
        pos = cmask[b].nonzero().flatten()
        step_index[b, pos] = torch.div(torch.arange(len(pos)) * 3, len(pos), rounding_mode="floor")
    num_steps = torch.tensor([3, 3, 1])
    with torch.no_grad():
        tr = token_rewards(
            completion_logps(policy, ids, attn, cmask),
            completion_logps(ref, ids, attn, cmask),
            cmask,
            beta=0.05,
        )
    sr = step_rewards(tr, step_index)
    assert sr.shape == (3, 3)
    torch.testing.assert_close(sr.sum(-1), outcome_rewards(tr), atol=1e-6, rtol=0)
    mask = step_mask(num_steps, 3)
    torch.testing.assert_close(aggregate_steps(sr, mask, "sum"), outcome_rewards(tr), atol=1e-6, rtol=0)
    torch.testing.assert_close(aggregate_steps(sr, mask, "last"), outcome_rewards(tr), atol=1e-6, rtol=0)
    # The q-value at the last completion token is the outcome reward.
    last_pos = (cmask * torch.arange(ids.size(1))).argmax(-1)
    torch.testing.assert_close(q_values(tr).gather(1, last_pos[:, None]).squeeze(1), outcome_rewards(tr))


def test_step_rewards_and_aggregations_by_hand():
    tr = torch.tensor(
        [[0.0, 1.0, 2.0, -4.0, 0.5, 0.0], [0.0, 0.0, -1.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    )
    step_index = torch.tensor([[-1, 0, 0, 1, 2, -1], [-1, -1, 0, 1, -1, -1], [-1, -1, -1, -1, -1, -1]])
    sr = step_rewards(tr, step_index, num_steps=3)
    assert sr.tolist() == [[3.0, -4.0, 0.5], [-1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]
    mask = step_mask(torch.tensor([3, 2, 0]), 3)
    assert step_q_values(sr).tolist()[0] == [3.0, -1.0, -0.5]
    agg = {how: aggregate_steps(sr, mask, how).tolist() for how in ("min", "max", "sum", "mean", "last")}
    assert agg["min"][:2] == [-4.0, -1.0] and math.isnan(agg["min"][2])
    assert agg["max"][:2] == [3.0, 3.0] and math.isnan(agg["max"][2])
    assert agg["sum"] == [-0.5, 2.0, 0.0]
    assert agg["mean"][:2] == pytest.approx([-0.5 / 3, 1.0]) and math.isnan(agg["mean"][2])
    assert agg["last"][:2] == [-0.5, 2.0] and math.isnan(agg["last"][2])
    with pytest.raises(ValueError, match="aggregation must be one of"):
        aggregate_steps(sr, mask, "median")
    with pytest.raises(ValueError, match="step_index has shape"):
        step_rewards(tr, step_index[:, :3])


def test_reference_free_log_ratio_is_policy_logps():
    pol = torch.tensor([[0.0, -1.0, -2.0]])
    mask = torch.tensor([[0, 1, 1]])
    assert token_log_ratios(pol, None, mask).tolist() == [[0.0, -1.0, -2.0]]
    assert token_log_ratios(pol, torch.tensor([[5.0, -0.5, -2.5]]), mask).tolist() == [[0.0, -0.5, 0.5]]
