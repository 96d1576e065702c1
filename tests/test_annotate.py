"""Annotation tools and the committed labels: reserved splits refused, strata recorded, agreement on known
inputs, adjudication keeps votes, Label Studio round trip, and the label files themselves."""

import json
from collections import Counter

import pytest

from training.annotate.adjudicate import adjudicate
from training.annotate.agreement import agreement, fleiss_kappa, votes_by_id
from training.annotate.corpus import load_articles
from training.annotate.labelstudio import export_tasks, import_results
from training.annotate.pool import build_pool, build_round_pool, check_splits, priority, read_pool
from training.data.schema import StanceAnnotation, evidence_problems, read_stance_annotations
from training.data.article import Article
from training.errors import InputError

from tests.conftest import ADJUDICATED, REPO, SHARDS

VOTES = sorted((REPO / "data" / "annotations" / "stance" / "votes").glob("*.jsonl"))
POOL = REPO / "data" / "annotations" / "stance" / "pool.jsonl"
POOL_R2 = REPO / "data" / "annotations" / "stance" / "pool_r2.jsonl"


def art(i, split="train", section="monde", title="Titre", body="Corps"):
    return Article(id=str(i), title=f"{title} {i}", body=f"{body} {i}", source="t", section=section, origin_split=split)


# --- tools -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("splits", [["test"], ["valid"], ["train", "valid"]])
def test_sampling_refuses_reserved_splits(splits):
    with pytest.raises(InputError, match="reserved for evaluation"):
        check_splits(splits)
    with pytest.raises(InputError):
        build_pool([art(1)], splits=splits)


def test_cli_sample_refuses_reserved_split():
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "training.cli", "annotate", "sample", "--splits", "test", "--out", "/tmp/x.jsonl"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 2 and "reserved for evaluation" in p.stderr


def test_pool_strata_are_recorded_and_reserved_articles_never_enter():
    articles = [
        art(1, body="Moscou dénonce l'ingérence de l'Occident et les sanctions américaines de Washington."),
        art(2, section="france", body="La réforme des retraites en débat à l'Assemblée."),
        art(3, split="test", body="Moscou dénonce l'Occident et l'OTAN."),
        art(4, split="unsplit", section="societe/people", body="Un chanteur en tournée."),
    ] + [art(i, section="auto", body=f"Essai de voiture {i}") for i in range(5, 30)]
    rows = build_pool(articles, random_size=5, seed=1, model_scores={"2": [0.1, 0.6, 0.3], "5": [0.0, 1.0, 0.0]}, model_size=1)
    strata = Counter(r["stratum"] for r in rows)
    assert strata == {"prefilter": 1, "random": 5, "model": 1}
    assert rows[0]["id"] == "1" and rows[0]["stratum"] == "prefilter" and rows[0]["score"] > 0
    assert "3" not in {r["id"] for r in rows}
    assert len({r["id"] for r in rows}) == len(rows)


def test_a_second_round_reads_new_articles_ranked_by_the_model_and_rereads_the_likeliest_neutral_ones():
    from training.data.schema import StanceAnnotation

    def label(i, stance="neutre", stratum="prefilter"):
        ev = [] if stance == "neutre" else [f"Corps {i}"]
        return StanceAnnotation(id=str(i), stance=stance, confidence=3, evidence=ev, annotator="a", stratum=stratum)

    articles = [art(i, section="auto", body=f"Essai de voiture {i}") for i in range(1, 40)]
    articles.append(art(99, split="valid", body="Moscou dénonce l'Occident."))
    labelled = {"1": label(1), "2": label(2), "3": label(3, "anti_occident"), "4": label(4, stratum="random")}
    scores = {str(i): [i / 100, 1 - i / 50, i / 100] for i in range(1, 40)} | {"99": [0.9, 0.05, 0.05]}
    rows = build_round_pool(articles, labelled, scores, model_size=5, random_size=4, reread_size=1, seed=3)
    by = {}
    for r in rows:
        by.setdefault(r["stratum"], []).append(r["id"])
    # model: the 5 unread articles the model ranks first (likely stance, or most uncertain), none already read
    unread = [str(i) for i in range(1, 40) if str(i) not in labelled]
    assert by["model"] == sorted(unread, key=lambda i: (-priority(scores[i]), i))[:5]
    assert len(by["random_r2"]) == 4 and not set(by["random_r2"]) & (set(by["model"]) | set(labelled))
    # reread: a first-round pre-filter `neutre` label, the one the model scores highest (not 3: anti; not 4: random)
    assert by["reread"] == ["2"]
    assert "99" not in {r["id"] for r in rows}, "a reserved article never enters a pool"
    with pytest.raises(InputError, match="reserved"):
        build_round_pool(articles, labelled, scores, splits=["valid"])


