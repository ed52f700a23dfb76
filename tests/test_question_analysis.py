"""What /v1/ask reads off a question to decide whether a passage answers it (no model needed)."""

import pytest

from indexer.text import stem
from service.ask.evidence import Candidate, answer_text, counted_near, evidence_window, matches_term, refers_back
from service.ask.question import count_head, count_unit, focus_terms, question_type
from service.retrieval import Hit


@pytest.mark.parametrize("question,kind", [
    ("What was the OpenInfra Foundation's total revenue in 2023?", "money"),
    ("How much does Baidu pay per year for its membership?", "money"),
    ("What is the annual membership fee for a Silver Member?", "money"),
    ("How many commits did Cyborg receive?", "number"),
    ("By how much did the Foundation's membership grow?", "number"),
    ("When will the summit take place?", "date"),
    ("Who chairs the board?", "who"),
    ("Which Chinese search company became a new Gold Member?", "org"),
    ("What was the Foundation's third goal for 2023?", "other"),  # names a foundation, asks for a goal
    ("Do member companies have to pay extra to take part?", "other"),  # yes/no, not an amount
])
def test_question_type(question, kind):
    assert question_type(question) == kind


@pytest.mark.parametrize("question,head,unit", [
    ("How many registered WeChat official accounts does the China community have?", "account", ["account"]),
    ("How many registrants actually showed up at OpenInfra Days China?", "registr", ["registr"]),
    ("How many organizations sent attendees to the Summit?", "organ", ["organ"]),
    ("How many attendees came to the summit?", "attende", ["attende"]),
    ("How many people attended the meetup?", "peopl", []),  # generic: any noun for people will do
    ("What percentage of members are in Asia?", None, []),
])
def test_what_a_how_many_question_counts(question, head, unit):
    h = count_head(question)
    assert (h[:5] if h else None) == (head[:5] if head else None)
    assert [u[:5] for u in count_unit(question)] == [u[:5] for u in unit]


def test_a_count_must_sit_next_to_what_is_counted():
    q = "How many commits did Kata Containers receive?"
    assert counted_near("Cyborg had 121 commits in total.", q, count_head(q))
    assert not counted_near("Kata Containers 3.0 was released with features from 4 organizations.", q, count_head(q))
    people = "How many people attended OpenInfra Days?"
    assert counted_near("OpenInfra Days attracted a total of 1,862 in-person participants.", people, count_head(people))
    assert not counted_near("We gathered for four various OpenInfra Days in Korea.", people, count_head(people))
    assert not counted_near("The 2023 OpenInfra Days were a success.", people, count_head(people))  # a year


def test_focus_is_the_attribute_asked_for():
    assert [f[:5] for f in focus_terms("Who is the treasurer of the OpenInfra Foundation board?")] == ["treas"]
    assert "fee" in focus_terms("What is the annual membership fee for a Silver Member?")
    assert focus_terms("Who chairs the advisory board?") == []  # verbs are paraphrased too freely to require


def test_evidence_window_includes_list_headers_and_the_previous_sentence():
    text = "The board consists of:\nGold Member Representatives:\n- Ann Lee, Acme\n- Bo Chen, Initech"
    chunk = {"text": text, "heading_path": ["OpenInfra Asia"],
             "sentences": [(0, 22), (23, 51), (52, 66), (67, len(text))]}
    w = evidence_window(chunk, 3)
    assert "Bo Chen" in w and "Gold Member Representatives:" in w and "OpenInfra Asia" in w
    assert "Ann Lee" not in w
    prose = {"text": "The Summit was in Vancouver. It drew 50 countries.", "heading_path": [],
             "sentences": [(0, 28), (29, 50)]}
    assert "Vancouver" in evidence_window(prose, 1)


def _answer_of(text: str, sentences: list[tuple[int, int]], i: int) -> str:
    chunk = {"text": text, "heading_path": ["Message"], "sentences": sentences}
    a, b = sentences[i]
    return answer_text([Hit(0, chunk, 1.0, 0.5, 0.0)], Candidate(0, a, b, text[a:b], 0.5, 0.5, 1.0))


def test_an_answer_that_refers_back_brings_the_sentence_it_refers_to():
    text = ("Fears surrounding AI are rife. These concerns have led to proposals to regulate open source. "
            "In 2023 the board met twice.")
    spans = [(0, 30), (31, 92), (93, len(text))]
    assert _answer_of(text, spans, 1) == text[:92]  # "These concerns" is read with what they are
    assert _answer_of(text, spans, 2) == text[93:]  # self-contained: alone
    assert _answer_of(text, [(0, 30), (31, 92)], 0) == text[:30]  # the first sentence has nothing before it
    listed = "Members:\n- It Corp joined\n- Acme left"
    assert _answer_of(listed, [(0, 8), (9, 25), (26, len(listed))], 1) == "- It Corp joined"  # a list item
    after = "- Acme joined\nThey pay dues."
    assert _answer_of(after, [(0, 13), (14, len(after))], 1) == "They pay dues."  # nor one after a list
    alone = "These concerns are new. In 2023 the board met."
    assert _answer_of(alone, [(0, 23), (24, len(alone))], 0) == "These concerns are new."  # nothing before it


@pytest.mark.parametrize("sentence,back", [
    ("These events were held in Korea.", True), ("It drew 50 countries.", True),
    ("Such efforts continue.", True), ("They met in Vancouver.", True),
    ("The Summit was in Vancouver.", False), ("Kata Containers released 3.0.", False),
    ("Thereafter the board met.", False), ("", False),
])
def test_what_refers_back(sentence, back):
    assert refers_back(sentence) is back


@pytest.mark.parametrize("word,place,ok", [
    ("Chinese", "China", True), ("Korean", "Korea", True), ("European", "Europe", True), ("Asian", "Asia", True),
    ("Japanese", "Japan", True), ("registered", "registrations", True), ("Samsung", "Huawei", False),
])
def test_demonyms_and_word_families_match(word, place, ok):
    assert matches_term(stem(word.lower()), {stem(place.lower())}) is ok
