"""The saved README.md is a PRM model card, and saving elsewhere leaves `args.output_dir/README.md` alone."""

from __future__ import annotations

import re

from datasets import Dataset
from helpers import cpu_args
from transformers import AutoModelForCausalLM

from trl_implicit_prm import ImplicitPRMConfig, ImplicitPRMTrainer
from trl_implicit_prm.trainers.model_card import render_model_card

ROWS = [
    {
        "prompt": f"Q: {a} + {b}?\n",
        "chosen": f"{a} + {b} = {a + b}.\n\nThe answer is {a + b}.",
        "rejected": f"{a} + {b} = {a + b + 1}.\n\nThe answer is {a + b + 1}.",
    }
    for a, b in [(1, 2), (3, 4), (5, 6)]
]


def _trainer(tiny_dir, tokenizer, tmp_path):
    args = cpu_args(
        ImplicitPRMConfig,
        tmp_path,
        logging_steps=1,
        per_device_train_batch_size=3,
        max_steps=1,
        beta=0.1,
        gradient_checkpointing=False,
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "llama")
    return ImplicitPRMTrainer(
        model,
        ref_model=str(tiny_dir / "llama-ref"),
        args=args,
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
    )


def test_save_model_elsewhere_keeps_the_users_readme_and_writes_a_prm_card(tiny_dir, tokenizer, tmp_path):
    trainer = _trainer(tiny_dir, tokenizer, tmp_path)
    trainer._model_id = str(tiny_dir / "llama")  # as if loaded from a path
    trainer.train()
    users = tmp_path / "out" / "README.md"
    users.write_text("# my notes about this run\n")
    final = tmp_path / "final"
    trainer.save_model(str(final))
    assert users.read_text() == "# my notes about this run\n"  # TRL's card used to overwrite, then move it
    card = (final / "README.md").read_text()
    assert "An **implicit process reward model** (PRM)" in card
    assert "DPO on correct × incorrect response pairs" in card
    assert f"| base model (πθ at the start) | `{tiny_dir / 'llama'}` |" in card
    assert f"| reference πref | `{(tiny_dir / 'llama-ref').resolve()}` |" in card
    assert "| β | `0.1` |" in card and '| step separator | `"\\n\\n"` |' in card
    assert "- format: `paired` rows, 3 after preparation" in card
    assert re.search(r"\| train_loss \| [0-9.]+ \|", card) and "| global step | 1 |" in card
    assert "base_model:" not in card  # a local folder is not a Hub id for the front matter
    assert "2412.01981" in card and "Free Process Rewards without Process Labels" in card
    assert "fine-tuned version of" not in card and "text-generation" not in card.replace(
        "not a chat or text-generation", ""
    )
    # The scoring snippet loads this checkpoint with its reference and runs as written.
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert f"from_pretrained({str(final.resolve())!r}".replace("'", '"') in snippet
    assert f'ref_model="{(tiny_dir / "llama-ref").resolve()}"' in snippet
    exec(compile(snippet, "model card", "exec"), {})


def test_card_prints_prompt_rendering_and_reference_variants():
    meta = {
        "beta": 0.05,
        "reference_free": False,
        "reference_model": "adapter-base",
        "step_separator": " ки\n",
        "trainer": "CETrainer",
        "loss_type": "ce",
        "prompt_format": "chat",
        "append_eos": True,
    }
    card = render_model_card(
        meta,
        model_name="m",
        model_path="org/m",
        base_model="meta-llama/Llama-3.1-8B",
        data_kind="unpaired",
        num_train_rows=None,
        tags=["trl", "trl"],
    )
    assert "base_model: meta-llama/Llama-3.1-8B" in card and card.count("- trl\n") == 1
    assert "cross-entropy on outcome labels" in card
    assert "| reference πref | the adapter's base model, with the adapters disabled |" in card
    assert '| prompt rendering | `"chat"` |' in card and "| EOS appended to responses | `true` |" in card
    assert '| step separator | `" ки\\n"` |' in card
    assert 'ProcessRewardComputer.from_pretrained("org/m")' in card
    free = render_model_card(
        {**meta, "reference_free": True, "reference_model": None},
        model_name="m",
        model_path="m",
        base_model=None,
        data_kind="unpaired",
        num_train_rows=4,
    )
    assert "reference_free=True" in free and "none (reference-free" in free
    assert "not recorded (loaded in memory)" in free and "base_model:" not in free
    assert "a chat prompt with the tokenizer's chat template" not in card  # recorded rendering wins