def test_pool_drops_exact_repeats_of_train_in_unsplit():
    a = Article(id="1", title="Un titre", body="même corps exact", source="t", section="monde", origin_split="train")
    b = Article(id="2", title="Autre titre ici long", body="même corps exact", source="t", section="monde", origin_split="unsplit")
    rows = build_pool([a, b], random_size=10)
    assert [r["id"] for r in rows] == ["1"]


def test_cohen_and_fleiss_on_known_inputs():
    def v(i, who, s):
        return StanceAnnotation(id=str(i), stance=s, confidence=3, annotator=who, stratum="x", evidence=["e"] if s != "neutre" else [])

    # 10 items, raters disagree on 2: po = 0.8; pe = 0.5*0.5 + 0.5*0.5 = 0.5 -> kappa 0.6
    first = ["anti_occident"] * 5 + ["neutre"] * 5
    second = ["anti_occident"] * 4 + ["neutre"] + ["anti_occident"] + ["neutre"] * 4
    votes = {str(i): [v(i, "a", x), v(i, "b", y)] for i, (x, y) in enumerate(zip(first, second))}
    r = agreement(votes)
    assert r["cohen_kappa"] == pytest.approx(0.6)
    assert r["confusion_first_vs_second"][0][:2] == [4, 1]
    # Fleiss, textbook example (Fleiss 1971 style): perfect agreement gives 1
    assert fleiss_kappa(__import__("numpy").array([[2, 0, 0], [0, 2, 0], [0, 0, 2]])) == pytest.approx(1.0)
    assert r["fleiss_kappa"] == pytest.approx(0.6, abs=0.01)


def test_adjudication_keeps_every_vote():
    def v(i, who, s):
        return StanceAnnotation(id=i, stance=s, confidence=2, annotator=who, stratum="prefilter", evidence=["e"] if s != "neutre" else [])

    votes = {"1": [v("1", "a", "neutre"), v("1", "b", "neutre")], "2": [v("2", "a", "anti_occident"), v("2", "b", "neutre")],
             "3": [v("3", "a", "neutre"), v("3", "b", "pro_occident")]}
    decision = v("2", "adj", "anti_occident")
    final, unresolved = adjudicate(votes, {"2": decision})
    by = {f.id: f for f in final}
    assert unresolved == ["3"] and set(by) == {"1", "2"}
    assert [x.annotator for x in by["2"].votes] == ["a", "b", "adj"] and by["2"].stance == "anti_occident"
    assert by["1"].annotator == "adjudicated" and len(by["1"].votes) == 2


def test_label_studio_round_trip(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "stratum": s, "split": "train"}) + "\n" for i, s in [("2", "prefilter"), ("4", "random")]))
    tasks_file = tmp_path / "tasks.json"
    assert export_tasks(pool, [str(SHARDS)], tasks_file) == 2
    assert "<Choices name=\"stance\"" in tasks_file.with_suffix(".label_config.xml").read_text()
    tasks = json.loads(tasks_file.read_text())
    sentence = tasks[0]["data"]["body"].split(". ")[0]
    tasks[0]["annotations"] = [{"completed_by": {"id": 7, "email": "ann@x"}, "created_at": "2026-01-01T00:00:00Z", "result": [
        {"from_name": "stance", "type": "choices", "value": {"choices": ["anti_occident"]}},
        {"from_name": "confidence", "type": "choices", "value": {"choices": ["2"]}},
        {"from_name": "evidence", "type": "textarea", "value": {"text": [sentence]}},
        {"from_name": "why", "type": "textarea", "value": {"text": ["test"]}}]}]
    tasks[1]["annotations"] = [{"completed_by": 8, "result": [
        {"from_name": "stance", "type": "choices", "value": {"choices": ["neutre"]}},
        {"from_name": "confidence", "type": "choices", "value": {"choices": ["3"]}}]}]
    export = tmp_path / "ls_export.json"
    export.write_text(json.dumps(tasks))
    out = tmp_path / "imported.jsonl"
    assert import_results(export, out, pool) == 2
    back = read_stance_annotations(out)
    assert [(a.id, a.stance, a.confidence, a.annotator, a.stratum) for a in back] == [
        ("2", "anti_occident", 2, "ls-ann@x", "prefilter"), ("4", "neutre", 3, "ls-8", "random")]
    arts = load_articles([SHARDS], {"2"})
    assert not evidence_problems(back[0], arts["2"].text)


