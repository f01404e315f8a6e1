"""Score every response of a JSONL (or JSON array) file with a trained implicit PRM.

The `trl-implicit-prm score` command with TRL-style keys, as flags or in a `--config` YAML
(`trl_implicit_prm.scripts.score`): the same checks, skipped-row counts and output. Input rows hold a `prompt`
(a string, or chat messages) and a `response` (a string, split on the step separator) or `steps` (a list);
output: the input rows plus `step_rewards`, `q_values`, `outcome_reward` (= the sum), `min`, `mean`, `max`,
`last`, `truncated` and `num_truncated_steps`; optionally an HTML page colouring every step by its reward.

    python recipes/score.py --model_name_or_path outputs/llama3.1-8b-implicit-prm-ce \
        --input_file responses.jsonl --output_file scored.jsonl --html_file scored.html

Without `html_file` it runs data-parallel under `accelerate launch --num_processes N recipes/score.py ...` and
resumes after a kill (see `trl_implicit_prm.inference.sharding`).
"""

from trl_implicit_prm.scripts.score import score_main

if __name__ == "__main__":
    score_main()
