"""Relation triples (subject, Wikidata relation label, object) as English sentences.

MuSiQue's decomposition steps ("Van Hook Township >> located in the administrative territorial
entity") and 2WikiMultihopQA's evidences (["Forbidden Ground", "director", "Pál Gábor"]) name
Wikidata properties. "The <relation> of <subject> is <object>." reads well for noun relations
(director, spouse, capital) and badly for the rest ("The located in the administrative
territorial entity of ..."); the evidence teacher's sentences are what the student learns to
write, so each relation shape gets a template here, and unknown relations fall back by shape.
"""

from __future__ import annotations

import re

# {s}: subject, {o}: object, {a_o}: the object as "a/an <o>" (or "one of the <o>" for a
# plural), {on}: "on"/"in" for a date.
TEMPLATES: dict[str, str] = {
    "located in the administrative territorial entity": "{s} is located in {o}.",
    "contains administrative territorial entity": "{s} contains {o}.",
    "shares border with": "{s} shares a border with {o}.",
    "located on terrain feature": "{s} is located on {o}.",
    "located in or next to body of water": "{s} lies on {o}.",
    "mouth of the watercourse": "{s} flows into {o}.",
    "crosses": "{s} crosses {o}.",
    "location of formation": "{s} was formed in {o}.",
    "work location": "{s} worked in {o}.",
    "licensed to broadcast to": "{s} is licensed to broadcast to {o}.",
    "applies to jurisdiction": "{s} applies to {o}.",
    "part of": "{s} is part of {o}.",
    "member of": "{s} is a member of {o}.",
    "member of sports team": "{s} played for {o}.",
    "member of political party": "{s} is a member of {o}.",
    "capital of": "{s} is the capital of {o}.",
    "instance of": "{s} is {a_o}.",
    "educated at": "{s} was educated at {o}.",
    "employer": "{s} worked for {o}.",
    "position held": "{s} held the position of {o}.",
    "award received": "{s} received {o}.",
    "conflict": "{s} took part in {o}.",
    "named after": "{s} is named after {o}.",
    "follows": "{s} followed {o}.",
    "cast member": "{o} is a cast member of {s}.",
    "place of birth": "{s} was born in {o}.",
    "place of death": "{s} died in {o}.",
    "date of birth": "{s} was born {on} {o}.",
    "date of death": "{s} died {on} {o}.",
    "publication date": "{s} was published {on} {o}.",
    "inception": "{s} was founded {on} {o}.",
    "has part": "{s} includes {o}.",
}

# A full date ("2 November 1932", "November 2, 1932", "1932-11-02") takes "on"; a year or a
# month and year takes "in".
_FULL_DATE = re.compile(r"\d{1,2} [A-Za-z]+ \d{3,4}|[A-Za-z]+ \d{1,2}, \d{3,4}|\d{4}-\d{2}-\d{2}")


def _with_article(noun: str) -> str:
    """'a march', 'an island', 'one of the hotels' (a plural class name, as Wikidata has some)."""
    last = noun.split()[-1].lower() if noun.split() else ""
    if last.endswith("s") and not last.endswith(("ss", "us", "is")):
        return f"one of the {noun}"
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def relation_sentence(subject: str, relation: str, obj: str) -> str:
    """One grammatical sentence stating (subject, relation, object).

    ``relation`` is a Wikidata property label ("place of birth") or its snake_case form
    ("place_of_birth"). Known relations use TEMPLATES; an unknown one ending in "by" becomes
    "<s> is <relation> <o>." (passive), any other "The <relation> of <s> is <o>." (noun).
    """
    rel = " ".join(relation.replace("_", " ").split()).lower()
    template = TEMPLATES.get(rel)
    if template is None:
        template = "{s} is " + rel + " {o}." if rel.endswith(" by") else "The " + rel + " of {s} is {o}."
    sentence = template.format(s=subject, o=obj, a_o=_with_article(obj),
                               on="on" if _FULL_DATE.fullmatch(obj.strip()) else "in")
    return sentence[0].upper() + sentence[1:]
