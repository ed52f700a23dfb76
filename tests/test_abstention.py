"""/v1/ask on questions phrased the way other people ask them, the client's operating point, and what happens
without a calibration that fits.

The questions below were written for these tests from reading the report (not taken from any question set):
casual chat, synonyms, words the report does not use. Those the method gets wrong today are kept, marked
xfail(strict=True) with the reason, so that they document what it misses and flag when a change fixes them.
"""

import json
import shutil

import pytest

from service.ask.reader import RUNTIME
from tests.conftest import make_client

pytestmark = pytest.mark.slow


def ask(client, question, **kw):
    r = client.post("/v1/ask", json={"question": question, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def xfail(*args, reason: str):
    return pytest.param(*args, marks=pytest.mark.xfail(strict=True, reason=reason))


ANSWERED = [
    ("Who's heading up the advisory board of the Europe hub?", "Phil Robb"),  # "Chairperson", not "heads"
    ("What did Cyborg rack up in commits last year?", "121"),
    ("how many newsletters went out in 2023", "10 OpenInfra Newsletters"),
    ("How many followers does the Foundation have across its social networks?", "418,000"),  # "social media"
    ("At which university did Chinese Kata developers act as mentors?", "North Dakota State University"),
    ("When is the Asia summit happening?", "September 2-3, 2024"),
    ("Which company jumped from Silver to Gold membership?", "Okestro"),  # "upgraded"
    ("How many events did user groups put on this year?", "60 events"),  # "held"
    ("What share of individual foundation members are in Asia?", "40%"),
    ("how much code did the CFN folks contribute?", "724k"),
    ("who signs the letter from the board chair?", "Julia Kreger"),
    ("which telco sits on the europe advisory board as a gold rep?", "Deutsche Telekom"),
    ("in how many countries do the Asia hub's members live?", "seven countries"),
    # an xfail until the byline reader (the session after 2026-12-07; refused at confidence 0.13 before)
    ("yo, how many people turned up to OpenInfra Days China in Beijing?", "464"),
    # a section's byline, read by the models as "Written by …" (the session after 2026-12-07); refused before
    ("Who wrote the section on the state of OpenInfra?", "Thierry Carrez"),
    ("whose name is on the China chapter?", "Haoyang Li"),
    ("who signed the piece introducing the regional hubs?", "Wes Wilson"),
    ("Which staff member authored the intro letter about threats to open source?", "Jonathan Bryce"),
    # an xfail until the query adapter: refused, its best sentence the social-media follower count
    ("roughly how big is the openinfra community, in people?", "110,000"),
]


@pytest.mark.parametrize("question,expected", ANSWERED)
def test_answerable_questions_in_other_words_are_answered(client, question, expected):
    body = ask(client, question)
    assert body["answerable"] is True, body["confidence"]
    assert expected in body["answer"]["text"]


NOT_ANSWERED = [
    "Recommend me a laptop for gaming",
    "How do I bake sourdough bread?",
    "Who won the 2022 football World Cup?",
    "zebra quokka xylophone",
    # off-topic questions whose words occur in the report: no retrieved passage is related in meaning
    "What's a good recipe for banana bread?",
    "who's the current president of France?",
    "What is the boiling point of water?",
    # near-miss questions: the report's own entities, a fact it never states
    "How many people work at the OpenInfra Foundation?",  # the report never counts its staff
    "how many folks showed up to the Korea OpenInfra Days?",  # only the total over four events is given
    # an xfail from the byline reader until the adapter of fourteen helper sets (the third session after
    # 2026-12-07), and again since the threshold keeps each author's false refusals within 4 % (0.346 → 0.162):
    xfail("Which Gold Member left the Foundation in 2023?",  # members joining are listed, none leaving
          reason="answered (confidence 0.32) with the sentence on Okestro's upgrade to Gold since the calibration on "
                 "four authors (threshold 0.163; it was refused at 0.346)"),
    "how many registrations did the Vancouver Summit get?",  # registrations are counted for Beijing only
    # xfails until the "no answer" class (2026-12-07):
    "What did a ticket to the Vancouver Summit cost?",  # no price is given
    "What's the Foundation's annual budget?",  # the report gives no amount of money
    # xfails until the adapter and the reader of twelve helper sets (the session after 2026-12-07):
    "Who chairs the OpenInfra Asia advisory board?",  # only OpenInfra Europe's board names a chairperson
    xfail("What's the email address of the OpenInfra Asia hub?",  # only a mailing-list URL is given
          reason="answered (confidence 0.53; 0.57 before the calibration on four authors, 0.54 before the "
                 "adapter of fourteen sets) since the byline reader "
                 "(the session after 2026-12-07) with the sentence that gives the hub's site and mailing list"),
    "How many commits did Zuul get in 2023?",  # commits are given for Cyborg, Skyline, Venus only
    xfail("When did the OpenInfra Asia advisory board first meet?",
          reason="answered at the calibrated threshold; no meeting date is given"),
]


@pytest.mark.parametrize("question", NOT_ANSWERED)
def test_questions_the_report_does_not_answer_are_refused(client, question):
    body = ask(client, question)
    assert body["answerable"] is False, (body["confidence"], body["answer"]["text"])
    assert body["answer"]["citations"] == [] and "does not say" in body["answer"]["text"]


def test_min_confidence_moves_the_operating_point(client):
    threshold = client.get("/v1/index").json()["calibration"]["threshold"]
    for q in ("Who chairs the OpenInfra Foundation board?", "How many commits did Zuul get in 2023?",
              "What is the boiling point of water?"):
        default = ask(client, q)
        assert default["answerable"] is (default["confidence"] >= threshold)
        eager, strict = ask(client, q, min_confidence=0.0), ask(client, q, min_confidence=1.0)
        assert eager["confidence"] == strict["confidence"] == default["confidence"]
        assert eager["answerable"] is True and eager["answer"]["citations"]  # a sentence was found for each
        assert strict["answerable"] is (strict["confidence"] >= 1.0)
        at = ask(client, q, min_confidence=default["confidence"])  # the boundary is inclusive
        assert at["answerable"] is True


@pytest.mark.parametrize("value", [-0.1, 1.5, "high"])
def test_min_confidence_outside_0_1_is_a_422(client, value):
    r = client.post("/v1/ask", json={"question": "Who chairs the board?", "min_confidence": value})
    assert r.status_code == 422 and "min_confidence" in r.text


def test_index_reports_the_calibration(client):
    cal = client.get("/v1/index").json()["calibration"]
    assert 0 < cal["threshold"] < 1 and cal["path"].endswith("calibration.json")
    assert cal["fitted_for"]["model"] == "sentence-transformers/all-MiniLM-L6-v2" and cal["fitted_for"]["chunker"]
    assert {s["dataset"] for s in cal["fitted_on"]} == {"report", "report-external", "helpers-m", "helpers-n"}
    assert cal["features"] and cal["fitted_at"]
    assert "reader" in cal["features"]
    assert cal["reader"]["adapter_sha256"] == cal["fitted_for"]["reader"]["adapter_sha256"]
    assert cal["reader"]["runtime"] == RUNTIME and "helpers-a/all" in cal["reader"]["trained_on"]


def test_without_a_calibration_that_fits_ask_is_a_503_and_search_still_serves(tmp_path, real_index, query_embedder):
    from service.ask.calibration import PACKAGED

    wrong = json.loads(PACKAGED.read_text())
    wrong["fitted_for"]["model"] = "someone/else"
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    for path, message in ((tmp_path / "wrong.json", "fitted for the model 'someone/else'"),
                          (tmp_path / "missing.json", "does not exist")):
        with make_client(real_index, query_embedder, calibration=path) as c:
            assert c.get("/readyz").status_code == 200  # ready: search does not need the calibration
            assert c.get("/v1/search", params={"q": "Kata Containers"}).status_code == 200
            r = c.post("/v1/ask", json={"question": "Who chairs the board?"})
            assert r.status_code == 503 and message in r.json()["detail"]
            assert "python -m eval calibrate" in r.json()["detail"]
            assert message in c.get("/v1/index").json()["calibration"]["error"]


def test_a_calibration_beside_the_index_is_preferred(tmp_path, real_index, query_embedder):
    from service.ask.calibration import PACKAGED

    index = tmp_path / "index"
    shutil.copytree(real_index, index)
    mine = json.loads(PACKAGED.read_text())
    mine["threshold"] = 0.999
    (index / "calibration.json").write_text(json.dumps(mine))
    with make_client(index, query_embedder) as c:
        cal = c.get("/v1/index").json()["calibration"]
        assert cal["threshold"] == 0.999 and cal["path"] == str(index / "calibration.json")
        assert ask(c, "Who chairs the OpenInfra Foundation board?")["answerable"] is False
