"""Verified downloads of the official weights and raw datasets (`fss-sam2 download`).

Only the standard library (``urllib.request``) and tqdm. Nothing here touches the network on
import: the registry below is plain data, and a request is made only by :func:`download`.

How one file is fetched (:func:`fetch_file`):

* ``<out>/<filename>`` already there: with a published checksum it is checked and, if it matches,
  kept ("already there"); without one, the sha256 recorded next to it at download time
  (``<filename>.sha256``) is checked instead (and recorded now if the file came from elsewhere).
* Otherwise bytes go to ``<filename>.part``. A ``.part`` left by an interrupted run is resumed with
  an HTTP ``Range`` request; a server that ignores it (200 instead of 206) makes us start from zero.
* Size (the server's Content-Length / Content-Range and the registry size, when known) and
  checksum are checked on the ``.part``; only then is it renamed (atomically) to its final name.
  A mismatch deletes the ``.part`` and raises :class:`DownloadError` naming the file, expected
  and got. An interrupted transfer keeps the ``.part`` (resumed automatically up to ``retries``
  times, and by the next run).
* Files without a published checksum get their sha256 written to ``<filename>.sha256``
  (``sha256sum`` format) and printed.

Every number in :data:`REGISTRY` (size, checksum) comes from the source named next to it;
unknown sizes are ``None``.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

ENV_URL_BASE = "FSS_SAM2_DOWNLOAD_BASE"
CHUNK = 1 << 20
USER_AGENT = "fss-sam2-download/1 (+urllib)"

_SAM2_URL_SOURCE = ("facebookresearch/sam2 checkpoints/download_ckpts.sh (SAM 2.0, 072824 release) and the "
                    "'SAM 2 checkpoints' table of the sam2 package README (sam2-1.1.0 METADATA)")
_DINOV2_URL_SOURCE = ("dinov2 package README (dinov2-0.0.1.dev2 METADATA) and facebookresearch/dinov2 "
                      "dinov2/hub/backbones.py (_DINOV2_BASE_URL/<name>/<name>_pretrain.pth)")
_COCO_SITE = "cocodataset.org download page (the images.cocodataset.org links)"


class DownloadError(RuntimeError):
    """A download failed or did not verify; the message names the file / URL."""


class UnknownNameError(DownloadError, KeyError):
    """A name not in the registry; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0] if self.args else ""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch. ``size`` in bytes and ``checksum`` only where a source publishes them."""

    url: str
    filename: str
    size: int | None = None
    checksum_algo: str | None = None  # a hashlib name: "md5", "sha256", ...
    checksum: str | None = None  # hex digest
    checksum_source: str | None = None  # where the checksum was found
    size_source: str | None = None  # where the size was found
    url_source: str | None = None  # where the URL was found

    @property
    def verified(self) -> bool:
        """True when a published checksum is known."""
        return bool(self.checksum_algo and self.checksum)


@dataclass(frozen=True)
class Bundle:
    """A name accepted by `fss-sam2 download`: one or more files of one kind."""

    name: str
    kind: str  # "weights" | "dataset"
    description: str
    files: tuple[RemoteFile, ...]


def _sam2(size: str) -> RemoteFile:
    fn = f"sam2_hiera_{size}.pt"
    return RemoteFile(f"https://dl.fbaipublicfiles.com/segment_anything_2/072824/{fn}", fn, url_source=_SAM2_URL_SOURCE)


def _dinov2(arch: str) -> RemoteFile:
    name = f"dinov2_{arch}"
    return RemoteFile(f"https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth", f"{name}_pretrain.pth",
                      url_source=_DINOV2_URL_SOURCE)


REGISTRY: dict[str, Bundle] = {
    b.name: b for b in (
        Bundle("sam2-small", "weights", "SAM 2.0 Hiera-S checkpoint", (_sam2("small"),)),
        Bundle("sam2-base-plus", "weights", "SAM 2.0 Hiera-B+ checkpoint", (_sam2("base_plus"),)),
        Bundle("sam2-large", "weights", "SAM 2.0 Hiera-L checkpoint", (_sam2("large"),)),
        Bundle("dinov2-vits14", "weights", "DINOv2 ViT-S/14 backbone (LVD-142M)", (_dinov2("vits14"),)),
        Bundle("dinov2-vitb14", "weights", "DINOv2 ViT-B/14 backbone (LVD-142M)", (_dinov2("vitb14"),)),
        Bundle("dinov2-vitl14", "weights", "DINOv2 ViT-L/14 backbone (LVD-142M)", (_dinov2("vitl14"),)),
        Bundle("dinov2-vitg14", "weights", "DINOv2 ViT-g/14 backbone (LVD-142M)", (_dinov2("vitg14"),)),
        Bundle("voc2012", "dataset", "PASCAL VOC 2012 trainval (images, SegmentationClass)", (
            RemoteFile("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                       "VOCtrainval_11-May-2012.tar",
                       checksum_algo="md5", checksum="6cd6e144f989b92b3379bac3b3de84fd",
                       checksum_source="torchvision.datasets.voc DATASET_YEAR_DICT['2012']",
                       url_source="torchvision.datasets.voc DATASET_YEAR_DICT['2012']"),
        )),
        Bundle("sbd", "dataset", "Semantic Boundaries Dataset (SBD; the PASCAL-5i extra masks)", (
            RemoteFile("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
                       "benchmark.tgz", "benchmark.tgz",
                       checksum_algo="md5", checksum="82b4d87ceb2ed10f6038a1cba92111cb",
                       checksum_source="torchvision.datasets.sbd.SBDataset.md5",
                       url_source="torchvision.datasets.sbd.SBDataset.url"),
        )),
        Bundle("coco2014", "dataset", "MS COCO 2014 train + val images and annotations", (
            # COCO publishes no checksum or size: the sha256 is recorded after download
            RemoteFile("http://images.cocodataset.org/zips/train2014.zip", "train2014.zip", url_source=_COCO_SITE),
            RemoteFile("http://images.cocodataset.org/zips/val2014.zip", "val2014.zip", url_source=_COCO_SITE),
            RemoteFile("http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
                       "annotations_trainval2014.zip", url_source=_COCO_SITE),
        )),
    )
}

DEFAULT_OUT = {"weights": Path("pretrained"), "dataset": Path("data/raw")}

NEXT_STEPS = {
    "voc2012": "tar -xf VOCtrainval_11-May-2012.tar  (-> VOCdevkit/VOC2012; `fss-sam2 data pascal --voc ...`)",
    "sbd": "tar -xzf benchmark.tgz  (-> benchmark_RELEASE/dataset; `fss-sam2 data pascal --sbd ...`)",
    "coco2014": "unzip the three archives into one folder (train2014/, val2014/, annotations/); "
                "`fss-sam2 data coco --coco ...`",
}


# --------------------------------------------------------------------------- registry helpers

def resolve(name: str, registry: Mapping[str, Bundle] = REGISTRY) -> Bundle:
    """The bundle for ``name``; :class:`UnknownNameError` lists the known names otherwise."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownNameError(f"unknown download name {name!r}; known names: {', '.join(registry)}") from None


