"""Hostile inputs on real parts: a loopback server that loops, lies and drips, archives with
unsafe member names, file names holding ``::``, null URLs, outputs overlapping inputs, and a
second process writing beside a cleanup."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from flows.build_dataset import build_dataset
from koala import storage
from koala.fetch import TRANSIENT_REASONS, fetch, make_client
from koala.images import Rejected
from koala.settings import get_settings
from koala.sources import (
    OUTPUT_MARKER,
    SourceError,
    check_output_apart,
    enumerate_inputs,
)
from tests.conftest import free_port
from tests.fixtures import colour_photo, encode

ROOT = Path(__file__).resolve().parent.parent
CAP = 2 * 1024 * 1024
DRIP_INTERVAL_S = 0.3  # under the tests' 1.5 s read timeout: every single read succeeds
DEADLINE_S = 2.0


class HostileServer:
    """``/img/<name>`` serves ``files``; ``/loop`` redirects to itself, ``/gzip.jpg`` sends a
    body that is not the gzip it claims, ``/drip.jpg`` drips its body and ``/driphead.jpg`` its
    headers one byte every DRIP_INTERVAL_S (for at most 15 s), ``/busy.jpg`` is always 503."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _drip(self, data: bytes) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    for byte in data[:50]:  # bounded: stops by itself
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(DRIP_INTERVAL_S)

            def do_GET(self) -> None:
                path = self.path
                if path == "/loop":
                    self.send_response(302)
                    self.send_header("Location", "/loop")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/gzip.jpg":
                    body = b"this is not gzip data at all"
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif path == "/drip.jpg":
                    self.send_response(200)
                    self.send_header("Content-Length", "5000")
                    self.end_headers()
                    self._drip(b"\xff" * 50)
                elif path == "/driphead.jpg":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    self._drip(b"X-Slow: " + b"a" * 42)
                elif path == "/busy.jpg":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path.startswith("/img/") and path[5:] in server.files:
                    body = server.files[path[5:]]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()


