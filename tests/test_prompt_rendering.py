"""Training and scoring see the same tokens: prompt rendering, EOS and empty prompts, recorded and applied."""

from __future__ import annotations

import json
import logging

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_implicit_prm import CEConfig, CETrainer
from trl_implicit_prm.cli import build_parser, main
from trl_implicit_prm.commands._errors import CommandError
from trl_implicit_prm.commands._models import computer_from_args
from trl_implicit_prm.data import DataFormatError, tokenize_example
from trl_implicit_prm.data.rendering import (
    PromptFormat,
    measure_prompt_format,
    override_prompt_format,
    template_sha256,
)
from trl_implicit_prm.evaluation import evaluate_process_errors
from trl_implicit_prm.evaluation.prm_scores import score_process_records
from trl_implicit_prm.inference import ProcessRewardComputer
from trl_implicit_prm.modeling import write_metadata

TRAIN_ARGS = dict(
    use_cpu=True,
    bf16=False,
    report_to=[],
    save_strategy="no",
    max_steps=1,
    learning_rate=1e-3,
    per_device_train_batch_size=2,
    beta=0.1,
    gradient_checkpointing=False,
    disable_tqdm=True,
    seed=0,
    loss_type="ce",
)
COMPLETIONS = ["First, 2 + 3 = 5.\n\nThe answer is 5.", "First, 2 + 3 = 6.\n\nThe answer is 6."]
PROBLEM = "What is 2 + 3?"  # a ProcessBench-style problem: no trailing whitespace
STEPS = ["First, 2 + 3 = 5.", "The answer is 5."]


def _train_and_save(tiny_dir, tokenizer, tmp_path, prompts, name):
    rows = [
        {"prompt": p, "completion": c, "label": float(i % 2 == 0)}
        for i, (p, c) in enumerate(zip(prompts, COMPLETIONS, strict=True))
    ]
    trainer = CETrainer(
        str(tiny_dir / "llama"),
        ref_model=str(tiny_dir / "llama-ref"),
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(rows),
        args=CEConfig(output_dir=str(tmp_path / name), **TRAIN_ARGS),
    )
    trainer.train()
    trainer.save_model(str(tmp_path / name))
    return trainer, tmp_path / name


@pytest.fixture(scope="module")
def text_ckpt(tiny_dir, tokenizer, tmp_path_factory):
    """A PRM trained on plain-text prompts that all end with a newline."""
    return _train_and_save(
        tiny_dir, tokenizer, tmp_path_factory.mktemp("text"), [PROBLEM + "\n", "Q: 4 + 4?\n"], "ckpt"
    )


@pytest.fixture(scope="module")
def chat_ckpt(tiny_dir, tokenizer, tmp_path_factory):
    """A PRM trained on chat prompts (one user message each)."""
    prompts = [[{"role": "user", "content": PROBLEM}], [{"role": "user", "content": "Q: 4 + 4?"}]]
    return _train_and_save(tiny_dir, tokenizer, tmp_path_factory.mktemp("chat"), prompts, "ckpt")


def _no_bos_tokenizer(tiny_dir):
    """The test tokenizer without its BOS post-processor, as Qwen's tokenizers are."""
    from tokenizers import processors

    tok = AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")
    tok.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    assert tok("7")["input_ids"] == tok("7", add_special_tokens=False)["input_ids"]
    return tok


# --- the record ---------------------------------------------------------------------------------------------


def test_text_checkpoint_records_rendering_and_scores_the_training_tokens(text_ckpt, tiny_dir):
    trainer, ckpt = text_ckpt
    meta = json.loads((ckpt / "implicit_prm.json").read_text())
    assert meta["prompt_format"] == {"kind": "text", "separator": "\n"} and meta["append_eos"] is True
    prc = ProcessRewardComputer.from_pretrained(ckpt, ref_model=tiny_dir / "llama-ref", device="cpu")
    assert prc.prompt_format == PromptFormat("text", separator="\n") and prc.append_eos is True
    encoded = prc.encode([PROBLEM + "\n", "Q: 4 + 4?\n"], COMPLETIONS)
    for row, enc in zip(trainer.train_dataset, encoded, strict=True):
        assert enc.input_ids.tolist() == row["input_ids"]
        assert enc.step_index.tolist() == row["step_index"]
    assert encoded[0].input_ids[-1] == prc.tokenizer.eos_token_id and encoded[0].step_index[-1] == 1


