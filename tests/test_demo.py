"""A reduced run of the embedded demo: the report's schema, and the implicit PRM beats the untrained reference."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
import torch

from trl_implicit_prm.cli import main
from trl_implicit_prm.demo.pipeline import DemoConfig, run_demo

CE, REF, STEP = "implicit PRM (CE)", "reference (no training)", "step-supervised (StepKTO)"
MC, TRUE = "explicit PRM (MC labels)", "explicit PRM (true labels)"


def _demo_threads() -> int:
    """Every core when this file runs by itself (`make test` runs it first, alone), one inside an xdist worker,
    where the other workers hold the other cores."""
    return 1 if os.environ.get("PYTEST_XDIST_WORKER") else len(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    threads = torch.get_num_threads()
    torch.set_num_threads(_demo_threads())
    start = time.perf_counter()
    try:
        report = run_demo(DemoConfig.quick(output_dir=str(out), progress=False))
    finally:
        torch.set_num_threads(threads)
    return out, report, time.perf_counter() - start


def test_reduced_demo_report_schema(quick_report):
    out, _, _ = quick_report
    for name in ("report.json", "report.md", "bon.png", "steps.html"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "report.json").read_text())
    assert saved["seed"] == 0 and saved["config"]["n_terms"] == 4
    assert set(saved["timings_seconds"]) >= {
        "1 reference policy (fine-tune on correct solutions)",
        "2 sample and grade rollouts",
        "3a implicit PRM, CE (outcome labels)",
        "5b evaluate (step-error F1, best-of-N)",
    }
    models = saved["summary"]["models"]
    # the reduced run trains CE and the explicit PRMs (on a small MC budget), no StepKTO
    assert {CE, REF, MC, TRUE} <= set(models) and STEP not in models
    for row in models.values():
        assert 0.0 <= row["test_f1"] <= 1.0 and row["threshold"] == row["threshold"]
    for set_name in ("sampled", "injected"):  # threshold tuned on validation (oracle there), reused on test
        split = saved["step_error"][CE][set_name]
        assert split["validation"]["oracle"] and not split["test"]["oracle"]
        assert split["test"]["threshold"] == split["threshold"] and split["n_test_records"] > 0
    history = saved["reference_policy"]
    assert history and all(set(h) == {"epoch", "loss", "greedy_accuracy"} for h in history)
    assert history[-1]["greedy_accuracy"] >= saved["config"]["sft_stop_accuracy"]  # stopped by the criterion
    curve = saved["best_of_n"][CE]
    assert curve["ns"][-1] == saved["config"]["bon_n"] and "prm:min" in curve["accuracy"]
    assert "majority" in curve["accuracy"] and "weighted:min" in curve["accuracy"]
    assert {"ce_f1", "ce_f1_at_least_0.80", "ce_bon_above_pass@1", "ce_bon_above_majority"} <= set(
        saved["claims"]
    )
    assert saved["rollouts"]["n_used"] > 0
    # New columns: the labels each PRM used and the generated tokens its training data cost.
    assert [models[k]["labels"] for k in (REF, CE, MC, TRUE)] == [
        "none",
        "outcome",
        "MC steps",
        "true steps (oracle)",
    ]
    mc = saved["mc"]
    assert models[REF]["data_cost_tokens"] == 0
    assert models[CE]["data_cost_tokens"] == saved["rollouts"]["n_generated_tokens"] > 0
    assert models[MC]["data_cost_tokens"] == mc["rollout_tokens"] + mc["n_generated_tokens"]
    assert mc["n_problems"] == 20 and mc["n_new_problems"] == mc["new_rollout_tokens"] == 0
    # the oracle: the MC PRM's rollouts with their true labels, and the new problems' rollouts
    oracle = saved["explicit_true"]
    assert oracle["new_rollout_tokens"] > 0
    assert oracle["rollout_tokens"] == mc["rollout_tokens"] + oracle["new_rollout_tokens"]
    assert models[TRUE]["data_cost_tokens"] == oracle["rollout_tokens"]
    assert oracle["n_new_problems"] == saved["config"]["explicit_true_problems"] - mc["n_problems"] == 10
    assert oracle["n_problems"] == 30 and oracle["n_rows"] > mc["n_rollouts"]
    assert mc["n_completions"] > 0 and mc["n_generated_tokens"] >= mc["n_completions"]
    assert 0.0 <= mc["hard_label_agreement_with_truth"] <= 1.0
    assert mc["completer"]["kind"] == "faithful" and mc["completer"]["epochs"] == 1
    agreement = f"{100 * mc['hard_label_agreement_with_truth']:.1f}%"
    assert (
        "4 completions per step prefix by a trained completer that continues after errors (greedy accuracy "
        f"{100 * mc['completer']['greedy_accuracy']:.0f}%), on 20 problems (0 beyond"
        in (out / "report.md").read_text()
        and agreement in (out / "report.md").read_text()
    )
    claims = saved["claims"]
    assert claims["ce_cost_over_mc_cost"] == pytest.approx(
        models[CE]["data_cost_tokens"] / models[MC]["data_cost_tokens"]
    )
    # Guards: a baseline not above the untrained reference is listed as failed and never compared with.
    for name in (MC, TRUE):
        below = models[name]["test_f1"] <= models[REF]["test_f1"]
        assert (name in claims["failed_baselines"]) == below
    assert ("gap_to_explicit_mc" in claims) == (MC not in claims["failed_baselines"])
    assert (out / "bon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "steps.html").read_text()
    assert "error injected at step" in html and "first error?" in html
    table = (out / "report.md").read_text()
    assert "| implicit PRM (CE) | outcome |" in table and "generated tokens (data)" in table
    # The public data formats are written for users to look at.
    for name in ("rollouts", "unpaired", "paired", "stepwise", "processbench"):
        assert (out / "data" / f"{name}.jsonl").is_file()


def test_implicit_prm_beats_the_untrained_reference(quick_report):
    _, report, _ = quick_report
    models = report["summary"]["models"]
    assert models[CE]["test_f1"] > models[REF]["test_f1"]


def test_demo_command_rejects_unknown_fields(tmp_path):
    with pytest.raises(SystemExit, match="unknown DemoConfig field"):
        main(["demo", "--output-dir", str(tmp_path), "--set", "no_such_field=1"])


def test_claims_are_guarded_by_the_untrained_reference():
    """A step-level baseline below the untrained reference is reported as failed, never compared with."""
    from trl_implicit_prm.demo.report import _claims

    def row(f1, labels, cost=100):
        return {"test_f1": f1, "labels": labels, "data_cost_tokens": cost, "bon@4_min": None}

    summary = {
        "models": {
            REF: row(0.6, "none", 0),
            CE: row(0.8, "outcome", 100),
            STEP: row(0.3, "true steps (oracle)"),
            MC: row(0.82, "MC steps", 2000),
            TRUE: row(0.9, "true steps (oracle)"),
        },
        "pass@1": 0.5,
        "majority@4": 0.6,
    }
    claims = _claims(summary, 4)
    assert claims["failed_baselines"] == [STEP]
    assert "gap_to_step_supervised" not in claims  # StepKTO failed: no "within X of it" claim
    assert claims["gap_to_explicit_mc"] == pytest.approx(0.02) and claims["ce_within_0.05_of_explicit_mc"]
    assert claims["ce_cost_over_mc_cost"] == pytest.approx(0.05) and claims["ce_cost_at_most_0.10_of_mc"]
    summary["models"][MC]["test_f1"] = 0.55
    claims = _claims(summary, 4)
    assert claims["failed_baselines"] == [MC, STEP] and "gap_to_explicit_mc" not in claims


def test_seeds_aggregate_mean_and_spread(tmp_path):
    from trl_implicit_prm.demo.aggregate import aggregate_reports

    def report(seed, f1, majority):
        summary = {
            "models": {CE: {"labels": "outcome", "test_f1": f1, "bon@4_min": None}},
            "majority@4": majority,
        }
        claims = {"ce_f1": f1, "failed_baselines": [STEP] if seed else []}
        return {
            "seed": seed,
            "config": {"seed": seed, "bon_n": 4},
            "summary": summary,
            "claims": claims,
            "total_seconds": 10.0,
        }

    agg = aggregate_reports([report(0, 0.8, 0.5), report(1, 0.9, 0.7)], tmp_path)
    f1 = agg["summary"][CE]["test_f1"]
    assert (
        f1["values"] == [0.8, 0.9]
        and f1["mean"] == pytest.approx(0.85)
        and f1["std"] == pytest.approx(0.0707)
    )
    assert agg["summary"][CE]["bon@4_min"]["mean"] is None  # no finite value: no statistic
    assert agg["summary"]["baselines"]["majority@4"]["min"] == 0.5
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["claims"]["1"]["failed_baselines"] == [STEP]
    assert "85.0 ± 7.1" in (tmp_path / "report.md").read_text()


def test_mc_label_agreement_and_confusion_count_every_step():
    from trl_implicit_prm.demo.mc_labels import MCLabels

    hard = [{"labels": [True, False, False]}, {"labels": [True, True]}]
    mc = MCLabels(soft=[], hard=hard, n_completions=6, n_generated_tokens=60)
    truth = [[True, True, False], [True, False]]
    assert mc.agreement(truth) == pytest.approx(3 / 5)
    assert mc.confusion(truth) == {"true=0,mc=0": 1, "true=0,mc=1": 1, "true=1,mc=0": 1, "true=1,mc=1": 2}


def test_data_costs_count_rollouts_and_mc_completions():
    """CE pays for every rollout; the MC PRM for its problems' rollouts (new problems' included) and its
    completions; the explicit PRM on true labels for its problems' rollouts only; the reference for nothing."""
    from trl_implicit_prm.demo.baselines import data_costs
    from trl_implicit_prm.demo.task import ArithmeticTask

    problems = ArithmeticTask(n_terms=3, seed=0).make_problems(3, seed=0)
    tokens = [10, 11, 20, 21, 30, 31]  # 2 rollouts per problem, problem-major

    def info(mc_problems, oracle_problems, oracle_new=0, mc_new=0):
        return {
            "mc": {"problems": mc_problems, "n_generated_tokens": 500, "new_rollout_tokens": mc_new},
            "explicit_true": {"problems": oracle_problems, "new_rollout_tokens": oracle_new},
        }

    facts = info(problems[:1], problems[:1])
    costs = data_costs(["ce", "explicit_mc", "explicit_true"], problems, tokens, facts)
    assert costs == {
        REF: 0,
        CE: 123,
        MC: 21 + 500,
        TRUE: 21,
    }
    assert facts["mc"]["rollout_tokens"] == 21 and "problems" not in facts["mc"]
    assert facts["explicit_true"]["rollout_tokens"] == 21 and "problems" not in facts["explicit_true"]
    # step-supervised PRMs on the first rollout of each problem: they and the explicit PRMs pay for those only
    keys = ["ce", "step_kto", "step_ce", "explicit_mc", "explicit_true"]
    costs = data_costs(
        keys, problems, tokens, info(problems[1:2], problems[1:2]), step_samples=1, explicit_samples=1
    )
    assert costs == {REF: 0, CE: 123, STEP: 60, "step-supervised (step CE)": 60, MC: 20 + 500, TRUE: 20}
    # the explicit PRMs on both rollouts of their problem, the step-supervised ones on the first only
    costs = data_costs(
        keys, problems, tokens, info(problems[1:2], problems[1:2]), step_samples=1, explicit_samples=2
    )
    assert costs == {REF: 0, CE: 123, STEP: 60, "step-supervised (step CE)": 60, MC: 41 + 500, TRUE: 41}
    # new problems' rollouts (77 tokens for the oracle's, 33 of them the MC PRM's), paid for on top
    facts = info(problems[1:2], problems[1:2], oracle_new=77, mc_new=33)
    costs = data_costs(keys, problems, tokens, facts, explicit_samples=2)
    assert costs[TRUE] == 41 + 77 and costs[MC] == 41 + 33 + 500
    assert facts["mc"]["rollout_tokens"] == 41 + 33 and facts["explicit_true"]["rollout_tokens"] == 41 + 77


