"""Data-parallel scoring that resumes: shard batches across processes, write in input order, skip finished rows.

Under `accelerate launch --num_processes N` (or torchrun) every process runs the same command. Each one:

1. plans the batches of ALL rows exactly as one process would (:func:`~.batching.plan_batches`), so that every row
   is scored in the same batch whatever N is: the output is byte-identical to a one-process run;
2. takes its share of the batches, balanced by padded tokens (:func:`assign_batches`, longest-processing-time
   first: each batch goes to the process with the least work so far);
3. skips the batches whose rows are already in the parts folder (a previous, killed run), scores the others
   and appends each row, as `index<TAB>json`, to its own part file `<output>.parts/rank<r>.jsonl`, flushed per
   batch;
4. after a barrier, process 0 writes `<output>` in input order from the parts (every row exactly once) and
   removes the parts folder.

A killed run leaves the parts folder; rerunning the same command (any N) scores only the missing rows. A line
cut short by the kill (no final newline) does not count and is overwritten. The folder records the input's
fingerprint and the scoring settings (`manifest.json`); a rerun with a different input or settings is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .batching import plan_batches

__all__ = [
    "DistributedContext",
    "assign_batches",
    "distributed_context",
    "read_parts",
    "run_manifest",
    "score_candidates_to_file",
    "score_to_file",
]

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DistributedContext:
    """This process's rank, the number of processes, its device, and a barrier across them."""

    rank: int
    world_size: int
    device: str | None
    barrier: Callable[[], None]

    @property
    def is_main(self) -> bool:
        """Whether this is the process that writes outputs."""
        return self.rank == 0


def distributed_context(device: str | None = None) -> DistributedContext:
    """The context of `accelerate launch` / torchrun (`WORLD_SIZE` > 1), else a single process (no barrier).

    The processes run on CPU (gloo) when `device` is "cpu" or no GPU is visible; otherwise each takes its GPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistributedContext(0, 1, None, lambda: None)
    import torch
    from accelerate import PartialState

    cpu = (device is not None and device.startswith("cpu")) or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes <= 1:
        raise RuntimeError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but accelerate sees one process")
    return DistributedContext(
        state.process_index, state.num_processes, "cpu" if cpu else str(state.device), state.wait_for_everyone
    )


def assign_batches(
    batches: Sequence[Sequence[int]], lengths: Sequence[int], world_size: int
) -> list[list[int]]:
    """Batch indices per process, balanced by padded tokens (rows × longest row of each batch).

    Greedy longest-first: batches in decreasing cost (ties: earlier batch first) go to the process with the
    least assigned cost (ties: lowest rank). Deterministic, so every process computes the same assignment.

    Example:

    ```python
    >>> assign_batches([[0], [1, 2], [3]], lengths=[10, 4, 4, 3], world_size=2)
    [[0], [1, 2]]

    ```
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    cost = [len(b) * max(lengths[i] for i in b) for b in batches]
    order = sorted(range(len(batches)), key=lambda k: (-cost[k], k))
    load = [0] * world_size
    out: list[list[int]] = [[] for _ in range(world_size)]
    for k in order:
        rank = min(range(world_size), key=lambda r: (load[r], r))
        out[rank].append(k)
        load[rank] += cost[k]
    return [sorted(ks) for ks in out]


def _complete_lines(path: Path) -> list[str]:
    """The newline-terminated lines of a part file (a trailing fragment from a kill is ignored)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return data[:end].decode("utf-8").splitlines()


def read_parts(parts: Path) -> dict[int, str]:
    """`{row index: serialized row}` from every complete line of every part file; a row twice is an error."""
    done: dict[int, str] = {}
    for path in sorted(parts.glob("rank*.jsonl")):
        for line_no, line in enumerate(_complete_lines(path), start=1):
            index_text, sep, text = line.partition("\t")
            if not sep or not index_text.isdigit():
                raise ValueError(
                    f"{path}:{line_no}: not a part line (index<TAB>json); remove {parts} to restart"
                )
            index = int(index_text)
            if index in done and done[index] != text:
                raise ValueError(
                    f"{path}:{line_no}: row {index} is in the parts twice, with different scores"
                )
            done[index] = text
    return done


def _truncate_to_last_line(path: Path) -> None:
    if path.is_file():
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with path.open("r+b") as handle:
                handle.truncate(end)


def _check_manifest(parts: Path, manifest: Mapping[str, Any], ctx: DistributedContext) -> None:
    path = parts / MANIFEST
    if ctx.is_main:
        parts.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    ctx.barrier()
    recorded = json.loads(path.read_text(encoding="utf-8"))
    if recorded != json.loads(json.dumps(manifest, sort_keys=True)):
        changed = sorted(k for k in set(recorded) | set(manifest) if recorded.get(k) != manifest.get(k))
        raise ValueError(
            f"{parts} holds the rows of an earlier run with different {changed}; rerun with the same input and "
            f"settings to resume, or remove {parts} to start again"
        )


def run_manifest(prc: Any, input_path: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    """What identifies a scoring run for resuming: the input file's SHA-256 and the scoring settings."""
    from trl_implicit_prm.evaluation.records import file_sha256

    return {
        "input_sha256": file_sha256(input_path),
        "reference": prc.reference_id,
        "beta": prc.beta,
        "step_separator": prc.step_separator,
        "max_length": prc.max_length,
        "truncation": prc.truncation,
        "max_batch_tokens": prc.max_batch_tokens,
        "batch_size": prc.batch_size,
        "prompt_format": None if prc.prompt_format is None else prc.prompt_format.to_metadata(),
        "append_eos": prc.append_eos,
        **extra,
    }


