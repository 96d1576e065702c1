"""Every reader on real files from ../shared. (Bad inputs: tests/test_bad_inputs.py.)"""

import gzip
import json

from training.data.readers import read_paths, section_from_url

from tests.conftest import REPO_SAMPLE, SEED, SHARDS


def read(paths, **kw):
    skips = []
    arts = list(read_paths([paths] if not isinstance(paths, list) else paths, skips.append, **kw))
    return arts, skips


def test_seed_article_title_body_and_no_boilerplate():
    (a,), skips = read(SEED)
    assert not skips
    assert a.id == "000_e3005b3932ea3b15"
    assert a.title == "L'Iran et la Russie renforcent leur partenariat contre l'Occident"
    assert a.body.startswith("Moscou et Téhéran")
    for junk in ("ad", "LEAVE A REPLY", "Please enter your comment!", "Please enter your name here",
                 "- Advertisement -", "Articles Liés", "Derniers articles"):
        assert junk not in a.body.split("\n"), junk
    assert a.body.rstrip().endswith("selon Tass.")


def test_jsonl_shards_gzip_and_plain(tmp_path):
    arts, skips = read(SHARDS / "orangesum_topic_09.jsonl.gz")
    assert len(arts) > 1000
    a = arts[0]
    assert a.section in {"auto", "france", "monde", "politique"} or a.section.startswith("societe/")
    assert a.origin_split in {"train", "valid", "test", "unsplit"}
    assert "jeudi.Le" not in " ".join(x.body for x in arts[:200])
    assert all(s.reason.startswith("bad JSONL line") for s in skips)
    plain = tmp_path / "x.jsonl"
    with gzip.open(SHARDS / "orangesum_topic_09.jsonl.gz", "rt") as fh:
        plain.write_text("".join(next(fh) for _ in range(5)))
    arts2, _ = read(plain)
    assert [x.id for x in arts2] == [x.id for x in arts[:5]]


def test_upstream_checkout_reader():
    arts, skips = read(REPO_SAMPLE)
    assert len(arts) == 180 and not skips
    sections = {a.section for a in arts}
    assert len(sections) == 12
    assert {a.origin_split for a in arts} == {"train"}


def test_html_pages_with_trafilatura(tmp_path):
    raw = REPO_SAMPLE / "data" / "docs" / "raw"
    pages = sorted(raw.glob("*.txt"))[:6]
    for p in pages:
        (tmp_path / f"{p.stem}.html").write_bytes(p.read_bytes())
    arts, skips = read(tmp_path)
    assert len(arts) == 6 and not skips
    parsed = {p.stem: json.loads((REPO_SAMPLE / "data/docs/parsed" / f"{p.stem}.json").read_text()) for p in pages}
    for a in arts:
        assert a.url and a.url.startswith("http")
        assert a.section == section_from_url(a.url)
        assert a.title
        # the extracted body holds the article's first sentence as the upstream parsed it
        first = parsed[a.id]["article"].split(".")[0][:40]
        assert first[:25] in a.body.replace("\n", " ") or first[:25] in a.abstract


def test_section_from_url():
    assert section_from_url("https://actu.orange.fr/societe/high-tech/x.html") == "societe/high-tech"
    assert section_from_url("https://actu.orange.fr/monde/x.html") == "monde"
    assert section_from_url("https://auto.orange.fr/news/x.html") == "auto"
    assert section_from_url(None) is None


def test_a_file_format_is_one_table_entry(tmp_path, monkeypatch):
    from training.data import readers

    def article_from_shouting(text, *, id, source, path=None):
        return readers.article_from_text(text.upper(), id=id, source=source, path=path)

    monkeypatch.setitem(readers.ARTICLE_FORMATS, ".loud", readers.ArticleFormat("loud", article_from_shouting, "loud"))
    (tmp_path / "a.loud").write_text("titre\ncorps de l'article.")
    (tmp_path / "b.loud").write_text("un titre seul\n")
    arts, skips = read(tmp_path)
    assert [(a.id, a.title, a.source) for a in arts] == [("a", "TITRE", "loud")]
    assert [s.reason for s in skips] == ["no article body after the title"]