def test_report_says_where_the_mc_labels_came_from():
    from trl_implicit_prm.demo.report import _mc_reading

    mc = {"completions_per_step": 2, "n_problems": 4000, "n_new_problems": 3000}
    mc |= {
        "hard_label_agreement_with_truth": 0.9776,
        "completer": {"kind": "trained", "greedy_accuracy": 0.99},
    }
    assert _mc_reading(mc) == [
        "- The MC labels: 2 completions per step prefix by a trained completer (greedy accuracy 99%), on 4,000 "
        "problems (3,000 beyond the training ones); their hard labels agree with the true ones on 97.8% of the steps."
    ]
    mc["completer"] = {"kind": "faithful", "greedy_accuracy": 1.0}
    assert _mc_reading(mc)[0].startswith(
        "- The MC labels: 2 completions per step prefix by a trained completer that continues after errors "
        "(greedy accuracy 100%), on 4,000 problems"
    )
    assert _mc_reading(None) == []


def test_explicit_prms_new_problems_come_after_every_other_split():
    """The explicit PRMs' new problems are drawn last: the other splits stay as they were, all disjoint; the MC
    PRM gets new problems too when `mc_problems` exceeds the training problems (it was capped at them)."""
    from trl_implicit_prm.demo.pipeline import DemoConfig, _problem_splits
    from trl_implicit_prm.demo.task import ArithmeticTask

    small = dict(n_sft_problems=30, n_sft_eval_problems=5, n_train_problems=20, n_val_problems=5)
    small |= dict(n_test_problems=5, n_bon_problems=5, mc_problems=8, train_explicit=True)
    task = ArithmeticTask(seed=0)
    without = _problem_splits(DemoConfig(**small, explicit_true_problems=8), task)
    with_new = _problem_splits(DemoConfig(**small, explicit_true_problems=20), task)
    assert without[:6] == with_new[:6] and without[6] == []
    assert len(with_new[6]) == 20 - 8  # the MC PRM's 8 problems and 12 new ones
    texts = [p.text for split in with_new for p in split]
    assert len(texts) == len(set(texts))
    assert (
        _problem_splits(DemoConfig(**{**small, "train_explicit": False}, explicit_true_problems=20), task)[6]
        == []
    )
    # the MC PRM on 26 problems: all 20 training ones and 6 new ones (the oracle on 20 needs none)
    mc_more = _problem_splits(DemoConfig(**{**small, "mc_problems": 26}, explicit_true_problems=20), task)
    assert mc_more[:6] == with_new[:6] and mc_more[6] == with_new[6][:6]