def score_to_file(
    prc: Any,
    encoded: Sequence[Any],
    output: str | os.PathLike,
    serialize: Callable[[int, Any], str],
    *,
    manifest: Mapping[str, Any],
    ctx: DistributedContext | None = None,
    show_progress: bool = False,
) -> dict[str, int]:
    """Score `encoded` (one per output row) across the processes of `ctx` and write `output` in input order.

    `serialize(index, result)` gives row `index`'s output line (without newline); it must not contain a newline.
    `manifest` (JSON-able: the input's hash, the settings) identifies the run for resuming.
    Returns `{"rows", "scored_here", "resumed"}`: the rows in the output, those this process scored now, and
    those found already done.
    """
    ctx = ctx or distributed_context()
    output = Path(output)
    parts = output.with_name(output.name + ".parts")
    _check_manifest(parts, {**manifest, "rows": len(encoded)}, ctx)
    mine = parts / f"rank{ctx.rank}.jsonl"
    _truncate_to_last_line(mine)
    ctx.barrier()  # every process sees the same finished rows
    done = read_parts(parts)
    already = len(done)
    ctx.barrier()  # nobody appends before everyone has read: all processes plan from the same finished rows
    lengths = [e.length for e in encoded]
    batches = plan_batches(lengths, prc.max_batch_tokens, prc.batch_size)
    todo = [b for b in batches if not all(i in done for i in b)]
    assigned = assign_batches(todo, lengths, ctx.world_size)[ctx.rank]
    tasks = [todo[k] for k in assigned]
    scored = _score_batches(prc, encoded, tasks, done, mine, serialize, show_progress, ctx.rank)
    ctx.barrier()
    if ctx.is_main:
        _merge_parts(parts, output, len(encoded))
    ctx.barrier()
    return {"rows": len(encoded), "scored_here": scored, "resumed": already}


def _score_batches(
    prc: Any,
    encoded: Sequence[Any],
    batches: list[list[int]],
    done: Mapping[int, str],
    part: Path,
    serialize: Callable[[int, Any], str],
    show_progress: bool,
    rank: int,
) -> int:
    """Score this process's batches, appending `index<TAB>line` rows to its part file; returns the rows written."""
    from tqdm.auto import tqdm

    scored = 0
    with (
        part.open("a", encoding="utf-8") as handle,
        tqdm(total=sum(map(len, batches)), disable=not show_progress, desc=f"Scoring (rank {rank})") as bar,
    ):
        for batch in batches:
            results = prc.score_encoded([encoded[i] for i in batch], show_progress=False)
            lines = []
            for i, result in zip(batch, results, strict=True):
                if i in done:  # a batch cut short by a kill: its finished rows are not written twice
                    continue
                text = serialize(i, result)
                if "\n" in text:
                    raise ValueError(f"serialize() returned a line break for row {i}")
                lines.append(f"{i}\t{text}\n")
            handle.write("".join(lines))
            handle.flush()
            scored += len(lines)
            bar.update(len(batch))
    return scored


def _merge_parts(parts: Path, output: Path, n_rows: int) -> None:
    """Write the finished rows of every part file to `output` in input order (atomically), then drop the parts."""
    done = read_parts(parts)
    missing = [i for i in range(n_rows) if i not in done]
    if missing:
        raise RuntimeError(f"rows {missing[:10]} were not scored by any process; rerun to complete them")
    tmp = output.with_name(output.name + ".tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8") as handle:
        for i in range(n_rows):
            handle.write(done[i] + "\n")
    os.replace(tmp, output)
    shutil.rmtree(parts)


def score_candidates_to_file(
    prc: Any,
    problems: Sequence[Mapping[str, Any]],
    aggregations: Sequence[str],
    scores_file: str | os.PathLike,
    *,
    manifest: Mapping[str, Any],
    ctx: DistributedContext | None = None,
) -> dict[str, list] | None:
    """Best-of-N candidate scores computed by every process of `ctx`, resumable like :func:`score_to_file`.

    Writes one line per scorable candidate (`[score per aggregation]`) to `scores_file`, then returns, in the
    main process, `{aggregation: per-problem lists of per-candidate scores}` as
    :func:`~trl_implicit_prm.evaluation.prm_scores.score_candidates` does (-inf for a candidate with nothing to
    score); None in the other processes.
    """
    import math

    from trl_implicit_prm.evaluation.prm_scores import scorable

    ctx = ctx or distributed_context()
    flat = [(p["problem"], c["response"]) for p in problems for c in p["candidates"]]
    ok = [i for i, (_, r) in enumerate(flat) if scorable(r)]
    encoded = prc.encode([flat[i][0] for i in ok], [flat[i][1] for i in ok])
    score_to_file(
        prc,
        encoded,
        scores_file,
        lambda _, r: json.dumps([r.aggregate(how) for how in aggregations]),
        manifest={**manifest, "aggregations": list(aggregations)},
        ctx=ctx,
    )
    if not ctx.is_main:
        return None
    lines = Path(scores_file).read_text(encoding="utf-8").splitlines()
    by_index = {i: json.loads(line) for i, line in zip(ok, lines, strict=True)}
    out: dict[str, list] = {how: [] for how in aggregations}
    k = 0
    for p in problems:
        for a, how in enumerate(aggregations):
            out[how].append(
                [
                    by_index[k + j][a] if (k + j) in by_index else -math.inf
                    for j in range(len(p["candidates"]))
                ]
            )
        k += len(p["candidates"])
    return out
