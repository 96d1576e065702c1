"""Every reader on real files from ../shared, and every bad input: a counted skip with a reason, or a clear
InputError naming the path — never a traceback."""

import gzip
import json
from pathlib import Path

import pytest

from training.data.article import InputError
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


# --- bad inputs --------------------------------------------------------------------------------------------

BAD_FILES = {
    "empty.txt": (b"", "empty file"),
    "blank.txt": (b"   \n\n", "empty file"),
    "binary.txt": (bytes(range(256)) * 10, "binary file"),
    "title_only.txt": ("Un titre sans corps\n\n".encode(), "no article body"),
    "no_article.html": (b"<html><head><title>x</title></head><body><nav>menu</nav></body></html>", "no article text"),
    "truncated.html": (b"<html><head><title>T</title></head><body><article><p>Debut d'un", None),
    "weird.docx": (b"PK\x03\x04", "unknown file type"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_are_counted_skips(tmp_path, name):
    data, reason = BAD_FILES[name]
    p = tmp_path / name
    p.write_bytes(data)
    arts, skips = read(p)
    if reason is None:  # truncated HTML: either salvaged or skipped, never an exception
        assert len(arts) + len(skips) == 1
    else:
        assert not arts and len(skips) == 1 and reason in skips[0].reason, skips


def test_legacy_encodings_and_bom(tmp_path):
    text = "L'été à Noël\nUn corps d'article avec des accents : é è à ç œ, et l’apostrophe."
    for enc, data in {"cp1252": text.encode("cp1252"), "latin1": text.replace("œ", "oe").replace("’", "'").encode("latin-1"),
                      "bom": b"\xef\xbb\xbf" + text.encode("utf-8")}.items():
        p = tmp_path / f"{enc}.txt"
        p.write_bytes(data)
        (a,), skips = read(p)
        assert a.title == "L'été à Noël" and "accents : é è à ç" in a.body and not skips


def test_fifty_megabyte_file_is_skipped_without_reading_it_all(tmp_path):
    p = tmp_path / "huge.txt"
    with open(p, "wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    arts, skips = read(p)
    assert not arts and "too large" in skips[0].reason


def test_jsonl_with_broken_and_wrong_typed_lines(tmp_path):
    p = tmp_path / "mixed.jsonl"
    good = {"id": 1, "title": "Titre", "abstract": "Chapô", "text": "Un corps."}
    p.write_text("\n".join([
        json.dumps(good), "{not json", json.dumps({**good, "id": 2, "title": 5}), json.dumps([1, 2]),
        json.dumps({"title": "sans id", "text": "x"}), json.dumps({**good, "id": 3, "text": ""}), json.dumps({**good, "id": 4}),
    ]) + "\n")
    arts, skips = read(p)
    assert [a.id for a in arts] == ["1", "4"]
    assert sorted(s.line for s in skips) == [2, 3, 4, 5, 6]
    assert all(str(p) in str(s) for s in skips)


def test_truncated_gzip_is_a_skip(tmp_path):
    data = (SHARDS / "orangesum_topic_09.jsonl.gz").read_bytes()[:5000]
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(data)
    arts, skips = read(p)
    assert skips and "truncated" in skips[-1].reason


def test_directory_without_articles(tmp_path):
    (tmp_path / "notes.csv").write_text("a,b\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    arts, skips = read(empty)
    assert not arts and skips[0].reason == "folder holds no article files"


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read(tmp_path / "nope")


def test_unreadable_file_as_root_is_simulated(tmp_path, monkeypatch):
    p = tmp_path / "secret.txt"
    p.write_text("Titre\nCorps")
    real = Path.read_bytes

    def deny(self):
        if self == p:
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    arts, skips = read(p)
    assert not arts and "permission denied" in skips[0].reason


def test_symlink_loop_is_skipped(tmp_path):
    d = tmp_path / "articles"
    d.mkdir()
    (d / "a.txt").write_text("Titre\nCorps de l'article.")
    (d / "loop").symlink_to(d, target_is_directory=True)
    (d / "dangling.txt").symlink_to(tmp_path / "missing.txt")
    arts, skips = read(d)
    assert [a.id for a in arts] == ["a"]
    reasons = " ".join(s.reason for s in skips)
    assert "symlink loop" in reasons and "not a regular file" in reasons
