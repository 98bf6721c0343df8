"""Plain records shared by readers, retrieval, generation and evaluation."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def passage_id(title: str, text: str) -> str:
    """Stable id from content: the same paragraph gets the same id in every dataset and run."""
    digest = hashlib.sha1(f"{title}\n{text}".encode("utf-8")).hexdigest()
    return f"p{digest[:16]}"


def missing_passage_id(title: str) -> str:
    """Gold id of a paragraph a question names as gold but its file does not hold (HotpotQA
    fullwiki): no index has it, so it counts as a miss in recall rather than vanishing."""
    return f"missing:{title}"


# Appended to the id of a MuSiQue-Full unanswerable twin: its answerable twin has the same id.
UNANSWERABLE_SUFFIX = "::unanswerable"


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str

    @classmethod
    def make(cls, title: str, text: str) -> Passage:
        return cls(passage_id(title, text), title, text)


@dataclass
class QuestionRecord:
    """One multi-hop question in a dataset-independent shape."""

    id: str
    question: str
    answers: list[str]  # gold answer first, then aliases
    dataset: str
    gold_ids: list[str] = field(default_factory=list)  # gold paragraph ids where annotated
    passages: list[Passage] = field(default_factory=list)  # the question's own paragraphs
    supporting_facts: list[tuple[str, int]] = field(default_factory=list)  # (title, sentence idx)
    decomposition: list[dict[str, Any]] = field(default_factory=list)  # MuSiQue sub-questions
    meta: dict[str, Any] = field(default_factory=dict)  # type, level, evidences, ...

    @property
    def answerable(self) -> bool:
        """False for a MuSiQue-Full unanswerable twin: never a training trace, never scored."""
        return bool(self.meta.get("answerable", True))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuestionRecord:
        """Inverse of ``to_dict`` (passages are not carried)."""
        return cls(
            id=d["id"],
            question=d["question"],
            answers=list(d["answers"]),
            dataset=d.get("dataset", ""),
            gold_ids=list(d.get("gold_ids", [])),
            supporting_facts=[(t, int(i)) for t, i in d.get("supporting_facts", [])],
            decomposition=list(d.get("decomposition", [])),
            meta=dict(d.get("meta", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything but the passages (they live in the corpus)."""
        return {
            "id": self.id,
            "question": self.question,
            "answers": list(self.answers),
            "dataset": self.dataset,
            "gold_ids": list(self.gold_ids),
            "supporting_facts": [list(sf) for sf in self.supporting_facts],
            "decomposition": list(self.decomposition),
            "meta": dict(self.meta),
        }


@dataclass(frozen=True)
class BadRecord:
    """A record that could not be read: where it is and why. Never dropped silently."""

    source: str
    line: int  # 1-based line (JSONL, TSV), or entry number from 1 (a JSON list, a JSON dict title -> sentences)
    record_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "id": self.record_id, "reason": self.reason}


@dataclass
class ReadResult:
    records: list[QuestionRecord]
    bad: list[BadRecord]
    format: str
    source: str

    def bad_reasons(self) -> dict[str, int]:
        return dict(Counter(b.reason for b in self.bad))

    def missing_gold(self) -> dict[str, int]:
        """Gold paragraphs named by a question but absent from its file, and their questions."""
        counts = [len(r.meta.get("missing_gold_titles", [])) for r in self.records]
        return {"questions": sum(1 for c in counts if c), "paragraphs": sum(counts)}

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "good": len(self.records),
            "bad": len(self.bad),
            "bad_reasons": self.bad_reasons(),
            "unanswerable": sum(not r.answerable for r in self.records),
            "missing_gold": self.missing_gold(),
        }
