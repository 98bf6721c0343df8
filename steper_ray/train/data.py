"""Step-wise training data: tokenisation with completion-only labels, passage trimming, and a
batch plan that groups similar lengths and puts every task into every optimizer step.

The prompt is the student's view of the step rendered by its prompt builder (completion or chat
layout) and tokenised as one string, exactly as at inference; the completion follows it. Labels
are -100 on prompt tokens (``target: next``) or only on the passages/question part (``target:
cumulative``: the reasoning so far in the answer field carries loss too).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steper_ray.reasoning.prompts import PromptBuilder, PromptPassage, StepState, encode_prompt, student_prompt
from steper_ray.train.loss import IGNORE, TASKS, label_target

_BLOCK = re.compile(r"(?=Wikipedia Title: )")


@dataclass(frozen=True)
class Encoded:
    id: str
    task: int  # index into TASKS
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_targets(self) -> int:
        """Tokens that carry loss (labels after the first position, as the shifted CE counts them)."""
        return sum(1 for t in self.labels[1:] if t != IGNORE)


def read_example_rows(examples: str) -> list[dict]:
    """Every step example row of ``examples`` (a Parquet file, a directory of parts, or a URI
    pyarrow reads, e.g. ``s3://``), in file order.

    Each worker reads the whole file itself and keeps its share (``shard_rows``): the examples
    are small (one row per reasoning step), and a Ray Data read per worker took 46 s of a
    189 s two-step run (2 busy cores, 6 rows), nearly all of it task start-up. Raises
    OSError/ArrowInvalid for a missing or unreadable file (the trainer checks the path before
    any worker starts)."""
    import pyarrow.dataset as pads

    return pads.dataset(examples, format="parquet").to_table().to_pylist()


def shard_rows(rows: Sequence[dict], rank: int, world_size: int) -> list[dict]:
    """This worker's rows: order all rows by a hash of their id and deal them out round-robin.
    Balanced (sizes differ by at most one) and the same on every run, so a resumed run
    continues over the same data in the same order."""
    def key(r: dict) -> str:
        return hashlib.md5(str(r["id"]).encode()).hexdigest()

    ordered = sorted(rows, key=key)
    return ordered[rank::world_size]


def split_prompt(prompt: str) -> tuple[list[str], str]:
    """(passage blocks, the rest starting at 'Q: ') of a completion-layout prompt."""
    q = prompt.rfind("Q: ")
    head, tail = prompt[:q], prompt[q:]
    return [b for b in _BLOCK.split(head) if b], tail


def state_from_prompt(prompt: str) -> StepState | None:
    """The state behind a completion-layout student prompt (examples written without the
    question / passages / reasoning columns), or None when ``prompt`` is not in that layout."""
    blocks, rest = split_prompt(prompt)
    passages = []
    for block in blocks:
        title, sep, text = block[len("Wikipedia Title: "):].partition("\n")
        if not sep or not text.endswith("\n\n"):
            return None
        passages.append(PromptPassage("", title, text[:-2]))
    question, sep, answer = rest[len("Q: "):].partition("\nA:")
    if not rest.startswith("Q: ") or not sep:
        return None
    state = StepState(question, passages, [ln.strip() for ln in answer.split("\n") if ln.strip()])
    return state if student_prompt(state) == prompt else None


def example_state(example: dict) -> StepState | None:
    """The StepState an example was cut from (its columns, or parsed from its prompt)."""
    if example.get("question") is not None:
        passages = [PromptPassage(p["id"], p["title"], p["text"]) for p in example.get("passages") or []]
        return StepState(example["question"], passages, list(example.get("reasoning") or []))
    return state_from_prompt(example["prompt"])


def encode_example(tokenizer, example: dict, max_len: int, target: str = "cumulative",  # type: ignore[no-untyped-def]
                   trim: str = "oldest", builder: PromptBuilder | None = None) -> Encoded | str:
    """Token ids and labels, or the reason the example is dropped.

    The prompt is the student's view rendered by ``builder`` (default: completion layout) from
    the example's state, tokenised exactly as at inference; the completion follows. Labels:
    the completion (``target: next``), or also the reasoning so far in the answer field
    (``cumulative``). The completion is never cut: whole passages leave the state (oldest or
    newest first) until it fits."""
    task = example["task"]
    if task not in TASKS:
        return f"unknown task {task!r}"
    state = example_state(example)
    if state is None:
        return "prompt not in the student layout"
    builder = builder or PromptBuilder.student()
    completion = tokenizer(example["completion"], add_special_tokens=False).input_ids
    while True:
        rendered = builder.render(state)
        enc = encode_prompt(tokenizer, rendered.text, offsets=target == "cumulative")
        if len(enc.input_ids) + len(completion) <= max_len:
            break
        if not state.passages:
            return "too long without passages"
        state.passages = state.passages[1:] if trim == "oldest" else state.passages[:-1]
    ids = list(enc.input_ids)
    if target == "cumulative":
        labels = [t if start >= rendered.reasoning_start else IGNORE for t, (start, _) in zip(ids, enc.offset_mapping)]
    else:
        labels = [IGNORE] * len(ids)
    return Encoded(example["id"], TASKS.index(task), ids + completion, labels + completion)


def encode_all(tokenizer, examples: Sequence[dict], max_len: int, target: str, trim: str,  # type: ignore[no-untyped-def]
               builder: PromptBuilder | None = None) -> tuple[list[Encoded], Counter[str]]:
    out, dropped = [], Counter()
    for ex in examples:
        r = encode_example(tokenizer, ex, max_len, target, trim, builder)
        if isinstance(r, str):
            dropped[r] += 1
        else:
            out.append(r)
    return out, dropped


def encode_for_loss(tokenizer, examples: Sequence[dict], mode: str, target: str, max_len: int,  # type: ignore[no-untyped-def]
                    trim: str = "oldest", builder: PromptBuilder | None = None) -> tuple[list[Encoded], Counter[str]]:
    """The training items of a loss mode: every task with ``target``'s labels, or for
    ``vanilla_kd`` (the paper's baseline) the agg examples only, labelled on the whole chain
    R<S and the answer given all passages (``label_target``)."""
    return encode_all(tokenizer, rows_for_loss(examples, mode), max_len, label_target(mode, target), trim, builder)


def rows_for_loss(examples: Sequence[dict], mode: str) -> list[dict]:
    """The examples a loss mode trains on: all of them, or the agg ones for ``vanilla_kd``."""
    return [ex for ex in examples if mode != "vanilla_kd" or ex["task"] == "agg"]


def micro_batches_per_rank(examples: Sequence[dict], mode: str, world_size: int, micro_batch: int) -> list[int]:
    """Micro-batches each rank can form (one task per micro-batch) before tokenisation; an
    optimizer step needs ``grad_accum`` of them on every rank (``plan_steps``)."""
    out = []
    for rank in range(world_size):  # as the workers do: shard all rows, then keep the mode's
        per_task = Counter(r["task"] for r in rows_for_loss(shard_rows(examples, rank, world_size), mode))
        out.append(sum(-(-n // micro_batch) for n in per_task.values()))
    return out


def plan_steps(items: Sequence[Encoded], micro_batch: int, micro_per_step: int, seed: int,
               epoch: int) -> list[list[list[int]]]:
    """Optimizer steps, each a list of ``micro_per_step`` micro-batches of item indices.

    Micro-batches hold one task and similar lengths (little padding). Each step draws from
    every task that still has micro-batches, in proportion to what is left (at least one each
    when ``micro_per_step`` allows), so every optimizer step sees each task present in the data.
    A last, incomplete step is dropped.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    pools: dict[int, list[list[int]]] = {}
    for task in sorted({it.task for it in items}):
        idx = [i for i, it in enumerate(items) if it.task == task]
        rng.shuffle(idx)  # random order among equal lengths
        idx.sort(key=lambda i: len(items[i]))
        mbs = [idx[i:i + micro_batch] for i in range(0, len(idx), micro_batch)]
        rng.shuffle(mbs)
        pools[task] = mbs
    steps = []
    while sum(len(p) for p in pools.values()) >= micro_per_step:
        left = {t: len(p) for t, p in pools.items() if p}
        take = {t: 0 for t in left}
        # one each first (task coverage), then largest remainders by share of what is left
        for t in sorted(left, key=lambda t: -left[t])[:micro_per_step]:
            take[t] = 1
        total = sum(left.values())
        while sum(take.values()) < micro_per_step:
            t = max(left, key=lambda t: (left[t] * micro_per_step / total - take[t]) if take[t] < left[t] else -1e9)
            take[t] += 1
        step = [pools[t].pop() for t in take for _ in range(take[t])]
        rng.shuffle(step)
        steps.append(step)
    rng.shuffle(steps)  # callers may cut the plan short; never always the same examples
    return steps


def collate(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (-100 on padding), task_ids."""
    width = max(len(it) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it)
        ids[row, :n] = torch.tensor(it.input_ids)
        labels[row, :n] = torch.tensor(it.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "task_ids": torch.tensor([it.task for it in items], dtype=torch.long)}


def padding_waste(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of pad tokens when each batch is padded to its longest member."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    return 1 - real / padded if padded else 0.0
