"""The evidence teacher writes relation triples as grammatical sentences, and never answers an
unanswerable question."""

from __future__ import annotations

import pytest

from steper_ray.data import read_dataset
from steper_ray.data.records import QuestionRecord
from steper_ray.reasoning.generators.evidence import (
    EvidenceGenerator,
    evidence_sentences,
)
from steper_ray.reasoning.generators.protocol import GenRequest
from steper_ray.reasoning.generators.relations import relation_sentence


@pytest.mark.parametrize(("subject", "relation", "obj", "sentence"), [
    ("Van Hook Township", "located in the administrative territorial entity", "Mountrail County",
     "Van Hook Township is located in Mountrail County."),
    ("Outagamie County", "shares border with", "Brown County", "Outagamie County shares a border with Brown County."),
    ("Appleton", "capital of", "Outagamie County", "Appleton is the capital of Outagamie County."),
    ("Desert Studies Center", "part of", "California State University",
     "Desert Studies Center is part of California State University."),
    ("Kris Benson", "member of sports team", "Pittsburgh Pirates", "Kris Benson played for Pittsburgh Pirates."),
    ("Mel Gibson", "educated at", "National Institute of Dramatic Art",
     "Mel Gibson was educated at National Institute of Dramatic Art."),
    ("Iowa State University", "instance of", "land-grant university", "Iowa State University is a land-grant university."),
    ("X", "instance of", "island", "X is an island."),
    ("Edsa Shangri-La, Manila", "instance of", "hotels", "Edsa Shangri-La, Manila is one of the hotels."),
    ("Rooster Cogburn", "cast member", "John Wayne", "John Wayne is a cast member of Rooster Cogburn."),
    ("Pál Gábor", "date of birth", "2 November 1932", "Pál Gábor was born on 2 November 1932."),
    ("Boundaries of the Heart", "publication date", "1988", "Boundaries of the Heart was published in 1988."),
    ("Amy McKenzie", "place_of_birth", "Appleton", "Amy McKenzie was born in Appleton."),
    ("The Miami Hurricane", "owned by", "University of Miami", "The Miami Hurricane is owned by University of Miami."),
    ("Anna Benson", "spouse", "Kris Benson", "The spouse of Anna Benson is Kris Benson."),  # noun fallback
    ("Forbidden Ground", "director", "Pál Gábor", "The director of Forbidden Ground is Pál Gábor."),
    ("iPod", "manufacturer", "Apple", "The manufacturer of iPod is Apple."),  # capitalised
])
def test_relation_sentences(subject: str, relation: str, obj: str, sentence: str) -> None:
    assert relation_sentence(subject, relation, obj) == sentence


def test_musique_and_2wiki_evidence_reads_as_sentences() -> None:
    rec = read_dataset("sample:musique/dev.jsonl").records[0]
    assert evidence_sentences(rec) == ["Van Hook Township is located in Mountrail County.",
                                       "The capital of Mountrail County is Stanley."]
    wiki = read_dataset("sample:2wikimultihopqa/dev.jsonl").records[0]
    assert evidence_sentences(wiki)[0] == "The director of Forbidden Ground is Pál Gábor."
    bad_shapes = [s for r in read_dataset("sample:musique/train.json").records for s in evidence_sentences(r)
                  if " of of " in s or s.startswith(("The located", "The member of", "The part of", "The educated"))]
    assert bad_shapes == []


def test_evidence_teacher_refuses_unanswerable_questions() -> None:
    rec = QuestionRecord(id="q::unanswerable", question="Q?", answers=["A"], dataset="musique",
                         meta={"answerable": False})
    out = EvidenceGenerator([rec]).generate([GenRequest("prompt", question_id="q::unanswerable", step=1, final=True)])
    assert out[0].text == "" and "unanswerable" in (out[0].error or "")
