"""Pure parts of training: the loss, the DeepSpeed config, tokenisation and batching."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from steper_ray.train.data import Encoded, collate, encode_example, padding_waste, plan_steps, split_prompt
from steper_ray.train.deepspeed_config import build_deepspeed_config
from steper_ray.train.loss import IGNORE, TASKS, StepERLoss, per_task_token_ce


def test_steper_loss_equals_closed_form_and_reaches_every_sigma() -> None:
    loss = StepERLoss("steper")
    with torch.no_grad():
        loss.log_vars.copy_(torch.tensor([0.5, -0.3, 1.2]))
    ce_sum, ce_cnt = torch.tensor([6.0, 10.0, 3.0]), torch.tensor([3.0, 4.0, 2.0])
    value = loss(ce_sum, ce_cnt)
    Ls = [2.0, 2.5, 1.5]
    s = [0.5, -0.3, 1.2]
    expected = sum(math.exp(-sj) * Lj / 2 + sj / 2 for sj, Lj in zip(s, Ls))
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    grad = loss.log_vars.grad
    assert grad is not None
    for j in range(3):  # d/ds_j = -exp(-s_j) L_j / 2 + 1/2
        assert grad[j].item() == pytest.approx(-math.exp(-s[j]) * Ls[j] / 2 + 0.5, rel=1e-5)
    assert loss.sigmas().tolist() == pytest.approx([math.exp(x / 2) for x in s], rel=1e-6)
    assert loss.effective_weights().tolist() == pytest.approx([math.exp(-x) / 2 for x in s], rel=1e-6)


def test_missing_task_contributes_nothing() -> None:
    loss = StepERLoss("steper")
    with torch.no_grad():
        loss.log_vars.copy_(torch.tensor([0.2, 0.7, -0.4]))
    value = loss(torch.tensor([4.0, 0.0, 1.0]), torch.tensor([2.0, 0.0, 1.0]))
    expected = math.exp(-0.2) * 2.0 / 2 + 0.1 + math.exp(0.4) * 1.0 / 2 - 0.2
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert loss.log_vars.grad[1].item() == 0.0 and torch.isfinite(loss.log_vars.grad).all()


def test_uniform_and_vanilla_kd_modes() -> None:
    ce_sum, ce_cnt = torch.tensor([2.0, 4.0, 6.0]), torch.tensor([1.0, 1.0, 2.0])
    uniform = StepERLoss("uniform", weights=[1.5, 1.0, 0.5])
    assert uniform(ce_sum, ce_cnt).item() == pytest.approx(1.5 * 2 + 4 + 0.5 * 3)
    assert not uniform.log_vars.requires_grad
    kd = StepERLoss("vanilla_kd")
    assert kd(ce_sum, ce_cnt).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unknown loss mode"):
        StepERLoss("nope")


def test_per_task_token_ce_masks_prompt_and_shifts() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, IGNORE], [IGNORE, 1, 2, IGNORE, IGNORE]])
    s, c = per_task_token_ce(logits, labels, torch.tensor([0, 2]))
    assert c.tolist() == [2.0, 0.0, 2.0]
    lp = torch.log_softmax(logits, -1)
    manual0 = -(lp[0, 1, 3] + lp[0, 2, 4])
    manual2 = -(lp[1, 0, 1] + lp[1, 1, 2])
    assert s.tolist() == pytest.approx([manual0.item(), 0.0, manual2.item()], rel=1e-5)


def test_deepspeed_config() -> None:
    cfg = build_deepspeed_config(zero_stage=3, micro_batch_size=2, grad_accum=4, world_size=8, on_gpu=True,
                                 offload_optimizer=True, grad_clip=0.5)
    assert cfg["train_batch_size"] == 64 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["bf16"]["enabled"] is True and cfg["gradient_clipping"] == 0.5
    assert cfg["zero_optimization"]["stage"] == 3
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    cpu = build_deepspeed_config(zero_stage=2, micro_batch_size=1, grad_accum=1, world_size=2, on_gpu=False)
    assert cpu["bf16"]["enabled"] is False and "offload_optimizer" not in cpu["zero_optimization"]
    with pytest.raises(ValueError, match="needs ZeRO stage 3"):
        build_deepspeed_config(zero_stage=2, micro_batch_size=1, grad_accum=1, world_size=1, on_gpu=False,
                               offload_params=True)


PROMPT = ("Wikipedia Title: A\nalpha alpha alpha.\n\nWikipedia Title: B\nbeta beta.\n\n"
          "Q: what?\nA: first step.\n")


def test_encode_masks_prompt_and_trims_whole_passages(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = {"id": "q:2", "task": "exp", "prompt": PROMPT, "completion": " second step.\n"}
    full = encode_example(tok, ex, 10_000, target="next")
    assert isinstance(full, Encoded) and full.task == TASKS.index("exp")
    n_prompt = len(tok(PROMPT).input_ids)
    assert full.input_ids[:n_prompt] == tok(PROMPT).input_ids  # prompt tokenised as at inference
    assert full.labels[:n_prompt] == [IGNORE] * n_prompt
    assert tok.decode(full.labels[n_prompt:]) == " second step.\n"
    cum = encode_example(tok, ex, 10_000, target="cumulative")
    assert isinstance(cum, Encoded)
    labelled = tok.decode([t for t in cum.labels if t != IGNORE])
    assert labelled == " first step.\n second step.\n"
    # too long: whole passages leave, oldest first, the completion is intact
    blocks, rest = split_prompt(PROMPT)
    without_a = "".join(blocks[1:]) + rest
    limit = len(tok(without_a).input_ids) + len(tok(" second step.\n", add_special_tokens=False).input_ids)
    trimmed = encode_example(tok, ex, limit, target="next")
    assert isinstance(trimmed, Encoded) and tok.decode(trimmed.input_ids).startswith("Wikipedia Title: B")
    newest = encode_example(tok, ex, limit, target="next", trim="newest")
    assert isinstance(newest, Encoded) and "Wikipedia Title: B" not in tok.decode(newest.input_ids)
    assert encode_example(tok, ex, 5) == "too long without passages"


def _items(tasks_lengths: list[tuple[int, int]]) -> list[Encoded]:
    return [Encoded(str(i), t, [1] * n, [1] * n) for i, (t, n) in enumerate(tasks_lengths)]


def test_plan_puts_every_task_in_every_step_and_groups_lengths() -> None:
    import random

    rng = random.Random(0)
    items = _items([(0, rng.randint(50, 400)) for _ in range(40)] + [(1, rng.randint(80, 900)) for _ in range(70)]
                   + [(2, rng.randint(100, 1200)) for _ in range(40)])
    steps = plan_steps(items, micro_batch=2, micro_per_step=4, seed=1, epoch=0)
    assert len(steps) == 150 // 8
    for step in steps:
        assert len(step) == 4
        assert {items[i].task for mb in step for i in mb} == {0, 1, 2}
        for mb in step:
            assert len({items[i].task for i in mb}) == 1  # micro-batches are task-homogeneous
    used = [i for s in steps for mb in s for i in mb]
    assert len(used) == len(set(used))
    assert plan_steps(items, 2, 4, seed=1, epoch=0) == steps  # deterministic
    assert plan_steps(items, 2, 4, seed=1, epoch=1) != steps  # reshuffled per epoch
    lengths = [len(it) for it in items]
    ours = padding_waste([mb for s in steps for mb in s], lengths)
    naive = padding_waste([[i for i in range(len(items)) if items[i].task == t][k:k + 2]
                           for t in range(3) for k in range(0, 70, 2)], lengths)
    assert ours < naive


def test_collate_right_pads() -> None:
    batch = collate([Encoded("a", 0, [5, 6, 7], [IGNORE, 6, 7]), Encoded("b", 2, [8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["task_ids"].tolist() == [0, 2]


def test_shards_are_balanced_disjoint_and_stable() -> None:
    from steper_ray.train.data import shard_rows

    rows = [{"id": f"q{i}:{j}"} for i in range(7) for j in range(3)]
    shards = [shard_rows(rows, r, 4) for r in range(4)]
    assert sorted(len(s) for s in shards) == [5, 5, 5, 6]
    ids = [r["id"] for s in shards for r in s]
    assert sorted(ids) == sorted(r["id"] for r in rows)
    assert shard_rows(list(reversed(rows)), 2, 4) == shards[2]  # input order does not matter


def _ckpt_files(root: Path) -> None:
    (root / "step00000005").mkdir(parents=True)
    (root / "latest").write_text("step00000005")
    (root / "step00000005" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"shard0" * 1000)


def test_resume_reads_a_local_checkpoint_in_place(tmp_path: Path) -> None:
    from ray.train import Checkpoint

    from steper_ray.train.checkpoints import resume_dir

    _ckpt_files(tmp_path / "checkpoint_a")
    barriers: list[int] = []
    got = resume_dir(Checkpoint.from_directory(tmp_path / "checkpoint_a"), local_rank=1,
                     barrier=lambda: barriers.append(1))
    # In place: no copy that a second rank could overwrite while this one reads it.
    assert got == tmp_path / "checkpoint_a"
    assert barriers == [1]


def test_resume_downloads_a_remote_checkpoint_once_per_node(tmp_path: Path) -> None:
    import fsspec
    import pyarrow.fs
    from ray.train import Checkpoint

    from steper_ray.train.checkpoints import resume_dir

    mem = fsspec.filesystem("memory")
    _ckpt_files(tmp_path / "src")
    for f in (tmp_path / "src").rglob("*"):
        if f.is_file():
            mem.pipe(f"/bucket/ckpt/{f.relative_to(tmp_path / 'src')}", f.read_bytes())
    ckpt = Checkpoint("/bucket/ckpt", filesystem=pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(mem)))
    downloads: list[str] = []
    real = Checkpoint.to_directory

    def counting(self: Checkpoint, path: str | None = None) -> str:
        downloads.append(str(path))
        return real(self, path)

    barriers: list[int] = []
    import unittest.mock

    with unittest.mock.patch.object(Checkpoint, "to_directory", counting):
        # Local rank 1 never downloads (it waits at the barrier for rank 0 on its node) ...
        r1 = resume_dir(ckpt, 1, lambda: barriers.append(1), download_root=tmp_path / "dl")
        assert downloads == [] and not r1.exists()
        # ... rank 0 downloads into the same directory, whole, and only once.
        r0 = resume_dir(ckpt, 0, lambda: barriers.append(0), download_root=tmp_path / "dl")
        again = resume_dir(ckpt, 0, lambda: barriers.append(0), download_root=tmp_path / "dl")
    assert r0 == r1 == again and len(downloads) == 1 and barriers == [1, 0, 0]
    assert (r0 / "latest").read_text() == "step00000005"
    assert (r0 / "step00000005/zero_pp_rank_0_mp_rank_00_optim_states.pt").read_bytes() == b"shard0" * 1000
    assert not list((tmp_path / "dl").glob("*.partial"))


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _one_trace():  # type: ignore[no-untyped-def]
    """A three-step trace (init, exp, agg) from the real loop with a scripted teacher."""
    from steper_ray.generate.examples import trace_examples
    from steper_ray.reasoning.generators.protocol import Generation
    from steper_ray.reasoning.loop import Question, StepwiseReasoner
    from steper_ray.retrieval.protocol import Hit

    class Retriever:
        def search(self, queries, k):  # type: ignore[no-untyped-def]
            return [[Hit(f"{q}#{i}", f"Title {i}", f"Passage {i} for {q}.", 1.0) for i in range(k)] for q in queries]

        def __len__(self) -> int:
            return 9

    outputs = {1: "Rush had Neil Peart.", 2: "Rush is from Canada.", 3: "So the answer is: Canada."}

    class Teacher:
        def generate(self, requests):  # type: ignore[no-untyped-def]
            return [Generation(" " + outputs[r.step], 5) for r in requests]

    trace = StepwiseReasoner(Retriever(), Teacher(), max_steps=3, k=1).run([Question("q", "Where is Neil Peart's band from?")])[0]
    return trace, trace_examples(trace)


@pytest.mark.parametrize(
    ("mode", "target", "labelled"),
    [
        ("steper", "next", [" Rush had Neil Peart.\n", " Rush is from Canada.\n", " So the answer is: Canada.\n"]),
        ("steper", "cumulative", [" Rush had Neil Peart.\n", " Rush had Neil Peart.\n Rush is from Canada.\n",
                                  " Rush had Neil Peart.\n Rush is from Canada.\n So the answer is: Canada.\n"]),
        ("uniform", "next", [" Rush had Neil Peart.\n", " Rush is from Canada.\n", " So the answer is: Canada.\n"]),
        # vanilla KD: the final step only, the whole chain and the answer as the target, whatever 'target' says
        ("vanilla_kd", "next", [" Rush had Neil Peart.\n Rush is from Canada.\n So the answer is: Canada.\n"]),
    ],
)
def test_labelled_tokens_of_one_trace_per_loss_mode(tiny_model_dir: Path, mode: str, target: str,
                                                     labelled: list[str]) -> None:
    from transformers import AutoTokenizer

    from steper_ray.train.data import encode_for_loss

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trace, examples = _one_trace()
    assert [e["task"] for e in examples] == ["init", "exp", "agg"]
    items, dropped = encode_for_loss(tok, examples, mode, target, 10_000)
    assert not dropped
    assert [tok.decode([t for t in it.labels if t != IGNORE]) for it in items] == labelled
    if mode == "vanilla_kd":  # given all passages: the agg step sees every passage retrieved
        assert len(trace.passages) == 3 and all(f"Passage 0 for {q}" in tok.decode(items[0].input_ids)
                                                for q in ("Where is Neil Peart's band from?", "Rush had Neil Peart."))


@pytest.mark.parametrize("fmt", ["completion", "chat"])
def test_training_prompt_is_byte_identical_to_inference(tiny_model_dir: Path, fmt: str) -> None:
    """The student's training tokens for a step are the tokens its inference prompt has."""
    from transformers import AutoTokenizer

    from steper_ray.models.prompt_format import chat_template_of
    from steper_ray.reasoning.prompts import PromptBuilder, encode_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = CHATML
    builder = PromptBuilder.student(fmt, chat_template_of(tok) if fmt == "chat" else None)  # type: ignore[arg-type]
    trace, examples = _one_trace()
    for index, example in enumerate(examples):
        at_inference = builder(trace.state_at(index))  # what the loop renders for this step
        if fmt == "completion":
            assert at_inference == example["prompt"]  # the stored prompt is the student's view
        else:
            assert at_inference.startswith("<|im_start|>user\n") and "<|im_start|>assistant\nA:" in at_inference
        enc = encode_example(tok, example, 10_000, builder=builder)
        assert isinstance(enc, Encoded)
        n = len(enc.input_ids) - len(tok(example["completion"], add_special_tokens=False).input_ids)
        assert enc.input_ids[:n] == encode_prompt(tok, at_inference).input_ids


