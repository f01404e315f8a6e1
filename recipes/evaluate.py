"""Evaluate a trained implicit PRM: step-error localization (ProcessBench protocol) and/or best-of-N.

The `trl-implicit-prm eval-steps` and `eval-bon` commands with TRL-style keys, as flags or in a `--config` YAML
(`trl_implicit_prm.scripts.score`): the same checks, skipped-row counts and results.

- Step errors: one ProcessBench-format file per split (`problem`, `steps`, `label` = earliest wrong step or
  -1). The PRM flags the first step whose reward is below τ; τ is tuned on the split `tune_on` and reused on
  the others (the tuned split's own F1 is marked "oracle threshold"), or fixed with `threshold`.
- Best-of-N: a candidates file (`problem`, `reference`, `candidates`); each candidate is scored and the step
  rewards aggregated (`min` in the paper), then accuracy against N for PRM selection, majority voting and
  weighted majority voting.

Writes `output_dir/eval_steps.json`, `f1_vs_threshold.png`, `eval_bon.json` and `best_of_n.png`.

    python recipes/evaluate.py --model_name_or_path outputs/llama3.1-8b-implicit-prm-ce \
        --process_files gsm8k=processbench/gsm8k.jsonl math=processbench/math.jsonl --tune_on gsm8k \
        --bon_file math500_candidates.jsonl --output_dir eval/ce
"""

from trl_implicit_prm.scripts.score import evaluate_main

if __name__ == "__main__":
    evaluate_main()
