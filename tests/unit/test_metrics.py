from __future__ import annotations

import pytest

from steper_ray.config import FilterConfig
from steper_ray.evaluate.metrics import (
    answer_scores,
    contains_answer,
    normalize_answer,
    recall_at_k,
)
from steper_ray.generate.filter import drop_reason
from steper_ray.reasoning.loop import StepRecord, Trace


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("The Beatles!", "beatles"),
        ("  An   apple a day ", "apple day"),
        ("Theatre", "theatre"),  # 'the' only as a whole word
        ("U.S.A.", "usa"),
        ("Rock-and-roll", "rockandroll"),
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm


def test_exact_match_and_f1() -> None:
    assert answer_scores("The Rush", ["Rush"]) == {"em": 1.0, "f1": 1.0, "acc": 1.0}
    s = answer_scores("Neil Peart drummer", ["Neil Peart"])
    assert s["em"] == 0.0
    assert s["f1"] == pytest.approx(2 * (2 / 3) * 1.0 / (2 / 3 + 1.0))
    assert s["acc"] == 1.0


def test_yes_no_rule() -> None:
    # F1 is 0 when either side is yes/no/noanswer and they differ, even with token overlap.
    assert answer_scores("yes", ["no"])["f1"] == 0.0
    assert answer_scores("no", ["no way"])["f1"] == 0.0
    assert answer_scores("Yes.", ["yes"]) == {"em": 1.0, "f1": 1.0, "acc": 1.0}


def test_max_over_golds_and_acc_containment() -> None:
    s = answer_scores("It was G. Stanley Hall", ["American Psychological Association", "Stanley Hall"])
    assert s["em"] == 0.0 and s["acc"] == 1.0
    assert s["f1"] == pytest.approx(2 * 0.4 * 1.0 / 1.4)
    assert answer_scores("Stanley", ["Stanley Hall"])["acc"] == 0.0
    with pytest.raises(ValueError):
        answer_scores("x", [])


def test_recall_at_k() -> None:
    assert recall_at_k(["a", "b", "c"], ["c", "d"], 2) == 0.0
    assert recall_at_k(["a", "b", "c"], ["c", "d"], 3) == 0.5
    assert recall_at_k(["a"], [], 3) is None


@pytest.mark.parametrize(("prediction", "gold", "acc"), [
    ("Norway", "no", 0.0),  # used to be 1: "no" is inside "norway"
    ("Yesterday", "yes", 0.0),
    ("Theatre Royal", "the", 0.0),
    ("New York City", "York", 1.0),  # whole words inside the prediction
    ("It was G. Stanley Hall", "Stanley Hall", 1.0),
    ("Stanley Hallam", "Stanley Hall", 0.0),
    ("U.S.A.", "USA", 1.0),  # normalised first
    ("no", "no", 1.0),
])
def test_acc_matches_the_gold_as_whole_words(prediction: str, gold: str, acc: float) -> None:
    assert answer_scores(prediction, [gold])["acc"] == acc
    assert contains_answer(prediction, gold) is bool(acc)


@pytest.mark.parametrize(("answer", "golds", "kept"), [
    ("Norway", ["no"], False),
    ("no, it is not", ["no"], False),  # a yes/no gold needs exactly that answer
    ("yes or no", ["yes"], False),
    ("No.", ["no"], True),
    ("It was G. Stanley Hall", ["Stanley Hall"], True),
    ("Stanley", ["Stanley Hall"], False),
    ("the city of Oslo", ["Bergen", "Oslo"], True),
])
def test_contains_filter(answer: str, golds: list[str], kept: bool) -> None:
    trace = Trace("q", "question?", steps=[
        StepRecord(1, "init", "q", [], "p", "sp", "A fact.", 2),
        StepRecord(2, "agg", "s", [], "p", "sp", f"So the answer is: {answer}", 3)], answer=answer)
    assert (drop_reason(trace, golds, FilterConfig(match="contains")) is None) is kept
