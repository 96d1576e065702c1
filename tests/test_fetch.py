"""`vigie data fetch orangesum`: download from an upstream-like HTTP server on loopback (resumable, verified),
import a local clone or shards folder, and fail fast offline with a message saying what to do."""

import functools
import gzip
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from training.errors import InputError
from training.data.fetch import SHIFT, SHIFT_AFTER, clone_to_shards, fetch_orangesum, id_for_line
from training.data.readers import orangesum_repo_records, read_paths

from tests.conftest import REPO_SAMPLE


def upstream_copy(tmp_path: Path) -> Path:
    """repo-sample plus a url list in the documented format (line i -> parsed/<i>.json, shifted after 31,134).
    The real list is not in ../shared, so it is rebuilt from each sample page's og:url."""
    root = tmp_path / "upstream"
    shutil.copytree(REPO_SAMPLE, root)
    (root / "data" / "docs" / "splits").mkdir(exist_ok=True)
    urls = {int(rec["id"]): rec["url"] for _, rec in orangesum_repo_records(root, lambda s: None)}
    n_lines = max(i if i <= SHIFT_AFTER else i - SHIFT for i in urls) + 1
    lines = [""] * n_lines
    for i, u in urls.items():
        lines[i if i <= SHIFT_AFTER else i - SHIFT] = u
    (root / "data" / "links").mkdir(parents=True)
    (root / "data" / "links" / "urls_final.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def http_upstream(tmp_path):
    root = upstream_copy(tmp_path)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, requests
    httpd.shutdown()


def test_id_mapping_follows_the_upstream_readme():
    assert id_for_line(0) == 0 and id_for_line(31134) == 31134 and id_for_line(31135) == 31135 + 236


def test_download_convert_and_resume(http_upstream, tmp_path):
    base, root, requests = http_upstream
    dest = tmp_path / "raw" / "orangesum"
    fetch_orangesum(dest, base_url=base, progress=False)
    arts = list(read_paths([dest / "shards"], lambda s: None))
    assert len(arts) == 180
    assert len({a.section for a in arts}) == 12 and {a.origin_split for a in arts} == {"train"}
    # sections read off the url list equal those of the pages' own og:url
    expected = {a.id: a.section for a in read_paths([REPO_SAMPLE], lambda s: None)}
    assert {a.id: a.section for a in arts} == expected
    # resume: a second fetch downloads no article again
    requests.clear()
    fetch_orangesum(dest, base_url=base, progress=False)
    assert not [r for r in requests if "/parsed/" in r]
    # verification: a corrupt local file is fetched again
    victim = next((dest / "upstream" / "data" / "docs" / "parsed").glob("*.json"))
    victim.write_text("{broken")
    requests.clear()
    fetch_orangesum(dest, base_url=base, progress=False)
    assert [r for r in requests if "/parsed/" in r] == [f"/data/docs/parsed/{victim.name}"]


def test_offline_fails_fast_with_instructions(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(InputError, match="--from PATH"):
        fetch_orangesum(tmp_path / "o", base_url=f"http://127.0.0.1:{port}/", progress=False)


def test_import_local_shards_links_and_clone_converts(tmp_path):
    shared = REPO_SAMPLE.parent
    dest = tmp_path / "a"
    fetch_orangesum(dest, source=str(shared), progress=False)
    assert dest.is_symlink() and (dest / "shards").is_dir()
    dest2 = tmp_path / "b"
    fetch_orangesum(dest2, source=str(REPO_SAMPLE), progress=False)
    shards = sorted((dest2 / "shards").glob("*.jsonl.gz"))
    assert shards and sum(1 for f in shards for _ in gzip.open(f, "rt")) == 180
    rec = json.loads(gzip.open(shards[0], "rt").readline())
    assert {"id", "url", "label", "split", "title", "abstract", "text"} <= set(rec)
    with pytest.raises(InputError, match="neither a folder of shards"):
        fetch_orangesum(tmp_path / "c", source=str(tmp_path), progress=False)


def test_clone_conversion_is_atomic(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gzip, "open", fail)
    with pytest.raises(OSError):
        clone_to_shards(REPO_SAMPLE, tmp_path / "shards")
    assert not (tmp_path / "shards").exists()