@pytest.fixture
def short_deadline(koala_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tests' fast HTTP settings with a DEADLINE_S overall deadline per download."""
    monkeypatch.setenv("KOALA_HTTP_DEADLINE_S", str(DEADLINE_S))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def rejection(uri: str) -> Rejected:
    with make_client(2) as client, pytest.raises(Rejected) as err:
        fetch(uri, client, CAP, attempts=2)
    assert "\n" not in err.value.detail and "_Transient" not in err.value.detail
    return err.value


# -- downloads ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("short_deadline")
@pytest.mark.parametrize(
    ("path", "reason", "detail"),
    [
        ("/loop", "download_failed", "too many redirects (20)"),
        ("/gzip.jpg", "download_failed", "Content-Encoding 'gzip'"),
        ("/missing.jpg", "download_failed", "HTTP 404 Not Found"),
        ("/busy.jpg", "download_unavailable", "HTTP 503 Service Unavailable after 2 attempts"),
    ],
    ids=["redirect-loop", "bad-gzip", "404", "503"],
)
def test_hostile_answers_are_rejections_that_say_what_happened(
    hostile: HostileServer, path: str, reason: str, detail: str
) -> None:
    err = rejection(hostile.url + path)
    assert err.reason == reason and detail in err.detail, err.detail
    assert (reason in TRANSIENT_REASONS) == (reason != "download_failed")


@pytest.mark.usefixtures("short_deadline")
@pytest.mark.parametrize(
    "url", ["http://[::1/x.jpg", "http:///x.jpg", "http://\x01bad/x.jpg", "https://" + "a" * 70]
)
def test_malformed_urls_are_final_rejections(url: str) -> None:
    err = rejection(url)
    assert err.reason == "download_failed" and err.detail.startswith("invalid URL ("), err.detail


@pytest.mark.usefixtures("short_deadline")
def test_refused_connection_is_transient() -> None:
    err = rejection(f"http://127.0.0.1:{free_port()}/x.jpg")  # nothing listens there
    assert err.reason == "download_unavailable" and err.reason in TRANSIENT_REASONS
    assert err.detail.startswith("connection failed after 2 attempts ("), err.detail


@pytest.mark.usefixtures("short_deadline")
@pytest.mark.parametrize("path", ["/drip.jpg", "/driphead.jpg"], ids=["body", "headers"])
def test_a_dripping_server_is_cut_off_at_the_deadline(hostile: HostileServer, path: str) -> None:
    t0 = time.monotonic()
    err = rejection(hostile.url + path)
    elapsed = time.monotonic() - t0
    assert err.reason == "download_timeout" and err.reason in TRANSIENT_REASONS
    assert f"not complete within the {DEADLINE_S:g} s deadline" in err.detail, err.detail
    assert DEADLINE_S - 0.1 <= elapsed < DEADLINE_S + 1.5  # each byte came within the timeout


@pytest.mark.usefixtures("prefect_server", "short_deadline")
def test_build_dataset_survives_a_hostile_url_list(tmp_path: Path, hostile: HostileServer) -> None:
    for i in range(3):
        hostile.files[f"{i}.jpg"] = encode(colour_photo(400 + i))
    good = [f"{hostile.url}/img/{i}.jpg" for i in range(3)]
    expected = {
        f"{hostile.url}/loop": ("download_failed", "too many redirects"),
        f"{hostile.url}/gzip.jpg": ("download_failed", "Content-Encoding 'gzip'"),
        "http://[::1/x.jpg": ("download_failed", "invalid URL"),
        f"{hostile.url}/nope.jpg": ("download_failed", "HTTP 404 Not Found"),
        f"{hostile.url}/drip.jpg": ("download_timeout", "deadline"),
    }
    lines = [good[0], *list(expected)[:3], good[1], *list(expected)[3:], good[2]]
    (tmp_path / "urls.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"

    stats = build_dataset(
        sources=[str(tmp_path / "urls.txt")],
        out=str(out),
        splits="1,0,0",
        max_rejected_fraction=0.9,
    )

    index = pd.read_parquet(out / "index.parquet").set_index("uri")
    assert sorted(index.index) == sorted(lines) and stats["accepted"] == 3
    assert (index.loc[good, "status"] == "accepted").all()
    for url, (reason, detail) in expected.items():
        row = index.loc[url]
        assert row["status"] == "rejected" and row["reason"] == reason, (url, row["detail"])
        assert detail in row["detail"] and "\n" not in row["detail"], (url, row["detail"])
    assert (out / OUTPUT_MARKER).is_file()


@pytest.mark.usefixtures("short_deadline")
def test_a_remote_archive_that_cannot_be_downloaded_is_one_clear_line(
    tmp_path: Path, hostile: HostileServer
) -> None:
    with pytest.raises(SourceError, match=r"cannot download the archive \(.*404") as err:
        enumerate_inputs([f"{hostile.url}/gone.tar"], str(tmp_path / "_staging"))
    assert "\n" not in str(err.value)


# -- archives, file names and URL lists ---------------------------------------------------------

UNSAFE_MEMBERS = ["../evil.jpg", "a/../../b.jpg", "/abs.jpg", "sub/x::y.jpg", "./dot.jpg", "ok.jpg"]


def write_archives(folder: Path) -> dict[str, bytes]:
    """A tar and a zip holding UNSAFE_MEMBERS, each a distinct photo; returns name -> bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = (500, 501, 502, 504, 505, 506)  # not the sky-and-rocket sample (seed % 4 == 3)
    pairs = zip(seeds, UNSAFE_MEMBERS, strict=True)
    images = {name: encode(colour_photo(seed)) for seed, name in pairs}
    with tarfile.open(folder / "unsafe.tar", "w") as tar:
        for name, data in images.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(folder / "unsafe.zip", "w") as z:
        for name, data in images.items():
            z.writestr(name, data)
    return images


@pytest.mark.usefixtures("koala_env")
@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_every_archive_member_is_listed_and_read_by_its_exact_name(
    tmp_path: Path, kind: str
) -> None:
    images = write_archives(tmp_path)
    refs = enumerate_inputs([str(tmp_path / f"unsafe.{kind}")], str(tmp_path / "_staging"))
    members = {r.uri[len(kind) + 3 :].rpartition("::")[0]: r for r in refs}
    assert sorted(members) == sorted(images)  # none vanished, none nameless
    with make_client(1) as client:
        for name, ref in members.items():
            assert fetch(ref.uri, client, CAP, attempts=1) == images[name], name
            assert ref.stamp and ref.stamp.startswith(f"{len(images[name])}:")
    with make_client(1) as client, pytest.raises(Rejected) as err:
        fetch(f"{kind}://not/there.jpg::{tmp_path / f'unsafe.{kind}'}", client, CAP, 1)
    assert err.value.reason == "missing"


@pytest.mark.usefixtures("koala_env")
def test_a_local_file_name_holding_double_colons_is_read_as_a_plain_path(tmp_path: Path) -> None:
    folder = tmp_path / "scans::2024"
    folder.mkdir()
    (folder / "scan::1.jpg").write_bytes(data := encode(colour_photo(7)))
    (folder / "plain.jpg").write_bytes(encode(colour_photo(8)))
    refs = enumerate_inputs([str(folder)], str(tmp_path / "_staging"))
    assert [Path(r.uri).name for r in refs] == ["plain.jpg", "scan::1.jpg"]
    with make_client(1) as client:
        assert fetch(refs[1].uri, client, CAP, attempts=1) == data
    single = enumerate_inputs([str(folder / "scan::1.jpg")], str(tmp_path / "_staging"))
    assert single[0].uri == str(folder / "scan::1.jpg")
    stat = (folder / "scan::1.jpg").stat()
    assert single[0].stamp == refs[1].stamp == f"{stat.st_size}:{stat.st_mtime}"


@pytest.mark.usefixtures("prefect_server", "koala_env")
def test_build_dataset_reads_unsafe_members_and_colon_names_and_skips_old_outputs(
    tmp_path: Path,
) -> None:
    images = write_archives(tmp_path / "archives")
    src = tmp_path / "scans"
    (src / "prev").mkdir(parents=True)
    (src / "scan::1.jpg").write_bytes(encode(colour_photo(600)))
    (src / "prev" / OUTPUT_MARKER).write_text("{}")  # an earlier Koala output inside the source
    (src / "prev" / "result.jpg").write_bytes(encode(colour_photo(601)))
    args = {
        "sources": [str(src), str(tmp_path / "archives" / "unsafe.tar")],
        "out": str(tmp_path / "out"),
        "splits": "1,0,0",
    }
    stats = build_dataset(**args)
    index = pd.read_parquet(tmp_path / "out" / "index.parquet")
    names = sorted(u.rpartition("::")[0][len("tar://") :] for u in index["uri"][1:])
    assert index["uri"][0] == str(src / "scan::1.jpg") and names == sorted(images)
    assert (index["status"] == "accepted").all(), index[["uri", "reason", "detail"]]
    assert stats["accepted"] == len(images) + 1
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "shards").iterdir()}
    build_dataset(**args)  # same stamps: a no-op rerun
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "shards").iterdir()}


def test_null_urls_in_csv_and_parquet_lists_are_skipped(tmp_path: Path) -> None:
    pd.DataFrame({"url": ["http://h/a.jpg", None, "http://h/b.jpg"]}).to_parquet(
        tmp_path / "l.parquet"
    )
    (tmp_path / "l.csv").write_text("url,caption\nhttp://h/c.jpg,a cat\n,no url here\n")
    refs = enumerate_inputs([str(tmp_path / "l.parquet"), str(tmp_path / "l.csv")], str(tmp_path))
    assert [r.uri for r in refs] == ["http://h/a.jpg", "http://h/b.jpg", "http://h/c.jpg"]
    assert all(r.stamp is None for r in refs)


def test_a_folder_holding_an_earlier_koala_output_is_not_listed(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    (src / "old_run" / "shards").mkdir(parents=True)
    (src / "old_run" / OUTPUT_MARKER).write_text("{}")
    (src / "old_run" / "shards" / "x.jpg").write_bytes(encode(colour_photo(1)))
    (src / "old_run_2.jpg").write_bytes(encode(colour_photo(2)))  # a sibling sharing a prefix
    (src / "keep.jpg").write_bytes(encode(colour_photo(3)))
    refs = enumerate_inputs([str(src)], str(tmp_path / "_staging"))
    assert sorted(Path(r.uri).name for r in refs) == ["keep.jpg", "old_run_2.jpg"]
    with pytest.raises(SourceError, match="output of an earlier Koala run") as err:
        enumerate_inputs([str(src / "old_run")], str(tmp_path / "_staging"))
    assert "\n" not in str(err.value)


# -- output apart from the inputs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "output", "problem"),
    [
        ("{t}/a/b", "{t}/a/b/", "is the input"),
        ("{t}/a/b/images", "{t}/a/b", "contains the input"),
        ("{t}/a/b", "{t}/a/b/colorized", "lies inside the input"),
        ("{t}/a/b", "{t}/link/out", "lies inside the input"),  # link -> a/b
        ("{t}/a/./c/../b", "{t}/a/b/x", "lies inside the input"),
        ("imagenet:{t}/a/b?per_class=2", "{t}/a/b/ds", "lies inside the input"),
        ("flickr8k:{t}/a/b/f8k.zip", "{t}/a", "contains the input"),
        ("{t}/a/urls.txt", "{t}/a/urls.txt", "is the input"),
        ("{t}/a/b/pics.tar", "{t}/a", "contains the input"),
        ("s3://bucket/in/", "s3a://bucket/in/out", "lies inside the input"),
        ("s3://bucket/in/x", "s3://bucket/in", "contains the input"),
    ],
)
def test_an_output_overlapping_an_input_is_refused_in_one_line(
    tmp_path: Path, source: str, output: str, problem: str
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    source, output = source.format(t=tmp_path), output.format(t=tmp_path)
    with pytest.raises(SourceError) as err:
        check_output_apart(["http://h/list.txt", source], output)
    msg = str(err.value)
    assert f"output {output!r} {problem} {source!r}" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("source", "output"),
    [
        ("{t}/a/b", "{t}/a/bc"),
        ("{t}/a/bc", "{t}/a/b"),
        ("{t}/a/urls.txt", "{t}/a/urls"),
        ("http://h/a/b/", "{t}/a/b"),
        ("s3://bucket/a/b", "s3://bucket/a/bc"),
        ("s3://bucket/a/b", "s3://other/a/b"),
        ("s3://bucket/a/b", "{t}/bucket/a/b"),
    ],
)
def test_an_output_beside_the_input_is_allowed(tmp_path: Path, source: str, output: str) -> None:
    check_output_apart([source.format(t=tmp_path)], output.format(t=tmp_path))


@pytest.mark.usefixtures("prefect_server", "koala_env")
def test_build_dataset_refuses_an_output_inside_its_input_before_any_work(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    (src / "a.jpg").write_bytes(encode(colour_photo(1)))
    with pytest.raises(SourceError, match="lies inside the input"):
        build_dataset(sources=[str(src)], out=str(src / "ds"), splits="1,0,0")
    assert not (src / "ds").exists()


# -- temporaries of concurrent writers -----------------------------------------------------------

_WRITER = """
import sys
from koala import storage
with storage.atomic_open(sys.argv[1]) as f:
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    sys.stdin.readline()  # hold the temporary open until told to finish or killed
"""


def test_cleanup_keeps_a_live_writers_temporary_and_removes_a_dead_ones(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", _WRITER, str(tmp_path / "chunk.tar")]
    live = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    doomed = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        for proc in (live, doomed):
            assert proc.stdout.readline() == b"writing\n"
        temps = sorted(tmp_path.glob(".chunk.tar.tmp-*"))
        assert {t.name.split("-")[-2] for t in temps} == {str(live.pid), str(doomed.pid)}
        assert storage.remove_stale_temporaries(str(tmp_path)) == 0  # both writers alive
        doomed.kill()
        doomed.wait()
        assert storage.remove_stale_temporaries(str(tmp_path)) == 1
        left = list(tmp_path.glob(".chunk.tar.tmp-*"))
        assert len(left) == 1 and f"-{live.pid}-" in left[0].name
        live.stdin.write(b"done\n")
        live.stdin.flush()
        assert live.wait(timeout=30) == 0
    finally:
        for proc in (live, doomed):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert (tmp_path / "chunk.tar").read_bytes() == b"partial"
    assert not list(tmp_path.glob(".chunk.tar.tmp-*"))


def test_cleanup_ages_out_temporaries_it_cannot_ask_about(tmp_path: Path) -> None:
    old = time.time() - 2 * storage.FOREIGN_TEMPORARY_MAX_AGE_S
    names = {
        ".a.tar.tmp-otherhost-123-0badc0de": old,  # another host's, old: gone
        ".b.tar.tmp-otherhost-123-0badc0de": time.time(),  # another host's, fresh: kept
        ".c.tar.tmp-0badc0de": old,  # an older Koala's name, old: gone
        ".d.tar.tmp-0badc0de": time.time(),  # an older Koala's name, fresh: kept
    }
    for name, mtime in names.items():
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (mtime, mtime))
    assert storage.remove_stale_temporaries(str(tmp_path)) == 2
    assert sorted(p.name[:3] for p in tmp_path.glob(".*")) == [".b.", ".d."]
