"""The demo's RL stage (`demo --rl`) on a minimal demo output built here: its report schema, plot and refusals.

Whether RL improves the policy is a property of a real demo run (its SFT policy and trained PRM), reported in the
demo's report.json; here the models are tiny and untrained, so only the plumbing and the numbers' shapes are
checked.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from trl_implicit_prm.cli import main
from trl_implicit_prm.demo.pipeline import DemoConfig
from trl_implicit_prm.demo.rl import RLDemoConfig, run_rl_demo
from trl_implicit_prm.demo.task import STEP_SEPARATOR, ArithmeticTask, tokenizer_corpus
from trl_implicit_prm.modeling import write_metadata
from trl_implicit_prm.tiny import build_model, build_tokenizer


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-rl")
    settings = DemoConfig(
        output_dir=str(out),
        n_sft_problems=4,
        n_sft_eval_problems=2,
        n_train_problems=8,
        n_val_problems=2,
        n_test_problems=4,
        n_bon_problems=2,
    )
    task = ArithmeticTask(
        n_terms=settings.n_terms, operators=settings.operators, max_value=settings.max_value
    )
    tok = build_tokenizer(vocab_size=400, corpus=tokenizer_corpus(task, 200, seed=0))
    for name in ("reference", "ce"):
        build_model("llama", tok, seed=0).save_pretrained(out / "models" / name)
        tok.save_pretrained(out / "models" / name)
    write_metadata(
        out / "models" / "ce",
        beta=1.0,
        reference_free=False,
        reference_model=str(out / "models" / "reference"),
        step_separator=STEP_SEPARATOR,
    )
    (out / "report.json").write_text(json.dumps({"config": asdict(settings)}))
    (out / "report.md").write_text("# demo\n")
    return out


def test_rl_stage_report(demo_dir):
    cfg = RLDemoConfig(
        output_dir=str(demo_dir),
        steps=2,
        eval_every=1,
        prompts_per_step=2,
        num_generations=2,
        max_completion_length=12,
        n_eval_problems=4,
        eval_samples=1,
        progress=False,
    )
    run_rl_demo(cfg)
    report = json.loads((demo_dir / "report.json").read_text(), parse_constant=float)
    rl = report["rl"]
    assert set(rl["methods"]) == {"grpo", "prime", "pure_min"} and 0.0 <= rl["start_accuracy"] <= 1.0
    for name, m in rl["methods"].items():
        assert (
            m["steps"] == [0, 1, 2] and len(m["accuracy"]) == 3 and m["final_accuracy"] == m["accuracy"][-1]
        )
        assert m["accuracy"][0] == rl["start_accuracy"]
        assert len(m["prm_outcome_accuracy"]) == (0 if name == "grpo" else 2)
        assert all(0.0 <= a <= 1.0 for a in [*m["accuracy"], *m["pass_at_1"], *m["prm_outcome_accuracy"]])
    assert (demo_dir / "rl.png").stat().st_size > 1000
    md = (demo_dir / "report.md").read_text()
    assert md.startswith("# demo") and md.count("## RL from the SFT policy") == 1


def test_rl_only_needs_a_finished_demo(tmp_path, capsys):
    assert main(["demo", "--rl-only", "--output-dir", str(tmp_path)]) == 2
    assert "is not a finished demo output" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown RL methods"):
        run_rl_demo(RLDemoConfig(output_dir=str(tmp_path), methods=["ppo"]))


def test_held_out_problems_extend_the_demo_test_split(demo_dir):
    from trl_implicit_prm.demo.rl import _demo_problems

    settings = json.loads((demo_dir / "report.json").read_text())["config"]
    n_test = settings["n_test_problems"]
    train, test = _demo_problems(settings, n_test)
    train2, held_out = _demo_problems(settings, n_test + 7)
    assert train2 == train and held_out[:n_test] == test and len(held_out) == n_test + 7
    texts = [p.text for p in held_out]
    assert len(set(texts)) == len(texts) and not set(texts) & {p.text for p in train}