def test_mc_prm_and_oracle_train_on_new_problems_beyond_the_training_ones(quick_report, tmp_path):
    """`mc_problems` above the training problems: the MC PRM labels and trains on new problems' rollouts too
    (it used to be capped at the training problems, silently); the oracle takes the first problems of the same
    list; each pays for exactly the rollouts of its problems."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from trl_implicit_prm.demo.baselines import data_costs, train_baselines
    from trl_implicit_prm.demo.pipeline import _Stages, _train_prm
    from trl_implicit_prm.demo.policy import sample_solutions
    from trl_implicit_prm.demo.rows import first_rollouts
    from trl_implicit_prm.demo.task import ArithmeticTask
    from trl_implicit_prm.modeling import load_tokenizer

    ref = quick_report[0] / "models" / "reference"
    policy, tok = AutoModelForCausalLM.from_pretrained(ref).eval(), load_tokenizer(ref)
    cfg = DemoConfig.quick(output_dir=str(tmp_path), progress=False, train_step_ce=False)
    cfg = replace(cfg, mc_problems=5, explicit_true_problems=4, explicit_samples_per_problem=2, mc_samples=2)
    cfg = replace(cfg, explicit_epochs=0.5, batch_size=8, mc_completer="faithful", mc_completer_epochs=1)
    problems = ArithmeticTask(n_terms=cfg.n_terms, seed=7).make_problems(206, seed=7)
    train, new, sft = problems[:3], problems[3:6], problems[6:]
    train_tokens: list[int] = []
    rollouts = sample_solutions(policy, tok, train, 2, seed=0, progress=False, token_counts=train_tokens)
    pairs = first_rollouts(train, rollouts)
    assert len(pairs) == 3  # every training problem has a usable rollout (else the test means nothing)
    stages = _Stages(progress=False)
    args = (cfg, ref, policy, tok, pairs, [], stages.run, _train_prm, tmp_path)
    with pytest.raises(ValueError, match="mc_completer='faithful' needs the SFT problems"):
        train_baselines(*args, new_problems=new)
    assert not stages.seconds  # refused before any stage spent time (the new rollouts were sampled first)
    dirs, info = train_baselines(*args, new_problems=new, sft_problems=sft)
    assert set(dirs) == {"explicit_mc", "explicit_true"}
    assert list(stages.seconds) == [
        "4c rollouts of 3 new problems for the explicit PRMs",
        "4d MC completer (fine-tune on correct solutions, continuations after errors, 1 epochs)",
        "4e MC step labels (2 completions per step prefix, 5 problems)",
        "4f explicit PRM (hard MC labels)",
        "4g explicit PRM (true step labels, 4 problems)",
    ]
    # the completer: its own model, saved, and its accuracy on training problems it never saw
    completer = info["mc"]["completer"]
    assert completer["kind"] == "faithful" and completer["epochs"] == 1
    assert 0.0 <= completer["greedy_accuracy"] <= 1.0
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "models" / "completer")
    assert not torch.equal(saved.lm_head.weight, policy.lm_head.weight)
    mc, oracle = info["mc"], info["explicit_true"]
    assert (mc["n_problems"], mc["n_new_problems"], oracle["n_problems"], oracle["n_new_problems"]) == (
        5,
        2,
        4,
        1,
    )
    assert 0 < oracle["new_rollout_tokens"] < mc["new_rollout_tokens"]
    labelled = sum(1 for _, sols in pairs for s in sols if s.first_error is not None)
    assert mc["n_rollouts"] > labelled  # the new problems' rollouts are labelled too
    costs = data_costs(["explicit_mc", "explicit_true"], train, train_tokens, info, explicit_samples=2)
    assert costs[MC] == sum(train_tokens) + mc["new_rollout_tokens"] + mc["n_generated_tokens"]
    assert costs[TRUE] == sum(train_tokens) + oracle["new_rollout_tokens"]


@pytest.mark.parametrize("kind", ["ce", "dpo", "step_kto", "step_ce", "explicit"])
def test_every_prm_kind_gets_valid_training_arguments(tmp_path, kind):
    """The full demo's settings build a valid config for every PRM kind. The reduced run trains only CE and the
    explicit PRMs, and precomputing StepKTO's reference log-probs (refused with its mismatched-pair z0) first
    failed in a full run."""
    from trl_implicit_prm.demo.pipeline import _prm_trainer_and_args

    cfg = DemoConfig(progress=False)
    trainer_cls, args = _prm_trainer_and_args(kind, tmp_path, cfg)
    assert trainer_cls.__name__.endswith("Trainer") and args.num_train_epochs == cfg.prm_epochs
    expected = kind in ("ce", "dpo", "step_ce")
    assert getattr(args, "precompute_ref_log_probs", False) is expected
    if kind == "step_ce":
        assert args.loss_type == "ce"


def test_seeds_refuse_the_rl_stage(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path), "--seeds", "0", "1", "--rl"]) == 2
    assert "--seeds runs the demo only" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "step_samples_per_problem=20",
            "step_samples_per_problem \\(20\\) must be at most samples_per_problem",
        ),
        (
            "explicit_samples_per_problem=17",
            "explicit_samples_per_problem \\(17\\) must be at most samples_per_problem",
        ),
        ("max_pairs_per_problem=0", "max_pairs_per_problem must be a positive integer, got 0"),
        ("samples_per_problem=2.5", "samples_per_problem must be a positive integer, got 2.5"),
        ("explicit_true_problems=0", "explicit_true_problems must be a positive integer, got 0"),
        # an unknown label kind used to train on the soft labels, silently
        ("mc_label=Hard", "mc_label must be 'hard' or 'soft', got 'Hard'"),
        ("mc_completer=reference", "mc_completer must be 'policy', 'trained' or 'faithful', got 'reference'"),
    ],
)
def test_demo_command_refuses_bad_counts(tmp_path, capsys, setting, message):
    """Without these checks `max_pairs_per_problem=0` trained no DPO PRM and said nothing (no paired rows)."""
    assert main(["demo", "--output-dir", str(tmp_path), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err
