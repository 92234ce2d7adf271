"""`fss-sam2 download` against a local HTTP server on 127.0.0.1 (no other host is ever contacted).

The server serves a temporary folder; the first path segment picks its behaviour:
``/range/<file>`` honours Range (206), ``/norange/<file>`` ignores it (200), ``/cut/<file>`` closes
the connection half-way through the body on the first request for a file (later requests honour
Range).
"""
from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fss_sam2 import download as dl
from fss_sam2.cli import download as cli_download

GOOD = bytes(range(256)) * 1200 + b"tail"  # 307204 bytes, several chunks of the 64 KiB test chunk size
CORRUPT = GOOD[:1000] + b"X" + GOOD[1001:]  # same size, one byte off
FREE = b"no checksum published for this one\n" * 5000


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


# --------------------------------------------------------------------------- the local server

class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "fss-test/1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        m = re.fullmatch(r"/(range|norange|cut)/([^/]+)", self.path)
        path = srv.root / m.group(2) if m else None
        with srv.lock:
            srv.requests.append((self.path, self.headers.get("Range")))
        if m is None or not path.is_file():
            self.send_error(404, "Not Found")
            return
        mode, data = m.group(1), path.read_bytes()
        rng = self.headers.get("Range")
        if mode == "cut":
            with srv.lock:
                first = path.name not in srv.cut_done
                srv.cut_done.add(path.name)
            if first:  # announce the full length, send half, hang up
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
        if rng and mode != "norange":
            r = re.fullmatch(r"bytes=(\d+)-", rng)
            start = int(r.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.root, srv.requests, srv.cut_done, srv.lock = root, [], set(), threading.Lock()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def only_localhost(monkeypatch):
    """Belt and braces: any name lookup other than 127.0.0.1 / localhost fails the test."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"test tried to resolve {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    monkeypatch.setattr(dl, "CHUNK", 1 << 16)  # several chunks per fixture file
    monkeypatch.delenv(dl.ENV_URL_BASE, raising=False)


def entry(filename, data=None, algo="sha256", size=None, verified=True):
    """A test registry entry; its official URL is unroutable on purpose (tests always give url_base)."""
    digest = (sha256(data) if algo == "sha256" else md5(data)) if verified else None
    return dl.RemoteFile(url=f"http://invalid.example/{filename}", filename=filename, size=size,
                         checksum_algo=algo if verified else None, checksum=digest,
                         checksum_source="the test" if verified else None)


def registry(*files, name="thing"):
    return {name: dl.Bundle(name, "weights", "test bundle", tuple(files))}


def fetch(reg, out, base, name="thing", **kw):
    kw.setdefault("retries", 0)
    kw.setdefault("retry_wait", 0)
    kw.setdefault("progress", False)
    kw.setdefault("timeout", 5)
    return dl.download(name, out, registry=reg, url_base=base, **kw)


# --------------------------------------------------------------------------- behaviour

def test_good_file_verified_and_then_already_there(server, tmp_path, capsys):
    (server.root / "good.bin").write_bytes(GOOD)
    reg = registry(entry("good.bin", GOOD, size=len(GOOD)))
    out = tmp_path / "out"
    [path] = fetch(reg, out, server.base + "/range", progress=True)
    assert path == out / "good.bin" and path.read_bytes() == GOOD
    assert not (out / "good.bin.part").exists() and not (out / "good.bin.sha256").exists()
    assert "sha256 verified" in capsys.readouterr().out
    n = len(server.requests)
    fetch(reg, out, server.base + "/range")
    assert len(server.requests) == n  # no request: the file was checked on disk
    assert "already there" in capsys.readouterr().out


def test_md5_entry(server, tmp_path):
    (server.root / "good.bin").write_bytes(GOOD)
    [path] = fetch(registry(entry("good.bin", GOOD, algo="md5")), tmp_path, server.base + "/range")
    assert path.read_bytes() == GOOD


def test_checksum_mismatch_deletes_the_part(server, tmp_path):
    (server.root / "good.bin").write_bytes(CORRUPT)
    out = tmp_path / "out"
    with pytest.raises(dl.DownloadError) as e:
        fetch(registry(entry("good.bin", GOOD)), out, server.base + "/range")
    msg = str(e.value)
    assert "good.bin" in msg and sha256(GOOD) in msg and sha256(CORRUPT) in msg and "checksum mismatch" in msg
    assert not (out / "good.bin").exists() and not (out / "good.bin.part").exists()


def test_existing_file_with_wrong_checksum_is_fetched_again(server, tmp_path, capsys):
    (server.root / "good.bin").write_bytes(GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "good.bin").write_bytes(CORRUPT)
    [path] = fetch(registry(entry("good.bin", GOOD)), out, server.base + "/range")
    assert path.read_bytes() == GOOD
    assert "downloading again" in capsys.readouterr().out


def test_interrupted_transfer_resumes_from_the_part(server, tmp_path, capsys):
    (server.root / "good.bin").write_bytes(GOOD)
    reg = registry(entry("good.bin", GOOD))
    out = tmp_path / "out"
    with pytest.raises(dl.DownloadError) as e:
        fetch(reg, out, server.base + "/cut")
    assert "interrupted" in str(e.value) and "good.bin" in str(e.value)
    part = out / "good.bin.part"
    assert part.read_bytes() == GOOD[: len(GOOD) // 2] and not (out / "good.bin").exists()
    [path] = fetch(reg, out, server.base + "/cut")
    assert path.read_bytes() == GOOD and not part.exists()
    assert server.requests[-1] == ("/cut/good.bin", f"bytes={len(GOOD) // 2}-")  # a Range request
    assert "resuming at byte" in capsys.readouterr().out


def test_interruption_is_resumed_automatically_with_retries(server, tmp_path):
    (server.root / "good.bin").write_bytes(GOOD)
    [path] = fetch(registry(entry("good.bin", GOOD)), tmp_path, server.base + "/cut", retries=1)
    assert path.read_bytes() == GOOD
    assert [r for _, r in server.requests] == [None, f"bytes={len(GOOD) // 2}-"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path, capsys):
    (server.root / "good.bin").write_bytes(GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "good.bin.part").write_bytes(b"garbage that must not stay in front" * 10)
    [path] = fetch(registry(entry("good.bin", GOOD)), out, server.base + "/norange")
    assert path.read_bytes() == GOOD
    assert server.requests[-1][1] is not None  # we did ask for a range
    assert "ignored the Range request" in capsys.readouterr().out


def test_complete_part_is_verified_without_a_new_transfer(server, tmp_path):
    (server.root / "good.bin").write_bytes(GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "good.bin.part").write_bytes(GOOD)  # e.g. killed between the last byte and the rename
    [path] = fetch(registry(entry("good.bin", GOOD)), out, server.base + "/range")
    assert path.read_bytes() == GOOD
    assert server.requests == [("/range/good.bin", f"bytes={len(GOOD)}-")]  # answered 416 bytes */len


def test_part_longer_than_the_file_restarts_from_zero(server, tmp_path):
    (server.root / "good.bin").write_bytes(GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "good.bin.part").write_bytes(GOOD + b"extra")
    [path] = fetch(registry(entry("good.bin", GOOD)), out, server.base + "/range")
    assert path.read_bytes() == GOOD
    assert [r for _, r in server.requests] == [f"bytes={len(GOOD) + 5}-", None]


def test_size_mismatch(server, tmp_path):
    (server.root / "good.bin").write_bytes(GOOD)
    out = tmp_path / "out"
    with pytest.raises(dl.DownloadError) as e:
        fetch(registry(entry("good.bin", GOOD, size=len(GOOD) + 1)), out, server.base + "/range")
    msg = str(e.value)
    assert "size mismatch" in msg and "good.bin" in msg and str(len(GOOD) + 1) in msg and str(len(GOOD)) in msg
    assert not (out / "good.bin").exists() and not (out / "good.bin.part").exists()


def test_http_404_names_the_url(server, tmp_path):
    with pytest.raises(dl.DownloadError) as e:
        fetch(registry(entry("missing.bin", GOOD)), tmp_path, server.base + "/range")
    assert "404" in str(e.value) and f"{server.base}/range/missing.bin" in str(e.value)
    assert not list(tmp_path.glob("missing.bin*"))


def test_unreachable_host_names_the_url(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with pytest.raises(dl.DownloadError) as e:
        fetch(registry(entry("good.bin", GOOD)), tmp_path, base, timeout=2)
    assert "cannot reach" in str(e.value) and f"{base}/good.bin" in str(e.value)


def test_no_published_checksum_records_sha256(server, tmp_path, capsys):
    (server.root / "free.bin").write_bytes(FREE)
    reg = registry(entry("free.bin", verified=False))
    out = tmp_path / "out"
    [path] = fetch(reg, out, server.base + "/range")
    side = out / "free.bin.sha256"
    assert side.read_text() == f"{sha256(FREE)}  free.bin\n"  # sha256sum -c format
    assert sha256(FREE) in capsys.readouterr().out
    fetch(reg, out, server.base + "/range")
    assert "already there" in capsys.readouterr().out
    path.write_bytes(FREE[:-1] + b"?")  # damaged later: no longer matches what was recorded
    fetch(reg, out, server.base + "/range")
    assert path.read_bytes() == FREE and "downloading again" in capsys.readouterr().out


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(dl.UnknownNameError) as e:
        dl.download("nope", tmp_path, registry=registry(entry("a.bin", GOOD), name="alpha"))
    assert "'nope'" in str(e.value) and "alpha" in str(e.value)


# --------------------------------------------------------------------------- the command line

def parser():
    p = argparse.ArgumentParser(prog="fss-sam2")
    cli_download.add_parser(p.add_subparsers(dest="command", required=True))
    return p


def run_cli(*argv):
    a = parser().parse_args(["download", *argv])
    return a.func(a)


def test_cli_unknown_name(capsys):
    assert run_cli("sam2-tiny") == 2
    err = capsys.readouterr().err
    assert "'sam2-tiny'" in err and all(name in err for name in dl.REGISTRY)


def test_cli_list_and_help_name_the_unverified_files(capsys):
    assert run_cli("--list") == 0
    out = capsys.readouterr().out
    assert all(name in out for name in dl.REGISTRY)
    for _, filename in dl.unverified_files():
        assert re.search(rf"{re.escape(filename)} .*\n\s+checksum: NONE PUBLISHED", out)
    help_text = parser()._subparsers._group_actions[0].choices["download"].format_help()
    assert "NO published checksum" in help_text
    assert all(filename in help_text for _, filename in dl.unverified_files())


def test_cli_download_through_a_mirror_env_var(server, tmp_path, monkeypatch, capsys):
    fake = b"not really a checkpoint" * 100
    (server.root / "sam2_hiera_small.pt").write_bytes(fake)
    monkeypatch.setenv(dl.ENV_URL_BASE, server.base + "/range")
    assert run_cli("sam2-small", "--out", str(tmp_path), "--quiet") == 0
    assert (tmp_path / "sam2_hiera_small.pt").read_bytes() == fake
    assert sha256(fake) in capsys.readouterr().out
    assert (tmp_path / "sam2_hiera_small.pt.sha256").read_text().startswith(sha256(fake))


def test_cli_checksum_failure_exits_1(server, tmp_path, capsys):
    (server.root / "benchmark.tgz").write_bytes(GOOD)  # not the real SBD archive: md5 differs
    out = tmp_path / "out"
    rc = run_cli("sbd", "--out", str(out), "--url-base", server.base + "/range", "--quiet", "--retries", "0")
    assert rc == 1
    err = capsys.readouterr().err
    assert "benchmark.tgz" in err and dl.REGISTRY["sbd"].files[0].checksum in err and md5(GOOD) in err
    assert not list(out.iterdir())  # neither the file nor its .part


# --------------------------------------------------------------------------- the registry

def test_registry_entries():
    assert set(dl.REGISTRY) == {"sam2-small", "sam2-base-plus", "sam2-large", "dinov2-vits14", "dinov2-vitb14",
                                "dinov2-vitl14", "dinov2-vitg14", "voc2012", "sbd", "coco2014"}
    for b in dl.REGISTRY.values():
        assert b.kind in dl.DEFAULT_OUT and b.files
        for f in b.files:
            assert f.url.startswith(("http://", "https://")) and f.url.rsplit("/", 1)[1] == f.filename
            assert f.url_source
            assert f.size is None or (isinstance(f.size, int) and f.size > 0 and f.size_source)
            if f.verified:
                assert f.checksum_source and len(f.checksum) == hashlib.new(f.checksum_algo).digest_size * 2
    assert dl.REGISTRY["sam2-small"].files[0].url == \
        "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt"  # SAM 2.0, not 2.1
    assert [f.filename for f in dl.REGISTRY["coco2014"].files] == \
        ["train2014.zip", "val2014.zip", "annotations_trainval2014.zip"]


def test_import_does_no_network():
    code = ("import socket\n"
            "def boom(*a, **k): raise SystemExit('network used at import')\n"
            "socket.socket.connect = boom; socket.getaddrinfo = boom; socket.create_connection = boom\n"
            "import fss_sam2.download, fss_sam2.cli.download\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
