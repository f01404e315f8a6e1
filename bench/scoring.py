"""Benchmark `ProcessRewardComputer.score` against the bare forward passes and against per-prefix scoring.

What is measured, in ONE run, on CPU (torch.set_num_threads(2)), with a Llama built from a config (hidden 512,
8 layers, 8 heads, MLP 1376, vocabulary 32000, float32, random weights; no download) as policy and a second
one as reference:

(a) `score` wall time over the *floor*: the plain forward passes `model(input_ids, attention_mask)` of the policy
    and the reference on exactly the padded batches `score` builds (same length sorting and token budget),
    tensors prepared in advance. Target: <= 1.15.
    Also reported: `score` over the log-prob code alone on the same batches (`compact` head, no tokenization,
    caching or results): the pipeline's own overhead.
(b) speed-up of `score` over per-prefix scoring, which runs for every response one forward (policy and
    reference) per step on the prefix ending at that step, re-tokenizing each prefix as per-prefix PRMs do, with
    the same batching and the same log-prob code. Measured on the first `--prefix-subset` responses (both methods on
    the same subset) to keep the run short. Expected >= 4x.
(c) peak memory of `score` over that of the floor: the peak resident set size above the phase's starting RSS
    (after `gc.collect()` and glibc `malloc_trim(0)`), sampled every 2 ms by a thread. Target: <= 1.2x.

Data: a word-level tokenizer over 32000 synthetic words (so random words are random token ids, one token each),
64 responses of 8 steps, step lengths uniform in [8, 24] tokens (mean 16; shorter than typical math steps to keep
the run within minutes on 2 shared cores) and prompts of [16, 32] tokens, so responses differ in length (~155
tokens) and batches need padding. Timings are the best of `--repeats` interleaved runs (the machine is shared;
every run and the process CPU times are reported too).

(d) with `--data-parallel N`: instead of (a)-(c), the `trl-implicit-prm score` command on the same model (saved to a
    temporary folder) and `--dp-responses` responses, run as one process (all `--threads` threads) and under
    `accelerate launch --num_processes N` (the threads split between the processes). The outputs are compared
    byte for byte, which holds only with equal threads per process (float reductions depend on the thread count).
    Each command's start-up (imports, model loading) is measured on a 2-row input and subtracted; reported:
    responses per second of each and their ratio. The result is merged into the results JSON as
    `d_data_parallel`.

Usage: `python bench/scoring.py` (full, ~4-5 min on 2 cores) or `python bench/scoring.py --quick`;
`python bench/scoring.py --data-parallel 2` for (d).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trl_implicit_prm.inference import ProcessRewardComputer, ReferenceCache
from trl_implicit_prm.inference.batching import collate, plan_batches
from trl_implicit_prm.logps import completion_logps, resolve_logps_method

RESULTS = Path(__file__).resolve().parent / "results" / "scoring.json"
VOCAB = 32000
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def build_tokenizer():
    """Word-level fast tokenizer: "w4" ... "w31999" are one token each; BOS prepended; offsets supported."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), VOCAB)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=4096,
    )


