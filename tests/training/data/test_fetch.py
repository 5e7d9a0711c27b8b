"""The download path against a loopback HTTP server (127.0.0.1) serving zip archives built here;
nothing touches the internet."""

import hashlib
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.training.data.trees import make_ravdess, make_tess
from training.data import fetch
from training.data.corpora import ENV_VAR
from training.data.corpus import CorpusError
from training.data.fetch import (
    CHUNK_BYTES,
    SOURCES,
    FetchError,
    fetch_corpus,
    main,
    publisher_hashes,
)
from training.data.ravdess import load_ravdess

RAVDESS_CLIPS = 2 * 15  # the tree below: 2 actors, every emotion and intensity


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours Range when ``server.ranges``; cuts the body of the
    next ``server.cut`` responses in half, as a dropped connection does."""

    def do_GET(self):
        server = self.server
        data = server.files.get(self.path)
        server.log.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if wanted and server.ranges:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if server.cut:
            server.cut -= 1
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.log, httpd.ranges, httpd.cut = {}, [], True, 0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def zip_tree(root: Path, skip: int = 0) -> bytes:
    """The tree as zip bytes (paths relative to ``root``), leaving out the first ``skip`` clips."""
    archive = root.parent / f"{root.name}.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(p for p in root.rglob("*") if p.is_file())[skip:]:
            out.write(path, path.relative_to(root).as_posix())
    return archive.read_bytes()


@pytest.fixture
def ravdess_zip(tmp_path):
    """About 300 kB: a few of the downloader's chunks, so half a download keeps some."""
    zipped = zip_tree(make_ravdess(tmp_path / "src", actors=(1, 2), seconds=0.3))
    assert len(zipped) > 4 * CHUNK_BYTES
    return zipped


