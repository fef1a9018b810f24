"""Weights manager: lookup order, verification, and resumable downloads against a local HTTP server."""

import hashlib
import os
import random
import re
import socket
import threading
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from vidrestore import weights
from vidrestore.errors import WeightsError
from vidrestore.models import MODELS

DATA = random.Random(0).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
NAME = "test-model"
SPEC = weights.WeightSpec(NAME, "test.pth", "https://example.invalid/test.pth", len(DATA), SHA, "test file")


@dataclass
class ServerState:
    """What the fake release server serves, how it misbehaves, and what it was asked."""

    files: dict[str, bytes]
    cut_after: int | None = None  # send only this many body bytes of the next response, then close
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)

    @property
    def ranges(self) -> list[str]:
        return [r for _, r in self.requests if r is not None]


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            data = state.files.get(self.path.lstrip("/"))
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng and not state.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_after is not None:
                body, state.cut_after = body[: state.cut_after], None
            self.wfile.write(body)  # HTTP/1.0: the connection closes after this, short or not

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, no offline dirs or mirror from the environment, an empty hash cache, a test entry."""
    home = tmp_path / "home"
    monkeypatch.setenv("VIDRESTORE_HOME", str(home))
    for var in ("VIDRESTORE_WEIGHTS_DIR", "VIDRESTORE_WEIGHTS_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(weights, "_VERIFIED", set())
    monkeypatch.setitem(weights.REGISTRY, NAME, SPEC)
    return home


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    state = ServerState(files={SPEC.filename: DATA})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    monkeypatch.setenv("VIDRESTORE_WEIGHTS_URL", f"http://127.0.0.1:{httpd.server_address[1]}/")
    yield state
    httpd.shutdown()
    httpd.server_close()


def _cached(filename: str = SPEC.filename) -> Path:
    return weights.cache_dir() / "weights" / filename


def _part(filename: str = SPEC.filename) -> Path:
    return _cached(filename + ".part")


def _set_spec(monkeypatch: pytest.MonkeyPatch, **changes: object) -> weights.WeightSpec:
    spec = replace(SPEC, **changes)
    monkeypatch.setitem(weights.REGISTRY, NAME, spec)
    return spec


def _error(**kwargs: object) -> str:
    with pytest.raises(WeightsError) as info:
        weights.resolve(NAME, progress=False, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# The real entries, read at import time: the autouse fixture adds the test entry only later.
OFFICIAL = [name for name in weights.REGISTRY if name != NAME]


def test_registry_entries_are_coherent() -> None:
    """The official entries (sizes and hashes from FIELD-NOTES.md) hang together as resolve() needs them to.

    The real values cannot be checked without the 350 MB files; what can fail here is an entry whose file
    name is not what its URL downloads, a size or hash in the wrong form, two entries sharing a cache file
    or a hash (a copy-paste slip), or a model name the loader asks for that the registry does not have.
    """
    assert OFFICIAL
    filenames, hashes = set(), set()
    for name in OFFICIAL:
        spec = weights.REGISTRY[name]
        assert spec.name == name
        url = urlsplit(spec.url)
        parts = url.path.split("/")
        assert (url.scheme, url.query, url.fragment) == ("https", "", ""), spec.url
        if url.netloc == "raw.githubusercontent.com":  # a file committed to a repository, pinned to a commit
            assert len(parts) >= 5 and re.fullmatch("[0-9a-f]{40}", parts[3]) and all(parts[1:]), spec.url
        else:
            assert url.netloc == "github.com" and len(parts) == 7 and all(parts[1:]), spec.url
            assert parts[3:5] == ["releases", "download"], spec.url
        assert parts[-1] == spec.filename and "/" not in spec.filename, (name, spec.url, spec.filename)
        assert spec.size is None or (type(spec.size) is int and spec.size > 0), (name, spec.size)
        assert spec.sha256 is None or re.fullmatch("[0-9a-f]{64}", spec.sha256), (name, spec.sha256)
        assert spec.filename not in filenames, f"two entries share the cache file {spec.filename}"
        assert spec.sha256 is None or spec.sha256 not in hashes, f"{name} repeats another entry's sha256"
        filenames.add(spec.filename)
        hashes.add(spec.sha256)
    assert {spec.weights for spec in MODELS.values()} <= set(OFFICIAL)


@pytest.mark.parametrize("name", OFFICIAL)
def test_verify_accepts_the_file_and_rejects_a_changed_byte(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each official entry, with its size and hash swapped for a small test file's, verifies that file and
    rejects a copy with one byte flipped or one byte missing, with the one-line error that says where the
    real file comes from and where to put it."""
    real = weights.REGISTRY[name]
    data = random.Random(name).randbytes(4096)
    sha = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(weights.REGISTRY, name, replace(real, size=len(data), sha256=sha))
    offline = tmp_path / "offline"
    offline.mkdir()
    path = offline / real.filename

    def status() -> tuple[Path | None, str]:
        return next(row[1:] for row in weights.verify_all(offline) if row[0].name == name)

    def error() -> str:
        with pytest.raises(WeightsError) as info:
            weights.resolve(name, weights_dir=offline, download=False)
        msg = str(info.value)
        assert "\n" not in msg
        assert msg.startswith(f"{real.filename}: {path} ")
        assert f"Get it from {real.url} (sha256 {sha})" in msg
        assert f"save it as {weights.weights_cache() / real.filename}, or pass {real.instead}" in msg
        return msg

    path.write_bytes(data)
    assert status() == (path, weights.OK)
    assert weights.resolve(name, weights_dir=offline, download=False) == path

    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    mtime = path.stat().st_mtime_ns
    path.write_bytes(flipped)
    os.utime(path, ns=(mtime, mtime))  # same size and mtime: only re-hashing, as verify_all does, can tell
    assert status() == (path, weights.HASH_MISMATCH)
    os.utime(path, ns=(1, 1))  # resolve() may trust its in-process record of a file it has not seen change
    assert "has the wrong sha256 (corrupt or a different file); replace or delete it." in error()
    assert path.read_bytes() == flipped  # an offline file is reported, never touched

    path.write_bytes(data[:-1])
    assert status() == (path, weights.SIZE_MISMATCH)
    assert f"is {len(data) - 1} bytes, expected {len(data)} (truncated or another file)" in error()


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert weights.cache_dir() == tmp_path / "home"
    monkeypatch.delenv("VIDRESTORE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == tmp_path / "xdg" / "vidrestore"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert weights.cache_dir() == tmp_path / "user" / ".cache" / "vidrestore"


def test_effective_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert weights.effective_url(SPEC) == SPEC.url
    monkeypatch.setenv("VIDRESTORE_WEIGHTS_URL", "https://mirror.example/w/")
    assert weights.effective_url(SPEC) == "https://mirror.example/w/test.pth"


def test_download_ok(server: ServerState, monkeypatch: pytest.MonkeyPatch) -> None:
    path = weights.resolve(NAME, progress=False)
    assert path == _cached()
    assert path.read_bytes() == DATA
    assert not _part().exists()
    assert not weights._sidecar(path).exists()  # the registry knows the hash: nothing to record
    assert len(server.requests) == 1

    def no_rehash(_: Path) -> str:
        raise AssertionError("a verified file was hashed again")

    monkeypatch.setattr(weights, "_sha256_file", no_rehash)
    assert weights.resolve(NAME, progress=False) == path
    assert weights.download(NAME, progress=False) == path
    assert len(server.requests) == 1


def test_resume_after_interrupted_transfer(server: ServerState) -> None:
    server.cut_after = 100_000
    msg = _error()
    assert "interrupted after 100000 of 300000 bytes" in msg
    assert _part().stat().st_size == 100_000
    assert not _cached().exists()

    path = weights.resolve(NAME, progress=False)
    assert server.ranges == ["bytes=100000-"]
    assert len(server.requests) == 2
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    assert not _part().exists()


def test_checksum_mismatch(server: ServerState, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "0" * 64
    _set_spec(monkeypatch, sha256=wrong)
    msg = _error()
    assert SPEC.filename in msg and wrong in msg and SHA in msg
    assert weights.effective_url(SPEC) in msg and SPEC.url in msg
    assert not _cached().exists()
    assert not _part().exists()


def test_server_size_differs_from_registry(server: ServerState, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_spec(monkeypatch, size=len(DATA) + 1)
    assert f"server offers {len(DATA)} bytes, expected {len(DATA) + 1}" in _error()
    assert not _cached().exists()


def test_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("VIDRESTORE_WEIGHTS_URL", f"http://127.0.0.1:{port}")
    msg = _error()
    assert "cannot reach the download server" in msg
    assert str(_cached()) in msg and f"or pass {SPEC.instead}" in msg and "--weights-dir DIR" in msg
    assert SPEC.url in msg and SHA in msg
    assert not _cached().exists()


def test_http_error(server: ServerState) -> None:
    del server.files[SPEC.filename]
    msg = _error()
    assert "HTTP 404" in msg and SPEC.filename in msg
    assert not _cached().exists() and not _part().exists()


def test_server_ignoring_range_restarts(server: ServerState) -> None:
    server.ignore_range = True
    _part().parent.mkdir(parents=True)
    _part().write_bytes(b"x" * 1000)  # garbage: appending the full body to it would fail the hash
    path = weights.resolve(NAME, progress=False)
    assert server.ranges == ["bytes=1000-"]
    assert path.read_bytes() == DATA


def test_range_not_satisfiable_restarts(server: ServerState, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_spec(monkeypatch, size=None)  # so a .part as long as the file is still sent as a Range request
    _part().parent.mkdir(parents=True)
    _part().write_bytes(b"x" * len(DATA))
    path = weights.resolve(NAME, progress=False)
    assert server.ranges == [f"bytes={len(DATA)}-"]
    assert len(server.requests) == 2
    assert path.read_bytes() == DATA


def test_unknown_hash_is_recorded_then_enforced(server: ServerState, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_spec(monkeypatch, sha256=None, size=None)
    path = weights.resolve(NAME, progress=False)
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.read_text().split()[0] == SHA
    assert weights.list_status()[-1][1:] == (path, "ok")

    tampered = bytearray(DATA)
    tampered[123] ^= 0xFF
    path.write_bytes(tampered)
    os.utime(path, ns=(1, 1))  # a new mtime even on coarse-timestamp filesystems
    msg = _error(download=False)
    assert "wrong sha256" in msg and SHA in msg and str(sidecar) in msg
    assert weights.verify_all()[-1][1:] == (path, "hash mismatch")

    assert weights.resolve(NAME, progress=False).read_bytes() == DATA  # the cache repairs itself
    assert len(server.requests) == 2


def test_cache_file_wrong_size_is_reported_without_download() -> None:
    _cached().parent.mkdir(parents=True)
    _cached().write_bytes(DATA[:-1])
    msg = _error(download=False)
    assert "is 299999 bytes, expected 300000" in msg and str(_cached()) in msg


def test_missing_without_download() -> None:
    msg = _error(download=False)
    assert "downloading is disabled" in msg
    assert str(_cached()) in msg and "--weights-dir DIR" in msg and SPEC.url in msg and SHA in msg


def test_explicit_path_is_used_unchecked(tmp_path: Path, server: ServerState) -> None:
    finetuned = tmp_path / "my-finetune.pth"
    finetuned.write_bytes(b"not the registry file")
    assert weights.resolve(NAME, path=finetuned) == finetuned
    assert server.requests == []
    assert "does not exist" in _error(path=tmp_path / "nope.pth")
    assert "not a file" in _error(path=tmp_path)


def test_weights_dir_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / SPEC.filename).write_bytes(DATA)
    assert weights.resolve(NAME, weights_dir=offline, download=False) == offline / SPEC.filename
    assert not _cached().exists()  # used in place, never copied

    monkeypatch.setenv("VIDRESTORE_WEIGHTS_DIR", os.pathsep.join([str(tmp_path / "absent"), str(offline)]))
    assert weights.resolve(NAME, download=False) == offline / SPEC.filename
    row = next(r for r in weights.list_status() if r[0].name == NAME)
    assert row[1:] == (offline / SPEC.filename, "ok")

    (offline / SPEC.filename).write_bytes(DATA[::-1])  # same size, wrong content: reported, left alone
    msg = _error()
    assert "wrong sha256" in msg and str(offline / SPEC.filename) in msg
    assert (offline / SPEC.filename).read_bytes() == DATA[::-1]

    assert "does not exist" in _error(weights_dir=tmp_path / "absent")


def test_list_status_missing() -> None:
    rows = weights.list_status()
    assert [spec.name for spec, _, _ in rows] == list(weights.REGISTRY)
    assert all(path is None and status == "missing" for _, path, status in rows)


def test_unknown_name() -> None:
    with pytest.raises(WeightsError, match=r"unknown weights 'gfpgan-v9'; known: .*gfpgan-v1\.4.*parsenet"):
        weights.resolve("gfpgan-v9")


def test_a_missing_file_names_the_ways_to_do_without_it(offline):
    """The detector's and the parser's errors point at what works offline, not at the restorer's --weights."""
    with pytest.raises(WeightsError, match="--detector centerface") as err:
        weights.resolve("retinaface-r50", download=False)
    assert "--weights PATH" not in str(err.value)
    with pytest.raises(WeightsError, match="leave out --parse"):
        weights.resolve("parsenet", download=False)
    with pytest.raises(WeightsError, match="--weights PATH / --weights-dir DIR"):
        weights.resolve("gfpgan-v1.4", download=False)
