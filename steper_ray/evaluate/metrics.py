"""Answer metrics with the official HotpotQA / SQuAD normalisation, and retrieval recall."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Collection, Iterable, Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPECIAL = {"yes", "no", "noanswer"}


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop articles, collapse whitespace (official script order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _f1(prediction: str, gold: str) -> float:
    pred_n, gold_n = normalize_answer(prediction), normalize_answer(gold)
    # HotpotQA: a yes/no/noanswer on either side only scores when both are the same string.
    if (pred_n in _SPECIAL or gold_n in _SPECIAL) and pred_n != gold_n:
        return 0.0
    pred_toks, gold_toks = pred_n.split(), gold_n.split()
    common = Counter(pred_toks) & Counter(gold_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_toks)
    recall = same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, gold: str) -> bool:
    """Whether the normalised gold appears in the normalised prediction as whole words.

    Both sides get ``normalize_answer`` (SQuAD/HotpotQA), then the gold's token sequence must
    occur in the prediction's on token boundaries: "no" is not in "Norway", "York" is in "New
    York City". An empty gold is never contained.
    """
    gold_n = normalize_answer(gold)
    return bool(gold_n) and f" {gold_n} " in f" {normalize_answer(prediction)} "


def is_yes_no(answer: str) -> bool:
    """A yes/no answer after normalisation (HotpotQA comparison questions)."""
    return normalize_answer(answer) in ("yes", "no")


def answer_scores(prediction: str, golds: list[str]) -> dict[str, float]:
    """EM, F1 and Acc of one prediction, each the maximum over the golds (answer then aliases).

    EM and F1 follow the official HotpotQA evaluation (SQuAD normalisation; F1 is 0 when either
    side is yes/no/noanswer and they differ). Acc (the StepER paper's accuracy) is 1 when a
    normalised gold is contained in the normalised prediction as whole words
    (``contains_answer``). Raises ValueError without golds.
    """
    if not golds:
        raise ValueError("answer_scores needs at least one gold answer")
    pred_n = normalize_answer(prediction)
    em = max(float(pred_n == normalize_answer(g)) for g in golds)
    f1 = max(_f1(prediction, g) for g in golds)
    acc = max(float(contains_answer(prediction, g)) for g in golds)
    return {"em": em, "f1": f1, "acc": acc}


def gold_key(pid: str, title: str, text: str, gold_ids: Collection[str]) -> str:
    """The id a retrieved passage is scored under: its own id when the gold ids name it, else
    its content id (``passage_id(title, text)``). The datasets name gold paragraphs by content
    id; a corpus file names its passages by its own ids (DPR's numbers), which never match."""
    from steper_ray.data.records import passage_id

    return pid if pid in gold_ids else passage_id(title, text)


def recall_at_k(retrieved_ids: Sequence[str], gold_ids: Iterable[str], k: int) -> float | None:
    """Share of gold paragraphs among the first k retrieved ids; None when there is no gold."""
    gold = set(gold_ids)
    if not gold:
        return None
    return len(gold & set(retrieved_ids[:k])) / len(gold)


def mean_recall_at(retrieved: Sequence[Sequence[str]], golds: Sequence[Iterable[str]],
                   cutoffs: Iterable[int]) -> dict[int, float | None]:
    """Mean recall@k over queries with gold paragraphs, for each cut-off (None: no gold at all)."""
    return {k: mean(recall_at_k(r, g, k) for r, g in zip(retrieved, golds)) for k in cutoffs}


def mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