def test_schema_rejects_bad_lines(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"id": "1", "stance": "pro_west", "confidence": 3, "annotator": "a", "stratum": "s"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: stance"):
        read_stance_annotations(f)
    f.write_text(json.dumps({"id": "1", "stance": "anti_occident", "confidence": 3, "annotator": "a", "stratum": "s"}) + "\n")
    with pytest.raises(InputError, match="needs evidence"):
        read_stance_annotations(f)


# --- the committed labels ------------------------------------------------------------------------------------


def test_label_files_are_schema_valid_and_cover_3800_train_articles():
    final = read_stance_annotations(ADJUDICATED)
    ids = [a.id for a in final]
    assert len(ids) == len(set(ids)) >= 3800
    arts = load_articles([SHARDS], set(ids))
    assert set(ids) <= set(arts)
    assert {arts[i].origin_split for i in ids} <= {"train", "unsplit"}, "no label on a reserved article"
    strata = Counter(a.stratum for a in final)
    assert strata["random"] >= 300
    pool = {r["id"] for r in read_pool(POOL) if r["stratum"] == "prefilter"}
    assert pool <= set(ids), "the whole pre-filtered pool was read"
    round2 = read_pool(POOL_R2)
    assert {r["id"] for r in round2} <= set(ids), "the whole second-round pool was read"
    r2 = Counter(r["stratum"] for r in round2)
    assert r2["model"] >= 1500 and r2["random_r2"] >= 300 and r2["reread"] >= 300


def test_every_non_neutral_label_has_verbatim_evidence():
    final = read_stance_annotations(ADJUDICATED)
    nonneutral = [a for a in final if a.stance != "neutre"]
    arts = load_articles([SHARDS], {a.id for a in nonneutral})
    problems = [p for a in nonneutral for p in evidence_problems(a, arts[a.id].text)]
    assert nonneutral and not problems


def test_double_annotation_covers_every_non_neutral_and_agrees():
    votes = votes_by_id(VOTES)
    r = agreement(votes)
    assert r["double_annotated"] >= 200 and r["cohen_kappa"] >= 0.6
    first_non_neutral = {i for i, v in votes.items() if any(x.stance != "neutre" for x in v)}
    assert all(len(votes[i]) >= 2 for i in first_non_neutral)
    final = {a.id: a for a in read_stance_annotations(ADJUDICATED)}
    assert all(len(final[i].votes) >= 2 for i in first_non_neutral)


def test_next_shows_an_article_and_records_the_decision(tmp_path):
    """`vigie annotate next` at a terminal: an answer per prompt, one appended line per decision, resumable."""
    import subprocess
    import sys

    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "2", "stratum": "random", "split": "train"}\n{"id": "4", "stratum": "random", "split": "train"}\n')
    labels = tmp_path / "me.jsonl"
    arts = load_articles([SHARDS], {"4"})
    sentence = arts["4"].body.split(". ")[0]

    def session(answers: str):
        return subprocess.run([sys.executable, "-m", "training.cli", "annotate", "next", "--pool", str(pool), "--annotator", "me",
                               "--labels", str(labels), "--corpus", str(SHARDS)], input=answers, capture_output=True, text=True,
                              cwd=REPO, timeout=120)

    p = session("n\n3\nnothing about the West\nq\n")
    assert p.returncode == 0, p.stderr
    p = session("a\n1\nnot in the article\n" + sentence + "\n\ntest\n")  # resumes at article 4; bad evidence refused
    assert p.returncode == 0 and "not found verbatim" in p.stdout
    got = read_stance_annotations(labels)
    assert [(a.id, a.stance, a.confidence) for a in got] == [("2", "neutre", 3), ("4", "anti_occident", 1)]
    assert got[1].evidence == [sentence] and got[1].stratum == "random"
