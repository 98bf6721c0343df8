from __future__ import annotations

from pathlib import Path

import pytest

from steper_ray.errors import UserError
from steper_ray.reasoning.answer import final_answer, has_answer_marker, parse_answer
from steper_ray.reasoning.prompts import (
    PromptPassage,
    StepState,
    TeacherPrompt,
    completion_text,
    format_passages,
    student_prompt,
)

P1 = PromptPassage("a", "Neil Peart", "Neil Peart was the drummer of Rush.")
P2 = PromptPassage("b", "Rush (band)", "Rush was a Canadian rock band.")


def test_student_prompt_layout_is_exact() -> None:
    state = StepState("Which band had Neil Peart?", [P1, P2], ["Neil Peart drummed for Rush."])
    assert student_prompt(state) == (
        "Wikipedia Title: Neil Peart\nNeil Peart was the drummer of Rush.\n\n"
        "Wikipedia Title: Rush (band)\nRush was a Canadian rock band.\n\n"
        "Q: Which band had Neil Peart?\nA: Neil Peart drummed for Rush.\n"
    )
    assert student_prompt(StepState("Q?")) == "Q: Q?\nA:"
    assert completion_text("So the answer is: Rush.") == " So the answer is: Rush.\n"


def test_consecutive_steps_share_the_passage_prefix() -> None:
    s1 = StepState("q?", [P1], [])
    s2 = StepState("q?", [P1, P2], ["r1."])
    p1, p2 = student_prompt(s1), student_prompt(s2)
    assert p2.startswith(format_passages([P1]))
    # prompt + completion of step 1 is exactly what step 2 sees after its new passages
    assert (p1 + completion_text("r1.")).replace(format_passages([P1]), "") == \
        p2.replace(format_passages([P1, P2]), "")


def test_teacher_prompt_wraps_the_student_view() -> None:
    teacher = TeacherPrompt.load()
    state = StepState("Which band had Neil Peart?", [P1], [])
    plain, final = teacher.render(state, False), teacher.render(state, True)
    assert plain.endswith(student_prompt(state)) and final.endswith(student_prompt(state))
    assert plain.startswith(teacher.header) and final.startswith(teacher.header)
    assert teacher.final_instruction in final and teacher.final_instruction not in plain
    assert teacher.header.count("So the answer is:") >= 3  # instruction + demonstrations
    assert "Wikipedia Title: Lakeside Glassworks" in teacher.header


def test_teacher_prompt_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        TeacherPrompt.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("instruction: hi\n")
    with pytest.raises(UserError, match="malformed.*final_instruction"):
        TeacherPrompt.load(bad)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("So the answer is: Rush.", "Rush"),
        ("so the answer is rush", "rush"),
        ("Thus SO THE ANSWER IS:   Neil Peart!!", "Neil Peart"),
        ('So the answer is: "1993".', "1993"),
        ("A fact. So the answer is: no. So the answer is: yes.", "yes"),
        ("So the answer is: 3.5", "3.5"),
        ("So the answer is:", None),
        ("No marker here.", None),
    ],
)
def test_parse_answer(text: str, answer: str | None) -> None:
    assert parse_answer(text) == answer
    assert has_answer_marker(text) == ("answer is" in text.lower())


def test_final_answer_falls_back_to_the_last_sentence() -> None:
    assert final_answer("He was born in 1950. The band is Rush.") == "The band is Rush"
    assert final_answer("So the answer is: Rush.") == "Rush"
    assert final_answer("") == ""


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("So the answer is: “Ada Finch”.", "Ada Finch"),  # used to keep the quotes (EM 0)
        ("So the answer is: ‘Ada Finch’", "Ada Finch"),
        ("So the answer is: «Ada Finch».", "Ada Finch"),
        ("So the answer is: „Ada Finch“", "Ada Finch"),
        ("So the answer is: 「Ada Finch」。", "Ada Finch"),
        ("So the answer is: 『Ada Finch』", "Ada Finch"),
        ("So the answer is: ＂Ada Finch＂", "Ada Finch"),
        ("So the answer is: (Ada Finch).", "Ada Finch"),
        ("So the answer is: [Ada Finch]", "Ada Finch"),
        ("So the answer is: 【Ada Finch】", "Ada Finch"),
        ("So the answer is: “(Ada Finch)”.", "Ada Finch"),
        ("So the answer is: “Ada Finch.”", "Ada Finch"),
        ("So the answer is: Rush (band).", "Rush (band)"),  # a bracket inside the answer stays
        ("So the answer is: (1) and (2)", "(1) and (2)"),  # not one pair around it all
        ("So the answer is: “”", None),
    ],
)
def test_typographic_quotes_and_brackets_around_the_answer(text: str, answer: str | None) -> None:
    assert parse_answer(text) == answer


def test_a_quoted_teacher_answer_now_scores_and_is_kept() -> None:
    from steper_ray.evaluate.metrics import answer_scores

    assert answer_scores(parse_answer("So the answer is: “Ada Finch”.") or "", ["Ada Finch"])["em"] == 1.0
    assert final_answer("The winner was «Ada Finch».") == "The winner was «Ada Finch»"
    assert final_answer("«Ada Finch».") == "Ada Finch"


@pytest.mark.parametrize(("text", "answer"), [
    ('So the answer is: the novel “Emma”.', "the novel “Emma”"),  # quotes inside the answer stay
    ('So the answer is: the novel "Emma".', 'the novel "Emma"'),
    ("So the answer is: Ada Finch”.", "Ada Finch"),  # a stray closing mark goes
    ("So the answer is: “Ada Finch", "Ada Finch"),  # a stray opening mark goes
    ("So the answer is: 'Allo 'Allo!", "'Allo 'Allo"),
    ("So the answer is: Guns N' Roses", "Guns N' Roses"),
])
def test_quote_marks_inside_an_answer_are_kept(text: str, answer: str) -> None:
    assert parse_answer(text) == answer