def unverified_files(registry: Mapping[str, Bundle] = REGISTRY) -> list[tuple[str, str]]:
    """(name, filename) of every file without a published checksum."""
    return [(b.name, f.filename) for b in registry.values() for f in b.files if not f.verified]


def _human(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def format_listing(registry: Mapping[str, Bundle] = REGISTRY) -> str:
    """The `fss-sam2 download --list` text: every name, its files, and how each one is verified."""
    lines = []
    for b in registry.values():
        lines.append(f"{b.name}  [{b.kind}, default --out {DEFAULT_OUT.get(b.kind, Path('.'))}/]  {b.description}")
        for f in b.files:
            lines.append(f"    {f.filename}  ({_human(f.size)})  {f.url}")
            if f.verified:
                lines.append(f"        checksum: {f.checksum_algo} {f.checksum}  (source: {f.checksum_source})")
            else:
                lines.append("        checksum: NONE PUBLISHED -- its sha256 is recorded in "
                             f"{f.filename}.sha256 after download and printed")
            if f.size is not None and f.size_source != f.checksum_source:
                lines.append(f"        size: {f.size} bytes  (source: {f.size_source})")
    missing = unverified_files(registry)
    lines.append("")
    lines.append(f"{len(missing)} file(s) without a published checksum: " + ", ".join(fn for _, fn in missing))
    return "\n".join(lines)


def url_for(entry: RemoteFile, url_base: str | None = None) -> str:
    """The official URL, or ``<url_base>/<filename>`` for a mirror (``--url-base`` / FSS_SAM2_DOWNLOAD_BASE)."""
    base = url_base if url_base is not None else os.environ.get(ENV_URL_BASE) or None
    return entry.url if not base else base.rstrip("/") + "/" + entry.filename


# --------------------------------------------------------------------------- hashing

def hash_file(path: Path, algos: tuple[str, ...] = ("sha256",), progress: bool = False, desc: str | None = None
              ) -> dict[str, str]:
    """Hex digests of ``path`` for each hashlib algorithm in ``algos`` (one read)."""
    hashers = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
                                      desc=desc or f"hashing {path.name}", disable=not progress, leave=False) as bar:
        while block := fh.read(CHUNK):
            for h in hashers.values():
                h.update(block)
            bar.update(len(block))
    return {a: h.hexdigest() for a, h in hashers.items()}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> str | None:
    side = _sidecar(path)
    if not side.is_file():
        return None
    m = re.match(r"\s*([0-9a-fA-F]{64})\b", side.read_text())
    return m.group(1).lower() if m else None


