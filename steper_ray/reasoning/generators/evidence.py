"""EvidenceGenerator: writes each step from the dataset's own annotations.

Not a language model. For a question with annotated evidence it writes, in order, the
supporting-fact sentences (HotpotQA), the evidence triples as sentences (2WikiMultihopQA) or
the decomposition's sub-answers (MuSiQue; triples through ``relations.relation_sentence``),
then ``So the answer is: <gold answer>.`` It ignores the prompt and the retrieved passages,
so it is deterministic and always right: the embedded default's teacher on a machine with no
real LLM, and an upper bound (oracle reasoning) to compare real teachers against. Its traces
teach the student the format and the step structure, not how to reason from retrieved passages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from steper_ray.data.records import QuestionRecord
from steper_ray.reasoning.answer import ANSWER_MARKER
from steper_ray.reasoning.generators.protocol import Generation, GenRequest, failed
from steper_ray.reasoning.generators.relations import relation_sentence

_REF = re.compile(r"#(\d+)")


def evidence_sentences(rec: QuestionRecord) -> list[str]:
    """The reasoning sentences annotated for a question, in order (may be empty)."""
    if rec.decomposition:
        answers: list[str] = []
        out = []
        for step in rec.decomposition:
            q = str(step.get("question", "")).strip()
            a = str(step.get("answer", "")).strip()
            q = _REF.sub(lambda m: answers[int(m.group(1)) - 1] if int(m.group(1)) <= len(answers) else m.group(0), q)
            answers.append(a)
            if " >> " in q:  # MuSiQue's triple form "subject >> relation"
                subject, relation = (x.strip() for x in q.split(" >> ", 1))
                out.append(relation_sentence(subject, relation, a))
            else:
                out.append(f"{q.rstrip('? ')}: {a}.")
        return out
    evidences = rec.meta.get("evidences") or []
    if evidences:
        return [relation_sentence(s, r, o) for s, r, o in evidences]
    return list(dict.fromkeys(rec.meta.get("support_sentences") or []))


class EvidenceGenerator:
    def __init__(self, records: Sequence[QuestionRecord]):
        self.records = {r.id: r for r in records}

    def step_text(self, rec: QuestionRecord, step: int, final: bool) -> str:
        evidence = evidence_sentences(rec)
        if final or step > len(evidence):
            return f"{ANSWER_MARKER} {rec.answers[0]}."
        return evidence[step - 1]

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        out = []
        for req in requests:
            rec = self.records.get(req.question_id)
            if rec is None:
                out.append(failed(f"evidence teacher has no record for question {req.question_id!r}"))
                continue
            if not rec.answerable:  # its evidence is incomplete by design: no answer to write
                out.append(Generation("", 0, f"question {req.question_id!r} is unanswerable (MuSiQue-Full)"))
                continue
            text = self.step_text(rec, req.step, req.final)
            out.append(Generation(text, len(text.split())))
        return out