def test_chat_checkpoint_records_the_template(chat_ckpt, tiny_dir, tokenizer):
    trainer, ckpt = chat_ckpt
    meta = json.loads((ckpt / "implicit_prm.json").read_text())
    assert meta["prompt_format"] == {
        "kind": "chat",
        "system": None,
        "chat_template_sha256": template_sha256(tokenizer),
    }
    prc = ProcessRewardComputer.from_pretrained(ckpt, ref_model=tiny_dir / "llama-ref", device="cpu")
    # A bare problem is rendered as the training prompt was: the same ids as the training row.
    enc = prc.encode_one(prc.render_prompt(PROBLEM), COMPLETIONS[0])
    assert enc.input_ids.tolist() == trainer.train_dataset[0]["input_ids"]


def test_pre_tokenized_training_data_records_no_rendering(text_ckpt, tiny_dir, tokenizer, tmp_path, caplog):
    trainer, _ = text_ckpt
    with caplog.at_level(logging.WARNING):
        again = CETrainer(
            str(tiny_dir / "llama"),
            ref_model=str(tiny_dir / "llama-ref"),
            processing_class=tokenizer,
            train_dataset=trainer.train_dataset,
            args=CEConfig(output_dir=str(tmp_path / "again"), **TRAIN_ARGS),
        )
    meta = again._implicit_prm_metadata()
    assert "prompt_format" not in meta and "append_eos" not in meta
    assert any("already tokenized" in r.message for r in caplog.records)


def test_measured_prompt_format():
    assert measure_prompt_format(["a\n\n", "b \n", "c\n"], None) == PromptFormat("text", separator="\n")
    assert measure_prompt_format(["2 + 3 =", "x\n"], None) == PromptFormat("text", separator="")
    system = {"role": "system", "content": "Be brief."}
    chats = [[system, {"role": "user", "content": "a"}], [system, {"role": "user", "content": "b"}]]
    assert measure_prompt_format(chats, None) == PromptFormat("chat", system="Be brief.")
    assert measure_prompt_format([*chats, [{"role": "user", "content": "c"}]], None).system is None
    assert measure_prompt_format(["a\n", chats[0]], None) is None  # mixed: nothing recorded (warned)


def test_render_is_idempotent_and_chat_keeps_the_system_message():
    text = PromptFormat("text", separator="\n")
    assert text.render(PROBLEM) == PROBLEM + "\n" == text.render(text.render(PROBLEM))
    assert text.render("Q \n\n ") == "Q\n"  # trailing whitespace replaced by the separator
    assert PromptFormat("text").render("2 + 3 =") == "2 + 3 ="
    chat = PromptFormat("chat", system="S")
    assert chat.render("Q") == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert chat.render([{"role": "user", "content": "Q"}]) == [{"role": "user", "content": "Q"}]


def test_bad_record_is_refused_naming_the_file(tiny_dir, tokenizer, tmp_path):
    ckpt = tmp_path / "ckpt"
    AutoModelForCausalLM.from_pretrained(tiny_dir / "llama").save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    write_metadata(ckpt, beta=0.1, reference_free=True, prompt_format={"kind": "html"}, append_eos=True)
    with pytest.raises(ValueError, match=r"implicit_prm.json: 'prompt_format.kind' must be one of"):
        ProcessRewardComputer.from_pretrained(ckpt, device="cpu")
    write_metadata(ckpt, beta=0.1, reference_free=True, prompt_format={"kind": "text"}, append_eos=True)
    with pytest.raises(ValueError, match=r"implicit_prm.json: 'prompt_format.separator' must be a string"):
        ProcessRewardComputer.from_pretrained(ckpt, device="cpu")


