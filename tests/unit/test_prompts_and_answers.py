from __future__ import annotations

import re
from pathlib import Path

import pytest

from steper_ray.errors import UserError
from steper_ray.reasoning.answer import final_answer, has_answer_marker, parse_answer
from steper_ray.reasoning.prompts import (
    Demonstration,
    PromptBuilder,
    PromptPassage,
    StepState,
    TeacherPromptSpec,
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
    teacher = PromptBuilder.teacher(TeacherPromptSpec.load())
    state = StepState("Which band had Neil Peart?", [P1], [])
    plain, final = teacher(state, False), teacher(state, True)
    assert plain.endswith(student_prompt(state)) and final.endswith(student_prompt(state))
    header = plain[: -len(student_prompt(state))]
    assert final.startswith(header)
    assert teacher.final_instruction in final and teacher.final_instruction not in plain
    assert header.count("So the answer is:") >= 3  # instruction + demonstrations
    assert "Wikipedia Title: Lakeside Glassworks" in header
    assert PromptBuilder.student()(state) == student_prompt(state)


def chatml(messages) -> str:  # type: ignore[no-untyped-def]
    """A ChatML template like SmolLM2's, as a tokenizer's apply_chat_template renders it."""
    return "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in messages) + "<|im_start|>assistant\n"


def test_chat_format_renders_messages_and_continues_the_assistant_turn() -> None:
    demo = Demonstration("Who drummed for Rush?", (P1,), ("Neil Peart drummed for Rush.", "So the answer is: Neil Peart."))
    spec = TeacherPromptSpec("Answer step by step.", "Close now.", ())
    teacher = PromptBuilder.teacher(spec, [demo], "chat", chatml)
    state = StepState("Which band had Neil Peart?", [P1, P2], ["Neil Peart drummed for Rush."])
    r = teacher.render(state, final=True)
    assert r.text == (
        "<|im_start|>system\nAnswer step by step.<|im_end|>\n"
        "<|im_start|>user\nWikipedia Title: Neil Peart\nNeil Peart was the drummer of Rush.\n\n"
        "Q: Who drummed for Rush?<|im_end|>\n"
        "<|im_start|>assistant\nA: Neil Peart drummed for Rush.\n So the answer is: Neil Peart.\n<|im_end|>\n"
        "<|im_start|>user\nWikipedia Title: Neil Peart\nNeil Peart was the drummer of Rush.\n\n"
        "Wikipedia Title: Rush (band)\nRush was a Canadian rock band.\n\n"
        "Q: Which band had Neil Peart?\n\nClose now.<|im_end|>\n"
        "<|im_start|>assistant\nA: Neil Peart drummed for Rush.\n"
    )
    assert r.text[r.reasoning_start:] == " Neil Peart drummed for Rush.\n"
    assert r.messages is not None and r.messages[-1] == ("assistant", "A: Neil Peart drummed for Rush.\n")
    assert [m[0] for m in r.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert "Close now." not in teacher(state, final=False)
    # the student: the same user turn, no system message, no demonstrations, no cue
    student = PromptBuilder.student("chat", chatml)
    s = student.render(state, final=True)
    assert s.text == ("<|im_start|>user\n" + student_prompt(StepState(state.question, state.passages)).removesuffix("\nA:")
                      + "<|im_end|>\n<|im_start|>assistant\nA: Neil Peart drummed for Rush.\n")
    # consecutive chat steps share everything before the new passages' user turn
    nxt = StepState(state.question, state.passages, [*state.reasoning, "Rush is Canadian."])
    assert student(nxt).startswith(s.text[: s.text.index("Q: ")])
    assert student(nxt) == student(state) + completion_text("Rush is Canadian.")
    # without a template (a remote chat API) the messages are exact and the text is a record
    remote = PromptBuilder.student("chat").render(state)
    assert remote.messages == s.messages and "<|user|>" in remote.text


def test_completion_reasoning_start_marks_the_answer_field() -> None:
    state = StepState("q?", [P1], ["r1.", "r2."])
    r = PromptBuilder.student().render(state)
    assert r.text[r.reasoning_start:] == " r1.\n r2.\n" and r.messages is None


def test_teacher_prompt_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        TeacherPromptSpec.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("instruction: hi\n")
    with pytest.raises(UserError, match="malformed.*final_instruction"):
        TeacherPromptSpec.load(bad)
    cases = {
        b"\xff\xfeinstruction: hi\n": "is not UTF-8 text",
        b"instruction: [\n": "is not valid YAML",
        b"- a list\n": "it holds a list, not a mapping",
        b"instruction: null\nfinal_instruction: Close.\n": "'instruction' is None, not text",
        b"instruction: Hi.\nfinal_instruction: Close.\ndemonstrations:\n  - question: Q?\n"
        b"    passages: [{title: T, text: X.}]\n    reasoning: 'So the answer is: x.'\n":
            "demonstration 1: 'reasoning' must be a list of sentences, not str",
        b"instruction: Hi.\nfinal_instruction: Close.\ndemonstrations: {question: Q}\n":
            "'demonstrations' is a dict, not a list",
        b"instruction: Hi.\nfinal_instruction: Close.\ndemonstration: []\n":
            "unknown key(s) ['demonstration']; 'demonstrations' is missing ([] for none: a zero-shot teacher)",
    }
    for content, message in cases.items():
        bad.write_bytes(content)
        with pytest.raises(UserError, match=re.escape(message)):
            TeacherPromptSpec.load(bad)
    good = tmp_path / "good.yaml"  # the bundled file's shape, with other text
    good.write_text("instruction: Hi.\nfinal_instruction: Close.\ndemonstrations:\n  - question: Q?\n"
                    "    passages: [{title: T, text: X.}]\n    reasoning: [X., 'So the answer is: x.']\n")
    spec = TeacherPromptSpec.load(good)
    assert (spec.instruction, spec.demos[0].reasoning) == ("Hi.", ("X.", "So the answer is: x."))


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


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("The answer is Norway.", "Norway"),
        ("Answer: Norway", "Norway"),
        ("Therefore, the final answer is: 1993.", "1993"),
        ('The answer to the question is: "Mark C. Taylor"', "Mark C. Taylor"),
        ("He answered the call.", None),
    ],
)
def test_answer_marker_variants(text: str, answer: str | None) -> None:
    assert parse_answer(text) == answer
    assert has_answer_marker(text) == (answer is not None)


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
