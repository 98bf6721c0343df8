from __future__ import annotations

import pytest

from steper_ray.evaluate.metrics import answer_scores, normalize_answer, recall_at_k


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