def test_old_checkpoint_keeps_todays_behaviour_and_warns(tiny_dir, tokenizer, tmp_path, caplog):
    ckpt = tmp_path / "old"
    AutoModelForCausalLM.from_pretrained(tiny_dir / "llama").save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    write_metadata(
        ckpt,
        beta=0.1,
        reference_free=False,
        reference_model=str(tiny_dir / "llama-ref"),
        step_separator="\n\n",
    )
    with caplog.at_level(logging.WARNING):
        prc = ProcessRewardComputer.from_pretrained(ckpt, ref_model=tiny_dir / "llama-ref", device="cpu")
        ProcessRewardComputer.from_pretrained(ckpt, ref_model=tiny_dir / "llama-ref", device="cpu")
    assert prc.prompt_format is None and prc.append_eos is False
    assert sum("records no prompt rendering" in r.message for r in caplog.records) == 1
    assert sum("does not record whether training appended EOS" in r.message for r in caplog.records) == 1
    enc = prc.encode_one(PROBLEM, STEPS)
    assert enc.input_ids.tolist() == tokenize_example(tokenizer, PROBLEM, STEPS)["input_ids"]


# --- EOS ----------------------------------------------------------------------------------------------------


def test_eos_belongs_to_the_last_step_and_partial_responses_have_none(text_ckpt, tiny_dir):
    _, ckpt = text_ckpt
    prc = ProcessRewardComputer.from_pretrained(ckpt, ref_model=tiny_dir / "llama-ref", device="cpu")
    full = prc.score_one(PROBLEM, STEPS)
    partial = prc.score_one(PROBLEM, STEPS, complete=False, step_open=True)  # cut mid-step: nothing appended
    assert full.tokens[-1] == prc.tokenizer.eos_token and full.token_steps[-1] == 1
    assert prc.tokenizer.eos_token not in partial.tokens
    closed = prc.score_one(PROBLEM, STEPS, complete=False)  # more steps follow: the separator, not EOS
    assert prc.tokenizer.eos_token not in closed.tokens and "".join(closed.tokens).endswith(STEPS[1] + "\n\n")
    assert closed.step_rewards[0] == pytest.approx(full.step_rewards[0], abs=1e-6)
    assert len(full.tokens) == len(partial.tokens) + 1
    # Causal model: the EOS changes only the last step, by its own token reward.
    assert full.step_rewards[0] == pytest.approx(partial.step_rewards[0], abs=1e-6)
    assert full.step_rewards[1] == pytest.approx(partial.step_rewards[1] + full.token_rewards[-1], abs=1e-6)
    # A completion that already ends with EOS does not get a second one (as in TRL).
    twice = prc.score_one(PROBLEM, [STEPS[0], STEPS[1] + prc.tokenizer.eos_token])
    assert twice.tokens == full.tokens


# --- empty prompt without BOS -------------------------------------------------------------------------------