def test_step_loss_with_unequal_task_counts_is_the_closed_form() -> None:
    """Micro-batches of one task each, in unequal numbers and sizes, as in one optimizer step on
    two ranks: their summed shares give sum_j exp(-s_j) L_j / 2 + s_j / 2 with L_j the task's
    token mean over the whole step, and the same gradients."""
    torch.manual_seed(0)
    # (task, tokens) per micro-batch: exp has three micro-batches, init one, agg two
    micro = [(0, 3.0), (1, 2.0), (1, 4.0), (1, 6.0), (2, 5.0), (2, 1.0)]
    ce = [torch.rand((), dtype=torch.float64) * n for _, n in micro]  # summed CE of each micro-batch
    for c in ce:
        c.requires_grad_(True)
    s_init = [0.4, -0.2, 0.9]
    loss = StepERLoss("steper").double()
    with torch.no_grad():
        loss.log_vars.copy_(torch.tensor(s_init, dtype=torch.float64))
    step_cnt = torch.zeros(3, dtype=torch.float64)
    for task, n in micro:
        step_cnt[task] += n
    total = 0
    for (task, n), c in zip(micro, ce):
        ce_sum = torch.zeros(3, dtype=torch.float64).index_put((torch.tensor([task]),), c.reshape(1))
        ce_cnt = torch.zeros(3, dtype=torch.float64)
        ce_cnt[task] = n
        total = total + loss(ce_sum, ce_cnt, step_cnt)
    total.backward()
    # closed form
    s = torch.tensor(s_init, dtype=torch.float64, requires_grad=True)
    leaves = [c.detach().clone().requires_grad_(True) for c in ce]
    L = [sum(leaves[i] for i, (t, _) in enumerate(micro) if t == j) / step_cnt[j] for j in range(3)]
    closed = sum(torch.exp(-s[j]) * L[j] / 2 + s[j] / 2 for j in range(3))
    closed.backward()
    assert total.item() == pytest.approx(closed.item(), rel=1e-12)
    assert loss.log_vars.grad.tolist() == pytest.approx(s.grad.tolist(), rel=1e-9)
    assert [c.grad.item() for c in ce] == pytest.approx([c.grad.item() for c in leaves], rel=1e-9)
    # a micro-batch mean would have weighted exp by its 3 micro-batches: not what we compute
    per_mb = sum(loss(torch.zeros(3, dtype=torch.float64).index_put((torch.tensor([t]),), c.detach().reshape(1)),
                      torch.zeros(3, dtype=torch.float64).index_put((torch.tensor([t]),), torch.tensor([n], dtype=torch.float64)))
                 for (t, n), c in zip(micro, ce))
    assert abs(per_mb.item() - closed.item()) > 1e-3


