"""Teacher demonstrations of the same dataset, built from its annotated training questions.

IRCoT-style teachers are prompted with worked examples of the dataset they answer (IRCoT, Trivedi
et al. 2023, uses a handful of annotated training questions per dataset with their gold
paragraphs). A demonstration here is one annotated question: its gold paragraphs as the
passages, its annotated reasoning (HotpotQA supporting sentences, 2WikiMultihopQA evidence
triples as sentences, MuSiQue's decomposition with sub-answers: the evidence teacher's
sentences) and ``So the answer is: <gold>.``. Pure functions over records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from steper_ray.data.records import QuestionRecord
from steper_ray.reasoning.answer import ANSWER_MARKER
from steper_ray.reasoning.generators.evidence import evidence_sentences
from steper_ray.reasoning.prompts import Demonstration, PromptPassage, TeacherPromptSpec

MAX_DEMO_SENTENCES = 4  # reasoning sentences before the answer, as many as the loop's exp steps


def demonstration(rec: QuestionRecord) -> Demonstration | None:
    """The demonstration of one annotated question, or None when it lacks annotated reasoning,
    gold paragraphs present in the record, or an answer."""
    sentences = evidence_sentences(rec)[:MAX_DEMO_SENTENCES]
    gold = set(rec.gold_ids)
    passages = tuple(PromptPassage(p.id, p.title, p.text) for p in rec.passages if p.id in gold)
    if not sentences or not passages or not rec.answers:
        return None
    return Demonstration(rec.question, passages, (*sentences, f"{ANSWER_MARKER} {rec.answers[0]}."),
                         source=f"{rec.dataset}:{rec.id}")


def pick_demos(records: Sequence[QuestionRecord], n: int) -> list[Demonstration]:
    """``n`` demonstrations from the end of ``records`` (file order), the last usable ones first;
    the end, so that a ``limit`` on the questions generated rarely reaches them."""
    out: list[Demonstration] = []
    for rec in reversed(records):
        if len(out) == n:
            break
        demo = demonstration(rec)
        if demo is not None:
            out.append(demo)
    return out


def demo_ids(demos: Iterable[Demonstration]) -> set[str]:
    """Question ids of the demonstrations (to keep them out of generation and evaluation)."""
    return {d.source.split(":", 1)[1] for d in demos if ":" in d.source}


def demos_to_dicts(demos: Sequence[Demonstration]) -> list[dict[str, Any]]:
    return [asdict(d) for d in demos]


def demos_from_dicts(rows: Sequence[dict[str, Any]]) -> list[Demonstration]:
    return [Demonstration(r["question"], tuple(PromptPassage(**p) for p in r["passages"]),
                          tuple(r["reasoning"]), r.get("source", "")) for r in rows]


def plan_demos(cfg: Any, datasets: Iterable[str], num: int | None = None) -> tuple[dict[str, list[Demonstration]], dict[str, Any]]:
    """The teacher's demonstrations for each dataset name in ``datasets`` under ``cfg.reasoning``,
    and what was used where (for summary.json).

    ``demos: auto`` takes ``num_demos`` from the training set of the same name (``data.train``);
    a dataset with no training set or no annotated question falls back to the teacher prompt
    file's demonstrations, with the reason recorded. A ``teacher_prompt`` file or ``demos:
    bundled`` means the file's demonstrations everywhere (an empty list here)."""
    from steper_ray.data import read_dataset

    r = cfg.reasoning
    n = r.num_demos if num is None else num
    names = list(dict.fromkeys(datasets))
    if r.teacher_prompt or r.demos == "bundled":
        if r.teacher_prompt:
            TeacherPromptSpec.load(r.teacher_prompt)  # a bad file fails here, not in every Ray actor
        source = f"file {r.teacher_prompt}" if r.teacher_prompt else "bundled"
        return {d: [] for d in names}, {d: {"source": source} for d in names}
    train = {spec.name: spec for spec in cfg.data.train}
    demos: dict[str, list[Demonstration]] = {}
    info: dict[str, Any] = {}
    for name in names:
        spec = train.get(name)
        picked = pick_demos(read_dataset(spec.path, spec.format, name=spec.name).records, n) if spec else []
        demos[name] = picked
        if picked:
            info[name] = {"source": "train annotations", "questions": sorted(demo_ids(picked))}
        else:
            why = (f"no training set named {name!r} in data.train" if spec is None
                   else f"no annotated question (reasoning and gold paragraphs) in {spec.path}")
            info[name] = {"source": "bundled (fallback)", "reason": why}
    return demos, info