def _write_sidecar(path: Path, digest: str) -> Path:
    side = _sidecar(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n")
    os.replace(tmp, side)
    return side


# --------------------------------------------------------------------------- HTTP

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Interrupted(Exception):
    """The connection ended before all bytes arrived (the .part is kept)."""


class _Unreachable(DownloadError):
    """The host could not be reached (retried like an interruption)."""


def _open(url: str, offset: int, timeout: float):
    """GET ``url`` (from byte ``offset``); a 416 answer is returned, other HTTP errors raise."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # Range Not Satisfiable: the .part is already as long as the file (or longer)
            return e
        raise DownloadError(f"HTTP error {e.code} {e.reason} for {url}") from None
    except urllib.error.URLError as e:
        raise _Unreachable(f"cannot reach {url}: {e.reason}") from None
    except (http.client.HTTPException, OSError) as e:  # timeouts, resets, malformed answers
        raise _Unreachable(f"cannot reach {url}: {type(e).__name__}: {e}") from None


def _length(resp) -> int | None:
    value = (resp.headers.get("Content-Length") or "").strip()
    return int(value) if value.isdigit() else None


def _start(url: str, part: Path, offset: int, timeout: float, name: str, log):
    """Open the transfer, resuming from ``offset`` when the server honours Range.

    Returns ``(response, offset, total)``: ``response`` is None when the .part is already complete
    (416 with a matching length); ``offset`` is 0 when the transfer restarts from zero; ``total`` is the
    full file length the server announces (None when it announces none)."""
    for _ in range(2):  # the second pass is a plain request from zero
        resp = _open(url, offset, timeout)
        status = resp.code if isinstance(resp, urllib.error.HTTPError) else resp.status
        if status == 416:
            m = re.search(r"/(\d+)\s*$", resp.headers.get("Content-Range") or "")
            resp.close()
            if m and int(m.group(1)) == offset:
                return None, offset, offset
            log(f"{name}: the server refuses to resume at byte {offset}; starting from zero")
        elif status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range") or "")
            if m and int(m.group(1)) == offset:
                length = _length(resp)
                total = int(m.group(3)) if m.group(3) != "*" else (None if length is None else offset + length)
                return resp, offset, total
            resp.close()
            log(f"{name}: unexpected Content-Range {resp.headers.get('Content-Range')!r}; starting from zero")
        else:
            if offset:
                log(f"{name}: the server ignored the Range request (HTTP {status} instead of 206); "
                    "starting from zero")
            return resp, 0, _length(resp)
        part.unlink(missing_ok=True)
        offset = 0
    raise DownloadError(f"{url}: the server answered a plain request with HTTP {status}")


def _stream(resp, fh, hashers, bar, expected_total: int | None, got: int) -> int:
    """Copy the response body into ``fh`` (bounded by ``expected_total``); returns the length of the .part.
    A connection that ends early raises _Interrupted (the bytes so far stay in the .part)."""
    while expected_total is None or got < expected_total:
        want = CHUNK if expected_total is None else min(CHUNK, expected_total - got)
        try:
            block = resp.read(want)
        except (http.client.HTTPException, OSError) as e:  # IncompleteRead, reset, timeout
            raise _Interrupted(f"{type(e).__name__}: {e}") from None
        if not block:
            break
        fh.write(block)
        for h in hashers.values():
            h.update(block)
        got += len(block)
        bar.update(len(block))
    if expected_total is not None and got < expected_total:
        raise _Interrupted(f"connection closed after {got} of {expected_total} bytes")
    return got


def _fail(part: Path, message: str):
    part.unlink(missing_ok=True)
    raise DownloadError(message)


# --------------------------------------------------------------------------- one file

def fetch_file(entry: RemoteFile, out_dir: str | Path, *, url_base: str | None = None, progress: bool = True,
               timeout: float = 60.0, retries: int = 3, retry_wait: float = 2.0,
               log: Callable[[str], None] = print) -> Path:
    """Fetch and verify one file into ``out_dir``; returns its final path. See the module doc."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / entry.filename
    part = final.with_name(final.name + ".part")
    url = url_for(entry, url_base)

    if final.is_file():
        kept = _check_existing(entry, final, progress, log)
        if kept:
            return final

    attempt = 0
    while True:
        try:
            return _fetch_once(entry, url, final, part, progress, timeout, log)
        except (_Interrupted, _Unreachable) as e:
            kept = part.stat().st_size if part.exists() else 0
            if attempt >= retries:
                if isinstance(e, _Unreachable):
                    raise
                raise DownloadError(f"transfer of {entry.filename} from {url} interrupted ({e}); "
                                    f"{kept} bytes kept in {part} -- run the command again to resume") from None
            attempt += 1
            log(f"{entry.filename}: {e}; retrying ({attempt}/{retries}) from byte {kept}")
            time.sleep(retry_wait * attempt)


def _check_existing(entry: RemoteFile, final: Path, progress: bool, log) -> bool:
    size = final.stat().st_size
    if entry.size is not None and size != entry.size:
        log(f"{final}: {size} bytes, expected {entry.size}; downloading again")
        return False
    if entry.verified:
        got = hash_file(final, (entry.checksum_algo,), progress)[entry.checksum_algo]
        if got == entry.checksum.lower():
            log(f"{final}: already there ({entry.checksum_algo} verified)")
            return True
        log(f"{final}: {entry.checksum_algo} {got} differs from the published {entry.checksum}; downloading again")
        return False
    recorded = _read_sidecar(final)
    got = hash_file(final, ("sha256",), progress)["sha256"]
    if recorded is None:
        _write_sidecar(final, got)
        log(f"{final}: already there (no published checksum; sha256 {got} recorded in {_sidecar(final).name})")
        return True
    if got == recorded:
        log(f"{final}: already there (sha256 matches {_sidecar(final).name}: {got})")
        return True
    log(f"{final}: sha256 {got} differs from the {recorded} recorded in {_sidecar(final).name}; downloading again")
    return False


def _fetch_once(entry: RemoteFile, url: str, final: Path, part: Path, progress: bool, timeout: float, log) -> Path:
    offset = part.stat().st_size if part.is_file() else 0
    if entry.size is not None and offset > entry.size:
        log(f"{part}: longer than the expected {entry.size} bytes; starting from zero")
        part.unlink()
        offset = 0

    if entry.size is not None and offset == entry.size:
        resp, total = None, entry.size  # complete already (an earlier run stopped before verifying)
    else:
        resp, offset, total = _start(url, part, offset, timeout, entry.filename, log)
    try:
        if total is not None and entry.size is not None and total != entry.size:
            _fail(part, f"size mismatch for {entry.filename}: expected {entry.size} bytes (registry), "
                        f"got {total} (announced by {url})")
        hashers = {a: hashlib.new(a) for a in ((entry.checksum_algo,) if entry.verified else ("sha256",))}
        if offset:  # hash the bytes kept from the earlier run
            with open(part, "rb") as fh, tqdm(total=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                              desc=f"{entry.filename} (bytes kept)", disable=not progress,
                                              leave=False) as bar:
                while block := fh.read(CHUNK):
                    for h in hashers.values():
                        h.update(block)
                    bar.update(len(block))
        got = offset
        if resp is not None:
            if offset:
                log(f"{entry.filename}: resuming at byte {offset}")
            with open(part, "ab" if offset else "wb") as fh, \
                    tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=entry.filename, disable=not progress) as bar:
                got = _stream(resp, fh, hashers, bar, total, offset)
    finally:
        if resp is not None:
            resp.close()

    # size check, then checksum check, both on the .part; only then the atomic rename
    if total is not None and got != total:
        _fail(part, f"size mismatch for {entry.filename}: expected {total} bytes, got {got}")
    if entry.size is not None and got != entry.size:
        _fail(part, f"size mismatch for {entry.filename}: expected {entry.size} bytes (registry), got {got}")
    digests = {a: h.hexdigest() for a, h in hashers.items()}
    if entry.verified:
        got_sum = digests[entry.checksum_algo]
        if got_sum != entry.checksum.lower():
            _fail(part, f"checksum mismatch for {entry.filename}: expected {entry.checksum_algo} {entry.checksum} "
                        f"(source: {entry.checksum_source}), got {got_sum}; the partial file was deleted")
    os.replace(part, final)
    if entry.verified:
        log(f"{final}: {got} bytes, {entry.checksum_algo} verified ({entry.checksum})")
    else:
        side = _write_sidecar(final, digests["sha256"])
        log(f"{final}: {got} bytes; no published checksum -- sha256 {digests['sha256']} (recorded in {side.name})")
    return final


# --------------------------------------------------------------------------- names

def download(name: str, out: str | Path | None = None, *, registry: Mapping[str, Bundle] = REGISTRY,
             url_base: str | None = None, progress: bool = True, timeout: float = 60.0, retries: int = 3,
             retry_wait: float = 2.0, log: Callable[[str], None] = print) -> list[Path]:
    """Fetch every file of registry entry ``name`` into ``out`` (default: ``pretrained/`` for weights,
    ``data/raw/`` for datasets). Raises :class:`DownloadError` (or :class:`UnknownNameError`)."""
    bundle = resolve(name, registry)
    out_dir = Path(out) if out is not None else DEFAULT_OUT.get(bundle.kind, Path("."))
    paths = [fetch_file(f, out_dir, url_base=url_base, progress=progress, timeout=timeout, retries=retries,
                        retry_wait=retry_wait, log=log) for f in bundle.files]
    return paths