@pytest.mark.parametrize("mode", ["steper", "vanilla_kd"])
def test_micro_batch_count_per_rank_predicts_whether_a_step_can_be_planned(mode: str) -> None:
    from steper_ray.train.data import micro_batches_per_rank, rows_for_loss, shard_rows

    rows = [{"id": f"q{q}-{t}", "task": t} for q in range(7) for t in TASKS if t != "exp" or q % 2]
    counts = micro_batches_per_rank(rows, mode, world_size=2, micro_batch=2)
    for rank, count in enumerate(counts):
        mine = rows_for_loss(shard_rows(rows, rank, 2), mode)
        assert all(r["task"] == "agg" for r in mine) or mode == "steper"
        items = [Encoded(r["id"], TASKS.index(r["task"]), [1, 2], [1, 2]) for r in mine]
        for grad_accum in range(1, 8):
            assert bool(plan_steps(items, 2, grad_accum, seed=0, epoch=0)) == (count >= grad_accum)


def test_cpu_training_does_not_build_deepspeeds_shared_memory_op() -> None:
    import importlib

    from deepspeed.accelerator import get_accelerator

    from steper_ray.train.loop import skip_shm_comm_op

    if get_accelerator().create_op_builder("ShareMemCommBuilder") is None:
        pytest.skip("this DeepSpeed accelerator has no shared-memory op")
    ds_torch = importlib.import_module("deepspeed.comm.torch")  # `import as` finds the torch attribute
    skip_shm_comm_op()
    # what DeepSpeed's gloo backend calls on init: None means nothing is compiled or loaded
    assert ds_torch.build_shm_op() is None


def test_the_training_workers_get_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steper_ray.config import TrainConfig
    from steper_ray.train.loop import make_loop_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models/student").mkdir(parents=True)
    config = make_loop_config(TrainConfig(), "models/student", "runs/local/generate/examples", "runs/local/train")
    assert config["examples"] == str(tmp_path / "runs/local/generate/examples")
    assert (config["student"], config["out"]) == (str(tmp_path / "models/student"), str(tmp_path / "runs/local/train"))
    assert make_loop_config(TrainConfig(), "org/name", "x", "y")["student"] == "org/name"  # not a local path