def test_empty_prompt_without_bos_is_refused_naming_the_row(tiny_dir, tmp_path):
    tok = _no_bos_tokenizer(tiny_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2")
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2-ref")
    prc = ProcessRewardComputer(policy, tok, ref_model=ref)
    with pytest.raises(DataFormatError, match=r"responses\[1\].*no prompt token precedes the completion"):
        prc.score(["Q\n", ""], ["7", "7"])
    assert prc.score_one("Q\n", "7").num_steps == 1
    rows = [
        {"prompt": "Q\n", "completion": "7", "label": 1.0},
        {"prompt": "", "completion": "8", "label": 0.0},
    ]
    with pytest.raises(
        DataFormatError, match=r"column 'prompt' row 1: no prompt token precedes the completion"
    ):
        CETrainer(
            policy,
            ref_model=ref,
            processing_class=tok,
            train_dataset=Dataset.from_list(rows),
            args=CEConfig(output_dir=str(tmp_path / "o"), **TRAIN_ARGS),
        )
    # With a BOS the empty prompt has one token, and the completion is scored in full.
    with_bos = AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")
    assert tokenize_example(with_bos, "", "7")["prompt_length"] == 1


# --- command line -------------------------------------------------------------------------------------------


def _records(path, problem=PROBLEM):
    rows = [
        {"problem": problem, "steps": STEPS, "label": -1},
        {"problem": problem, "steps": ["First, 2 + 3 = 6.", "The answer is 6."], "label": 0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_eval_steps_renders_problems_as_text_training_did(text_ckpt, tiny_dir, tmp_path):
    _, ckpt = text_ckpt
    records = _records(tmp_path / "pb.jsonl")
    args = build_parser().parse_args(
        [
            "eval-steps",
            "--model",
            str(ckpt),
            "--ref-model",
            str(tiny_dir / "llama-ref"),
            "--data",
            str(tmp_path / "pb.jsonl"),
        ]
    )
    prc = computer_from_args(args)
    # The boundary: the prompt's tokens are those of "problem + newline", the steps start a fresh token.
    enc = prc.encode_one(prc.render_prompt(PROBLEM), STEPS)
    prompt_ids = prc.tokenizer(PROBLEM + "\n")["input_ids"]
    assert enc.input_ids[: enc.prompt_length].tolist() == prompt_ids
    first = prc.tokenizer.decode(enc.input_ids[enc.prompt_length : enc.prompt_length + 1])
    assert first and "First".startswith(first)
    assert prc.tokenizer.decode(enc.input_ids[enc.prompt_length - 1 : enc.prompt_length]) == "\n"
    glued = tokenize_example(prc.tokenizer, PROBLEM, STEPS)  # what eval-steps used to score: "...?First, ..."
    assert glued["input_ids"][: glued["prompt_length"]] == prompt_ids[:-1]  # no newline: unlike training
    expected = prc.score([PROBLEM + "\n"] * 2, [r["steps"] for r in records])
    assert score_process_records(prc, records) == [r.step_rewards for r in expected]


def test_chat_trained_prm_is_evaluated_by_the_cli(chat_ckpt, tiny_dir, tmp_path, caplog):
    _, ckpt = chat_ckpt
    records = _records(tmp_path / "pb.jsonl")
    out = tmp_path / "steps.json"
    argv = [
        "eval-steps",
        "--model",
        str(ckpt),
        "--ref-model",
        str(tiny_dir / "llama-ref"),
        "--data",
        str(tmp_path / "pb.jsonl"),
        "--threshold",
        "0",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    prc = ProcessRewardComputer.from_pretrained(ckpt, ref_model=tiny_dir / "llama-ref", device="cpu")
    chat = [[{"role": "user", "content": PROBLEM}]] * 2
    scores = [r.step_rewards for r in prc.score(chat, [r["steps"] for r in records])]
    expected = evaluate_process_errors(records, scores, threshold=0.0)
    result = json.loads(out.read_text())["results"]["splits"]["pb"]
    assert result["acc_erroneous"] == pytest.approx(expected.acc_erroneous)
    assert result["acc_correct"] == pytest.approx(expected.acc_correct)
    assert score_process_records(computer_from_args(build_parser().parse_args(argv)), records) == scores
    # Forcing plain text on a chat-trained PRM is done, with a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        forced = computer_from_args(build_parser().parse_args([*argv, "--no-chat-prompt"]))
    assert forced.prompt_format == PromptFormat("text")
    assert any("trained on chat prompts" in r.message for r in caplog.records)


def test_string_prompt_meets_chat_trained_prm_warns_once(chat_ckpt, tiny_dir, caplog):
    _, ckpt = chat_ckpt
    prc = ProcessRewardComputer.from_pretrained(ckpt, ref_model=tiny_dir / "llama-ref", device="cpu")
    with caplog.at_level(logging.WARNING):
        as_string = prc.score([PROBLEM, PROBLEM], [STEPS, STEPS])
    assert sum("string prompt was given to a PRM trained on chat" in r.message for r in caplog.records) == 1
    as_chat = prc.score_one([{"role": "user", "content": PROBLEM}], STEPS)
    assert as_string[0].step_rewards == as_chat.step_rewards


def test_cli_overrides(text_ckpt, tiny_dir, tmp_path, capsys):
    _, ckpt = text_ckpt
    base = [
        "score",
        "--model",
        str(ckpt),
        "--ref-model",
        str(tiny_dir / "llama-ref"),
        "--input",
        "x.jsonl",
        "--output",
        "y.jsonl",
    ]
    prc = computer_from_args(
        build_parser().parse_args([*base, "--prompt-separator", r"\n\n", "--no-append-eos"])
    )
    assert prc.prompt_format == PromptFormat("text", separator="\n\n") and prc.append_eos is False
    chat = computer_from_args(build_parser().parse_args([*base, "--chat-prompt"]))
    assert chat.prompt_format.is_chat
    # Contradictory flags: a user error (the command prints it and exits 2, see tests/test_cli_bad_input.py).
    with pytest.raises(CommandError, match="--prompt-separator applies to plain-text prompts"):
        computer_from_args(build_parser().parse_args([*base, "--chat-prompt", "--prompt-separator", "x"]))
    assert override_prompt_format(None) is None