@pytest.fixture
def small_sources(monkeypatch):
    """The release clip counts of the small trees here."""
    monkeypatch.setitem(SOURCES, "ravdess", replace(SOURCES["ravdess"], clips=RAVDESS_CLIPS))
    monkeypatch.setitem(SOURCES, "tess", replace(SOURCES["tess"], clips=2 * 7 * 2))
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_download_verify_extract_and_licence(tmp_path, server, ravdess_zip, small_sources, capsys):
    server.files["/a.zip"] = ravdess_zip
    to = tmp_path / "corpora"
    argv = ["ravdess", "--to", str(to), "--url", f"ravdess={server.url}/a.zip", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "CC BY-NC-SA 4.0" in out and "doi.org/10.5281/zenodo.1188976" in out
    assert "non-commercial use" in out and "Livingstone" in out
    assert len(load_ravdess(to / "ravdess", labels=("sad", "calm"))) == 8
    assert not (to / "downloads" / SOURCES["ravdess"].archive).exists()  # removed once verified
    assert not (to / ".ravdess.partial").exists()
    assert main(argv) == 0 and len(server.log) == 1  # complete: not fetched again


def test_resume_after_a_dropped_connection(tmp_path, server, ravdess_zip, small_sources):
    server.files["/a.zip"], server.cut = ravdess_zip, 1
    root = fetch_corpus(
        SOURCES["ravdess"], tmp_path, url=f"{server.url}/a.zip", progress=False, retries=1,
        known_hash="sha256:" + hashlib.sha256(ravdess_zip).hexdigest(), keep_archive=True,
    )  # fmt: skip
    (first, resumed) = server.log
    assert first == ("/a.zip", None) and resumed[1].startswith("bytes=")
    kept = int(resumed[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < kept <= len(ravdess_zip) // 2 and kept % CHUNK_BYTES == 0
    assert (tmp_path / "downloads" / SOURCES["ravdess"].archive).read_bytes() == ravdess_zip
    assert len(load_ravdess(root)) == 2 * 7
    assert not (tmp_path / "downloads" / f"{SOURCES['ravdess'].archive}.part").exists()


def test_resume_from_kept_bytes_and_a_server_without_ranges(
    tmp_path, server, ravdess_zip, small_sources
):
    server.files["/a.zip"] = ravdess_zip
    part = tmp_path / "one" / "downloads" / f"{SOURCES['ravdess'].archive}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(ravdess_zip[:1000])
    fetch_corpus(SOURCES["ravdess"], tmp_path / "one", url=f"{server.url}/a.zip", progress=False)
    assert server.log == [("/a.zip", "bytes=1000-")] and not part.exists()
    # a server that ignores Range sends everything: the kept bytes are replaced
    server.ranges, server.log[:] = False, []
    part = tmp_path / "two" / "downloads" / f"{SOURCES['ravdess'].archive}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 500)
    root = fetch_corpus(
        SOURCES["ravdess"], tmp_path / "two", url=f"{server.url}/a.zip", progress=False
    )
    assert len(load_ravdess(root)) == 2 * 7


@pytest.mark.parametrize("extra", [0, 10])
def test_kept_bytes_of_the_whole_file_or_more(tmp_path, server, ravdess_zip, small_sources, extra):
    """The server answers 416: kept bytes that are the whole archive are it; more start anew."""
    server.files["/a.zip"] = ravdess_zip
    part = tmp_path / "downloads" / f"{SOURCES['ravdess'].archive}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(ravdess_zip + b"x" * extra)
    url = f"{server.url}/a.zip"
    root = fetch_corpus(SOURCES["ravdess"], tmp_path, url=url, progress=False, retries=1)
    assert len(load_ravdess(root)) == 2 * 7
    asked = [(f"bytes={len(ravdess_zip) + extra}-")] + ([None] if extra else [])
    assert [wanted for _, wanted in server.log] == asked


def test_corrupt_archive(tmp_path, server, ravdess_zip, small_sources):
    url = f"{server.url}/a.zip"
    server.files["/a.zip"] = b"PK\x03\x04 not really a zip" + ravdess_zip[100:200]
    with pytest.raises(FetchError, match="not a valid zip archive"):
        fetch_corpus(SOURCES["ravdess"], tmp_path, url=url, progress=False, retries=0)
    assert not (tmp_path / "downloads" / SOURCES["ravdess"].archive).exists()
    assert not (tmp_path / "ravdess").exists()
    good = "sha256:" + hashlib.sha256(ravdess_zip).hexdigest()
    with pytest.raises(FetchError, match="does not match the known hash"):
        fetch_corpus(
            SOURCES["ravdess"], tmp_path, url=url, known_hash=good, progress=False, retries=0
        )
    assert not (tmp_path / "ravdess").exists()


def test_incomplete_archive_fails_the_count(tmp_path, server, small_sources):
    server.files["/a.zip"] = zip_tree(make_ravdess(tmp_path / "src", actors=(1, 2)), skip=3)
    with pytest.raises(CorpusError, match=f"27 clips, the release has {RAVDESS_CLIPS}"):
        fetch_corpus(SOURCES["ravdess"], tmp_path / "to", url=f"{server.url}/a.zip", progress=False)
    assert not (tmp_path / "to" / "ravdess").exists()
    assert not (tmp_path / "to" / ".ravdess.partial").exists()
    assert server.log == [("/a.zip", None)]


def test_tess_files_against_the_publisher_checksums(tmp_path, server, small_sources):
    src = make_tess(tmp_path / "src", words=("back", "bite"))
    server.files["/tess.zip"] = zip_tree(src)
    hashes = {p.name: "md5:" + hashlib.md5(p.read_bytes()).hexdigest() for p in src.rglob("*.wav")}
    url = f"{server.url}/tess.zip"
    wrong = {**hashes, "OA_bite_neutral.wav": "md5:" + "0" * 32}
    with pytest.raises(CorpusError, match="OA_bite_neutral.wav: md5 differs from the publisher's"):
        fetch_corpus(SOURCES["tess"], tmp_path / "to", url=url, file_hashes=wrong, progress=False)
    root = fetch_corpus(
        SOURCES["tess"], tmp_path / "to", url=url, file_hashes=hashes, progress=False
    )
    assert len(list(root.rglob("*.wav"))) == 28


def test_existing_incomplete_tree_is_not_overwritten(tmp_path, small_sources):
    make_ravdess(tmp_path / "ravdess", actors=(1,))
    with pytest.raises(FetchError, match="exists but is not the complete release"):
        fetch_corpus(SOURCES["ravdess"], tmp_path, url="http://127.0.0.1:9/never", progress=False)


def test_given_corpora_are_used_as_they_are(tmp_path, monkeypatch, capsys):
    given = tmp_path / "given"
    make_tess(given / "tess", emotions=("sad",), fmt="flac")
    monkeypatch.setenv(ENV_VAR, str(given))
    to = tmp_path / "to"
    assert main(["tess", "--to", str(to), "--url", "tess=http://127.0.0.1:9/never"]) == 0
    out = capsys.readouterr().out
    assert f"tess: using {given / 'tess'} as it is (6 clips), not downloading" in out
    assert "CC BY-NC-ND 4.0" in out and "10.5683/SP2/E8H2MF" in out and not to.exists()
    (given / "tess" / "YAF_sad" / "YAF_x1_sad.flac").write_bytes(b"")
    monkeypatch.delenv(ENV_VAR)
    assert main(["tess", "--to", str(to), "--corpora", str(given)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_publisher_checksums_only_for_the_official_source(monkeypatch, capsys):
    def record(source):
        return {"Audio_Speech_Actors_01-24.zip": "md5:" + "a" * 32, "OAF_back_sad.wav": "md5:b"}

    monkeypatch.setattr(fetch, "publisher_checksums", record)
    ravdess, tess = SOURCES["ravdess"], SOURCES["tess"]
    assert publisher_hashes(ravdess, None, None)["known_hash"] == "md5:" + "a" * 32
    assert publisher_hashes(tess, None, None)["file_hashes"]["OAF_back_sad.wav"] == "md5:b"
    assert publisher_hashes(ravdess, "http://mirror/x.zip", None) == {
        "url": "http://mirror/x.zip", "known_hash": None, "file_hashes": None,
    }  # fmt: skip
    assert publisher_hashes(ravdess, None, "sha256:c")["known_hash"] == "sha256:c"

    def offline(source):
        raise OSError("no route to host")

    monkeypatch.setattr(fetch, "publisher_checksums", offline)
    assert publisher_hashes(tess, None, None)["file_hashes"] is None
    assert "no checksums from the publisher (no route to host)" in capsys.readouterr().out
