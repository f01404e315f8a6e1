"""A reduced run of the embedded demo: the report's schema, and the implicit PRM beats the untrained reference."""

from __future__ import annotations

import json
import time

import pytest

from trl_implicit_prm.cli import main
from trl_implicit_prm.demo.pipeline import DemoConfig, run_demo

CE, REF, STEP = "implicit PRM (CE)", "reference (no training)", "step-supervised (StepKTO)"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    start = time.perf_counter()
    report = run_demo(DemoConfig.quick(output_dir=str(out), progress=False))
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
    assert {CE, REF} <= set(models) and STEP not in models  # the reduced run trains CE only
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
    assert (out / "bon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "steps.html").read_text()
    assert "error injected at step" in html and "first error?" in html
    table = (out / "report.md").read_text()
    assert "| implicit PRM (CE) | outcome |" in table
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