def build_model(seed: int, args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        intermediate_size=args.intermediate,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def make_data(args):
    rng = random.Random(args.seed)

    def words(n):
        return " ".join(f"w{rng.randrange(len(SPECIALS), VOCAB)}" for _ in range(n))

    prompts = [words(rng.randint(16, 32)) + "\n" for _ in range(args.responses)]
    responses = [
        [words(rng.randint(args.step_tokens - 8, args.step_tokens + 8)) for _ in range(args.steps)]
        for _ in range(args.responses)
    ]
    return prompts, responses


# ------------------------------------------------------------------------------------------------- measurement
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Measure:
    """Wall time and peak RSS above the starting RSS of a block."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval

    def __enter__(self):
        _trim()
        self.start_rss = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = time.process_time() - self.c0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.peak_delta = self.peak - self.start_rss


# -------------------------------------------------------------------------------------------------- the phases
def floor_batches(prc: ProcessRewardComputer, prompts, responses):
    """The padded batches `score` runs, prepared in advance (tokenization is not part of the floor)."""
    encoded = prc.encode(prompts, responses)
    plan = plan_batches([e.length for e in encoded], prc.max_batch_tokens, prc.batch_size)
    return [collate([encoded[i] for i in batch], prc.tokenizer.pad_token_id) for batch in plan]


def run_floor(prc, batches):
    with torch.inference_mode():
        for b in batches:
            for model in (prc.model, prc.ref_model):
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])


def run_compact_floor(prc, batches, method=None):
    """The model work inside `score`: the same batches through the same log-prob code, nothing else."""
    with torch.inference_mode():
        for b in batches:
            for model in (prc.model, prc.ref_model):
                chosen = method or prc.logps_method
                completion_logps(
                    model, b["input_ids"], b["attention_mask"], b["completion_mask"], method=chosen
                )


def run_score(prc, prompts, responses):
    prc.reference_cache = ReferenceCache()  # cold cache: the reference runs, as on first use
    return prc.score(prompts, responses, show_progress=False)


def run_prefixes(prc, prompts, responses):
    """Per-prefix scoring: K forwards per response, on re-tokenized prefixes ending at each step."""
    tok, beta = prc.tokenizer, prc.beta
    seqs = []
    for prompt, steps in zip(prompts, responses, strict=True):
        prompt_len = len(tok(prompt)["input_ids"])
        for k in range(1, len(steps) + 1):
            ids = tok(prompt + "\n\n".join(steps[:k]))["input_ids"]
            seqs.append((ids, prompt_len))
    lengths = [len(ids) for ids, _ in seqs]
    q = [0.0] * len(seqs)
    with torch.inference_mode():
        for batch in plan_batches(lengths, prc.max_batch_tokens, prc.batch_size):
            width = max(lengths[i] for i in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            attn = torch.zeros_like(ids)
            cmask = torch.zeros_like(ids)
            for b, i in enumerate(batch):
                row, p = seqs[i]
                ids[b, : len(row)] = torch.tensor(row)
                attn[b, : len(row)] = 1
                cmask[b, p : len(row)] = 1
            logps = []
            for model in (prc.model, prc.ref_model):
                logps.append(completion_logps(model, ids, attn, cmask, method=prc.logps_method).double())
            values = (beta * (logps[0] - logps[1])).sum(-1).tolist()
            for b, i in enumerate(batch):
                q[i] = values[b]
    return q


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (16 responses of 4 steps, 1 repeat)")
    parser.add_argument("--responses", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--step-tokens", type=int, default=16, help="mean tokens per step (uniform +-8)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--prefix-subset", type=int, default=8, help="responses used for the per-prefix comparison (b)"
    )
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default: the library's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--compare-fused",
        action="store_true",
        help="also time TRL's fused LM head (the trainers' path) on the same batches",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--data-parallel",
        type=int,
        default=None,
        metavar="N",
        help="measure (d): the score command with N processes against one process",
    )
    parser.add_argument("--dp-responses", type=int, default=256, help="responses scored in (d)")
    args = parser.parse_args(argv)
    if args.data_parallel:
        return data_parallel(args)
    if args.quick:
        args.responses, args.steps, args.repeats, args.prefix_subset = 16, 4, 1, 8

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    tokenizer = build_tokenizer()
    policy, reference = build_model(args.seed, args), build_model(args.seed + 1, args)
    prc = ProcessRewardComputer(
        policy, tokenizer, ref_model=reference, beta=0.05, max_batch_tokens=args.max_batch_tokens
    )
    prompts, responses = make_data(args)
    batches = floor_batches(prc, prompts, responses)
    n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    print(
        f"{args.responses} responses x {args.steps} steps: {n_tokens} tokens ({padded} padded) in "
        f"{len(batches)} batches; logps method {resolve_logps_method(policy, prc.logps_method, prc.device)}; "
        f"{args.threads} threads; load average {load_start[0]:.2f}",
        flush=True,
    )

    # Warm-up (first-call allocations, oneDNN kernels) on one small batch, not measured.
    run_score(prc, prompts[:2], responses[:2])
    run_floor(prc, [collate(prc.encode(prompts[:2], responses[:2]), 0)])

    floor_runs, score_runs = [], []
    for rep in range(args.repeats):
        with Measure() as m:
            run_floor(prc, batches)
        floor_runs.append(m)
        with Measure() as m:
            results = run_score(prc, prompts, responses)
        score_runs.append(m)
        print(
            f"  repeat {rep + 1}: floor {floor_runs[-1].seconds:.2f}s (cpu {floor_runs[-1].cpu_seconds:.2f}s), "
            f"score {score_runs[-1].seconds:.2f}s (cpu {score_runs[-1].cpu_seconds:.2f}s)",
            flush=True,
        )
    with Measure() as m_compact:
        run_compact_floor(prc, batches)
    print(f"  log-prob code alone on the same batches: {m_compact.seconds:.2f}s", flush=True)
    fused = None
    if args.compare_fused:
        with Measure() as m_fused:
            run_compact_floor(prc, batches, method="fused")
        fused = {"seconds": m_fused.seconds, "peak_rss_mib": m_fused.peak_delta / 2**20}
        print(f"  TRL fused LM head on the same batches: {m_fused.seconds:.2f}s", flush=True)
    t0 = time.perf_counter()
    prc.encode(prompts, responses)
    encode_s = time.perf_counter() - t0

    sub = slice(0, min(args.prefix_subset, args.responses))
    with Measure() as m_sub:
        sub_results = run_score(prc, prompts[sub], responses[sub])
    with Measure() as m_prefix:
        q_prefix = run_prefixes(prc, prompts[sub], responses[sub])
    # Sanity: per-prefix q at each step end equals score's q-values (same tokens: one word per token).
    q_score = [q for r in sub_results for q in r.q_values]
    max_q_diff = max(abs(a - b) for a, b in zip(q_prefix, q_score, strict=True))

    floor_s, score_s = min(m.seconds for m in floor_runs), min(m.seconds for m in score_runs)
    floor_mem = max(m.peak_delta for m in floor_runs)
    score_mem = max(m.peak_delta for m in score_runs)
    report = {
        "config": {
            **{k: v for k, v in vars(args).items() if k != "output"},
            "vocab": VOCAB,
            "tokens": n_tokens,
            "padded_tokens": padded,
            "batches": len(batches),
            "max_batch_tokens": prc.max_batch_tokens,
            "logps_method": resolve_logps_method(policy, prc.logps_method, prc.device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_start": load_start[0],
            "load_average_end": os.getloadavg()[0],
        },
        "a_time": {
            "floor_s": floor_s,
            "score_s": score_s,
            "ratio": score_s / floor_s,
            "target": 1.15,
            "floor_runs_s": [m.seconds for m in floor_runs],
            "score_runs_s": [m.seconds for m in score_runs],
            "median_ratio": statistics.median(
                s.seconds / f.seconds for f, s in zip(floor_runs, score_runs, strict=True)
            ),
            "floor_cpu_s": min(m.cpu_seconds for m in floor_runs),
            "score_cpu_s": min(m.cpu_seconds for m in score_runs),
            "cpu_ratio": min(m.cpu_seconds for m in score_runs) / min(m.cpu_seconds for m in floor_runs),
            "tokenization_s": encode_s,
            "logps_only_s": m_compact.seconds,
            "ratio_to_logps_only": score_s / m_compact.seconds,
            "logps_only_cpu_s": m_compact.cpu_seconds,
            "cpu_ratio_to_logps_only": min(m.cpu_seconds for m in score_runs) / m_compact.cpu_seconds,
        },
        "b_prefix": {
            "responses": sub.stop,
            "score_s": m_sub.seconds,
            "per_prefix_s": m_prefix.seconds,
            "speedup": m_prefix.seconds / m_sub.seconds,
            "expected": 4.0,
            "score_cpu_s": m_sub.cpu_seconds,
            "per_prefix_cpu_s": m_prefix.cpu_seconds,
            "cpu_speedup": m_prefix.cpu_seconds / m_sub.cpu_seconds,
            "per_prefix_peak_rss_mib": m_prefix.peak_delta / 2**20,
            "max_q_difference": max_q_diff,
        },
        "c_memory": {
            "floor_peak_rss_mib": floor_mem / 2**20,
            "score_peak_rss_mib": score_mem / 2**20,
            "ratio": score_mem / floor_mem,
            "target": 1.2,
            "logps_only_peak_rss_mib": m_compact.peak_delta / 2**20,
            "method": "peak RSS above the phase's starting RSS (after gc + malloc_trim), sampled every 2 ms",
        },
        "trl_fused_logps": fused,
        "wall_s": time.perf_counter() - t_start,
        "num_results": len(results),
    }
    rows = [
        (
            "(a) score / floor wall time",
            f"{score_s:.2f}s / {floor_s:.2f}s",
            f"{score_s / floor_s:.3f}",
            "<= 1.15",
        ),
        (
            "    same, process CPU time",
            f"{report['a_time']['score_cpu_s']:.2f}s / {report['a_time']['floor_cpu_s']:.2f}s",
            f"{report['a_time']['cpu_ratio']:.3f}",
            "",
        ),
        (
            "    score / log-prob code alone",
            f"{score_s:.2f}s / {m_compact.seconds:.2f}s",
            f"{score_s / m_compact.seconds:.3f}",
            "",
        ),
        (
            "    same, process CPU time",
            f"{report['a_time']['score_cpu_s']:.2f}s / {m_compact.cpu_seconds:.2f}s",
            f"{report['a_time']['cpu_ratio_to_logps_only']:.3f}",
            "",
        ),
        ("    tokenization inside score", f"{encode_s * 1000:.0f} ms", f"{encode_s / score_s:.1%}", ""),
        (
            f"(b) per-prefix / score ({sub.stop} resp.)",
            f"{m_prefix.seconds:.2f}s / {m_sub.seconds:.2f}s",
            f"{m_prefix.seconds / m_sub.seconds:.2f}x",
            ">= 4x",
        ),
        (
            "    same, process CPU time",
            f"{m_prefix.cpu_seconds:.2f}s / {m_sub.cpu_seconds:.2f}s",
            f"{m_prefix.cpu_seconds / m_sub.cpu_seconds:.2f}x",
            "",
        ),
        (
            "(c) score / floor peak RSS",
            f"{score_mem / 2**20:.0f} / {floor_mem / 2**20:.0f} MiB",
            f"{score_mem / floor_mem:.3f}",
            "<= 1.2",
        ),
    ]
    print(f"\n{'measure':40s} {'values':>24s} {'ratio':>9s} {'target':>8s}")
    for name, values, ratio, target in rows:
        print(f"{name:40s} {values:>24s} {ratio:>9s} {target:>8s}")
    print(f"per-prefix q vs score q: max |diff| = {max_q_diff:.2e}; total wall {report['wall_s']:.0f}s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def data_parallel(args) -> int:
    """(d): responses per second of `trl-implicit-prm score` with N processes against one process."""
    import socket
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    n = args.data_parallel
    if n < 2:
        raise SystemExit("--data-parallel needs N >= 2")
    args.responses = args.dp_responses
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = build_tokenizer()
        for name, seed in (("policy", args.seed), ("reference", args.seed + 1)):
            build_model(seed, args).save_pretrained(tmp / name)
            tokenizer.save_pretrained(tmp / name)
        prompts, responses = make_data(args)
        for name, count in (("rows", len(prompts)), ("startup", 2)):
            with open(tmp / f"{name}.jsonl", "w") as f:
                for p, r in zip(prompts[:count], responses[:count], strict=True):
                    f.write(json.dumps({"prompt": p, "steps": r}) + "\n")
        bin_dir = Path(sys.executable).parent

        def command(processes: int, rows: str, out: str) -> tuple[list[str], dict[str, str]]:
            score = [
                "-m",
                "trl_implicit_prm.cli",
                "score",
                "--model",
                str(tmp / "policy"),
                "--ref-model",
                str(tmp / "reference"),
                "--input",
                str(tmp / f"{rows}.jsonl"),
                "--output",
                str(tmp / out),
                "--device",
                "cpu",
            ]
            threads = max(1, args.threads // processes)
            env = {
                **os.environ,
                "PYTHONPATH": str(repo),
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": str(threads),
            }
            if processes == 1:
                return [sys.executable, *score], env
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            return [
                str(bin_dir / "accelerate"),
                "launch",
                "--config_file",
                str(repo / "recipes" / "accelerate" / "multi_gpu.yaml"),
                "--num_processes",
                str(processes),
                "--mixed_precision",
                "no",
                "--main_process_port",
                str(port),
                *score,
            ], env

        times: dict[int, dict[str, float]] = {}
        for processes in (1, n):
            startup = _timed(*command(processes, "startup", f"startup-{processes}.jsonl"))
            total = _timed(*command(processes, "rows", f"out-{processes}.jsonl"))
            times[processes] = {
                "startup_s": startup,
                "total_s": total,
                "scoring_s": max(total - startup, 1e-9),
                "responses_per_s": args.responses / max(total - startup, 1e-9),
            }
            print(
                f"  {processes} process(es): {total:.1f}s in all, {startup:.1f}s start-up -> "
                f"{times[processes]['responses_per_s']:.2f} responses/s",
                flush=True,
            )
        identical = (tmp / "out-1.jsonl").read_bytes() == (tmp / f"out-{n}.jsonl").read_bytes()
    ratio = times[n]["responses_per_s"] / times[1]["responses_per_s"]
    result = {
        "processes": n,
        "responses": args.responses,
        "steps": args.steps,
        "threads_total": args.threads,
        "one_process": times[1],
        "n_processes": times[n],
        "throughput_ratio": ratio,
        "threads_per_process": {"1": args.threads, str(n): max(1, args.threads // n)},
        "byte_identical_output": identical,
        "byte_identity_note": "expected only when every process uses the same number of intra-op threads as "
        "the one-process run (float reductions depend on it)",
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
    }
    print(
        f"\n{'(d) ' + str(n) + ' processes / 1 process, responses/s':40s} "
        f"{times[n]['responses_per_s']:>10.2f} / {times[1]['responses_per_s']:<10.2f} {ratio:>9.2f}x "
        f"(byte-identical output: {identical})"
    )
    report = json.loads(args.output.read_text()) if args.output.is_file() else {}
    report["d_data_parallel"] = result
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
