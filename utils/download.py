"""Download the public data: Google Drive folders (gdown) and OpenNeuro (its public S3 URLs).

Three parts, so tests can replace the network and still run all the logic:

1. ``Network``: the only code that touches the network, in four small methods
   (``list_drive_folder``, ``fetch_drive_file``, ``open_http``, ``list_s3``). Tests pass a
   fake with the same methods.
2. Planning (``plan_dataset``): which remote files a dataset needs and where they go under
   the data root (paths from ``utils.layout``/``utils.datasets``), read from the dataset's
   spec (``annotations_key``, ``stimuli_release``, ``checkpoint_folders``, ``suffix``;
   a synthetic dataset is never downloaded). Drive folder contents are
   discovered at run time; pickles are matched to dataset and subject by their names
   (the suffix of each dataset spec, ``sub01``/``sub-01``). Files that must be obtained by
   hand (terms of use) become messages, never silent gaps.
3. Fetching (``fetch_all``): retries with exponential backoff, ``<dest>.part`` files moved
   into place only when complete and verified, HTTP ``Range`` resume for OpenNeuro, gdown's
   own resume for Drive, and a per-file size/sha256 manifest
   (``<data root>/downloads_manifest.json``) checked on every rerun.

gdown lists at most 50 entries per Drive folder (its embedded folder view). A folder that
lists exactly 50 may hold more: the plan says so, and files it could not see can be fetched
by id with a JSON file ``{"<path in the folder>": "<file id>"}`` (``--drive-ids``); ids of
files fetched once are kept in the manifest and reused.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from utils import layout
from utils.datasets import DATASETS, DatasetSpec, StimuliRelease, check_subjects, get_spec, subject_folder
from utils.io import read_json, sha256_file, write_json
from utils.rois import DEFAULT_ROI_SET

DRIVE_FOLDERS = {
    "pickles": "1xeXDUoArZ0kq8JWr2b5gaqBMP06mqH5f",
    "cc2017_clips": "12VEbW9AdujKlzxD6zGJJ3eoOq2cd9GJw",
    "bmd_example_a": "1RvC2Niulrtg2PzP-xsq2otNgJuVG0JDr",
    "bmd_example_b": "1yt7JqVm5tv13JEx--FRfFMPYV9ENF8Y3",
}
DRIVE_LISTING_LIMIT = 50
OPENNEURO_S3 = "https://s3.amazonaws.com/openneuro.org"
WHAT = ("betas", "metadata", "stimuli", "checkpoints")
_CHUNK = 1 << 20
_SUBJECT_IN_PATH = re.compile(r"(?:^|[^a-z0-9])sub-?0*(\d+)(?!\d)", re.IGNORECASE)


class DownloadError(RuntimeError):
    """A file could not be fetched or verified (the message says what to do)."""


class TransientError(DownloadError):
    """A failure worth retrying (connection reset, timeout, 5xx, incomplete transfer)."""


@dataclass(frozen=True)
class DriveEntry:
    """One file of a Drive folder listing: its id and path inside the folder (posix)."""

    id: str
    path: str


@dataclass
class HttpResponse:
    """What ``Network.open_http`` returns: status (200/206/...), full size if known, body chunks."""

    status: int
    total: int | None
    chunks: Iterator[bytes]


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: ``dest`` relative to the data root; ``source`` ``gdrive`` (ref = id) or ``http`` (ref = URL)."""

    dest: str
    source: str
    ref: str
    size: int | None = None
    sha256: str | None = None


@dataclass
class Plan:
    """Files to fetch, files that need a person (messages), and warnings about the listings."""

    files: list[RemoteFile] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class FetchResult:
    """Outcome for one file: status is downloaded, present, would-fetch, would-verify or failed."""

    dest: str
    status: str
    message: str = ""


class Network:
    """The network layer: gdown for Google Drive, urllib for HTTPS (OpenNeuro S3)."""

    def __init__(self, timeout: float = 60.0, quiet: bool = False) -> None:
        self.timeout = timeout
        self.quiet = quiet

    def list_drive_folder(self, folder_id: str) -> list[DriveEntry]:
        """Every file of a Drive folder (recursing into subfolders; at most 50 entries per folder)."""
        import gdown

        try:
            listing = gdown.download_folder(id=folder_id, skip_download=True, quiet=self.quiet, timeout=self.timeout)
        except Exception as exc:  # gdown raises several types for one cause: a failed request
            raise TransientError(f"Listing Drive folder {folder_id} failed: {exc}") from exc
        return [DriveEntry(item.id, Path(item.path).as_posix()) for item in listing or []]

    def fetch_drive_file(self, file_id: str, output: Path) -> None:
        """Download Drive file ``file_id`` to ``output``; gdown resumes its own partial file."""
        import gdown

        try:
            gdown.download(id=file_id, output=str(output), quiet=self.quiet, resume=True, timeout=self.timeout)
        except Exception as exc:  # quota, permission and connection errors all come as exceptions
            raise TransientError(f"Drive file {file_id}: {exc}") from exc
        if not output.exists():
            raise TransientError(f"Drive file {file_id}: gdown returned without writing {output}.")

    def open_http(self, url: str, start: int = 0) -> HttpResponse:
        """GET ``url`` from byte ``start`` (a ``Range`` request when start > 0)."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416:
                return HttpResponse(416, None, iter(()))
            if exc.code in (408, 429) or exc.code >= 500:
                raise TransientError(f"{url}: HTTP {exc.code}") from exc
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise TransientError(f"{url}: {exc}") from exc
        return HttpResponse(response.status, _total_size(response.status, response.headers), _read_chunks(response))

    def list_s3(self, bucket_url: str, prefix: str) -> list[tuple[str, int]]:
        """``(key, size)`` of every object under ``prefix`` (S3 ListObjectsV2, paginated)."""
        out: list[tuple[str, int]] = []
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix} | ({"continuation-token": token} if token else {})
            url = f"{bucket_url}?{urllib.parse.urlencode(query)}"
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as response:
                    root = ET.fromstring(response.read())
            except (urllib.error.URLError, OSError) as exc:
                raise TransientError(f"Listing {url} failed: {exc}") from exc
            ns = {"s3": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
            tag = (lambda name: f"s3:{name}") if ns else (lambda name: name)
            for item in root.findall(tag("Contents"), ns):
                out.append((item.findtext(tag("Key"), "", ns), int(item.findtext(tag("Size"), "0", ns))))
            token = root.findtext(tag("NextContinuationToken"), None, ns)
            if root.findtext(tag("IsTruncated"), "false", ns) != "true" or not token:
                return out


def _total_size(status: int, headers) -> int | None:
    """Full file size from Content-Range (206) or Content-Length (200)."""
    if status == 206:
        match = re.match(r"bytes \d+-\d+/(\d+)", headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    length = headers.get("Content-Length")
    return int(length) if length else None


def _read_chunks(response) -> Iterator[bytes]:
    """Body in 1 MiB chunks; connection errors mid-body become TransientError."""
    with response:
        while True:
            try:
                block = response.read(_CHUNK)
            except (OSError, urllib.error.URLError) as exc:
                raise TransientError(f"transfer interrupted: {exc}") from exc
            if not block:
                return
            yield block


# ---------------------------------------------------------------------------------------------
# Planning


def drive_url(file_or_folder_id: str, folder: bool = False) -> str:
    """Browser URL of a Drive file or folder (for messages)."""
    if folder:
        return f"https://drive.google.com/drive/folders/{file_or_folder_id}"
    return f"https://drive.google.com/uc?id={file_or_folder_id}"


def listing_warnings(folder_id: str, entries: list[DriveEntry]) -> list[str]:
    """Warn for each (sub)folder whose listing holds exactly ``DRIVE_LISTING_LIMIT`` entries (files + subfolders)."""
    children: dict[str, set[str]] = {}
    for entry in entries:
        parts = entry.path.split("/")
        for depth in range(len(parts)):
            parent = "/".join(parts[:depth])
            children.setdefault(parent, set()).add(parts[depth])
    warnings = []
    for parent, names in sorted(children.items()):
        if len(names) >= DRIVE_LISTING_LIMIT:
            where = f"{drive_url(folder_id, folder=True)}{' (subfolder ' + parent + ')' if parent else ''}"
            warnings.append(
                f"Drive folder {where} lists {len(names)} entries, gdown's limit per folder: it may hold more files "
                "than were seen. Fetch the others by id: write a JSON file {\"<path in folder>\": \"<file id>\"} and pass "
                "--drive-ids FILE (ids from the folder's web page, right click > Share > Copy link)."
            )
    return warnings


def merge_drive_ids(entries: list[DriveEntry], extra: dict[str, str]) -> list[DriveEntry]:
    """Listing plus per-file ids (path -> id) given by the user or recorded earlier; the listing wins on conflict."""
    seen = {e.path for e in entries}
    return entries + [DriveEntry(file_id, path) for path, file_id in sorted(extra.items()) if path not in seen]


def match_pickles(
    entries: list[DriveEntry], spec: DatasetSpec, subjects: list[int], roi_set: str = DEFAULT_ROI_SET
) -> tuple[dict[int, DriveEntry], list[str]]:
    """Pick each subject's ``<roi_set><suffix>.pkl`` from a listing by name.

    The file name must be exactly ``<roi_set><suffix>.pkl`` (the suffix tells the dataset)
    and its path must name one subject (``sub01``, ``sub-01``, ``sub1``). Returns the matches
    and problems (a file that names no subject, two files for one subject).
    """
    wanted = f"{roi_set}{spec.suffix}.pkl"
    matches: dict[int, DriveEntry] = {}
    problems = []
    for entry in entries:
        if entry.path.rsplit("/", 1)[-1] != wanted:
            continue
        numbers = {int(m) for m in _SUBJECT_IN_PATH.findall(entry.path)}
        if len(numbers) != 1:
            problems.append(f"{entry.path}: cannot tell its subject (found {sorted(numbers) or 'no'} subject number).")
            continue
        subject = numbers.pop()
        if subject not in subjects:
            continue
        if subject in matches:
            problems.append(f"Two files for {spec.name} subject {subject}: {matches[subject].path} and {entry.path}.")
            continue
        matches[subject] = entry
    return matches, problems


def _list_with_retries(fn: Callable[[], list], retries: int, backoff: float, sleep: Callable[[float], None]) -> list:
    return with_retries(fn, retries=retries, backoff=backoff, sleep=sleep, what="listing")


def plan_betas(
    spec: DatasetSpec,
    subjects: list[int],
    network: Network,
    roi_set: str = DEFAULT_ROI_SET,
    drive_ids: dict[str, str] | None = None,
    known: dict[str, str] | None = None,
    retries: int = 3,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Plan:
    """Pickles of ``subjects`` from the Drive folder, placed at ``layout.pickle_path``.

    ``known`` (destination -> Drive id, from the manifest) covers files fetched before that
    a truncated listing no longer shows.
    """
    folder = DRIVE_FOLDERS["pickles"]
    plan = Plan()
    entries = _list_with_retries(lambda: network.list_drive_folder(folder), retries, backoff, sleep)
    plan.warnings += listing_warnings(folder, entries)
    entries = merge_drive_ids(entries, drive_ids or {})
    matches, problems = match_pickles(entries, spec, subjects, roi_set)
    plan.warnings += problems
    for subject in subjects:
        dest = layout.pickle_path(None, spec.name, subject_folder(subject), roi_set, spec.suffix)
        rel = dest.relative_to(layout.root(None)).as_posix()
        if subject in matches:
            plan.files.append(RemoteFile(rel, "gdrive", matches[subject].id))
            continue
        if known and rel in known:
            plan.files.append(RemoteFile(rel, "gdrive", known[rel]))
            continue
        truncated = " (its listing hit gdown's 50-entry limit, see the warning)" if plan.warnings else ""
        plan.missing.append(
            f"{spec.name} subject {subject}: no {roi_set}{spec.suffix}.pkl naming sub{subject:02d} in Drive folder "
            f"{drive_url(folder, folder=True)}{truncated}. Download it by hand to <data root>/{rel}, or pass its id with --drive-ids."
        )
    return plan


def plan_drive_folder(
    folder_key: str,
    dest_dir: str,
    network: Network,
    drive_ids: dict[str, str] | None = None,
    known: dict[str, str] | None = None,
    rename: Callable[[str], str] | None = None,
    retries: int = 3,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Plan:
    """Every file of one Drive folder under ``dest_dir`` (relative to the data root).

    Files recorded in ``known`` (destination -> id) under ``dest_dir`` that the listing no
    longer shows are kept in the plan, so they are verified rather than forgotten.
    """
    folder = DRIVE_FOLDERS[folder_key]
    plan = Plan()
    entries = _list_with_retries(lambda: network.list_drive_folder(folder), retries, backoff, sleep)
    plan.warnings += listing_warnings(folder, entries)
    for entry in merge_drive_ids(entries, drive_ids or {}):
        path = rename(entry.path) if rename else entry.path
        plan.files.append(RemoteFile(f"{dest_dir}/{path}", "gdrive", entry.id))
    planned = {f.dest for f in plan.files}
    for dest, file_id in sorted((known or {}).items()):
        if dest.startswith(f"{dest_dir}/") and dest not in planned:
            plan.files.append(RemoteFile(dest, "gdrive", file_id))
    return plan


def _relative(path: Path) -> str:
    """A path under the default data root, relative to it (destinations are relative)."""
    return path.relative_to(layout.root(None)).as_posix()


def plan_stimuli(
    spec: DatasetSpec,
    network: Network,
    drive_ids: dict[str, str] | None = None,
    known: dict[str, str] | None = None,
    accept_terms: bool = False,
    retries: int = 3,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Plan:
    """The videos of ``spec.stimuli_release`` under ``stimuli_<ds>/`` (named by its ``video_file``)."""
    release: StimuliRelease = spec.stimuli_release
    stim_root = _relative(layout.stimuli_dir(None, spec.name))
    by_hand = f"<data root>/{stim_root}/{release.by_hand_into}"
    kw = {"retries": retries, "backoff": backoff, "sleep": sleep}
    plan = Plan()
    if release.terms and not accept_terms:
        plan.manual.append(
            f"{spec.name} stimuli are under {release.terms}: read them at {release.page}, then rerun with "
            f"--accept-stimuli-terms to fetch them from {release.kind}, or put the videos in {by_hand} by hand."
        )
    elif release.kind == "openneuro":
        objects = _list_with_retries(lambda: network.list_s3(OPENNEURO_S3, release.location), **kw)
        for key, size in objects:
            dest = release.video_file(key[len(release.location):])
            if dest is not None:
                plan.files.append(RemoteFile(f"{stim_root}/{dest}", "http", f"{OPENNEURO_S3}/{key}", size))
        if not plan.files:
            plan.manual.append(
                f"No {spec.name} videos found under s3://openneuro.org/{release.location}: download them "
                f"from {release.page} by hand into {by_hand}."
            )
    else:
        _extend(plan, plan_drive_folder(release.location, stim_root, network, drive_ids, known, rename=release.video_file, **kw))
    if release.note:
        plan.manual.append(release.note)
    return plan


def plan_dataset(
    dataset: str,
    subjects: list[str | int] | None,
    network: Network,
    what: tuple[str, ...] = ("betas", "metadata", "stimuli"),
    roi_set: str | None = None,
    drive_ids: dict[str, str] | None = None,
    known: dict[str, str] | None = None,
    accept_terms: bool = False,
    retries: int = 3,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Plan:
    """Everything to fetch for ``dataset`` (``what`` among betas, metadata, stimuli, checkpoints).

    roi_set: the ROI set of the pickles to fetch (None: the one the dataset publishes,
    ``spec.pickle_roi_set``; other ROI sets are prepared from it). ``drive_ids``: extra
    Drive files by id (path in folder -> id); ``known``: destination -> id recorded in the
    manifest (``recorded_drive_ids``).
    """
    spec = get_spec(dataset)
    if spec.synthetic:
        raise ValueError(f"The {dataset} dataset is not downloaded: it is synthesised offline (utils.synthetic.make_demo).")
    unknown = [w for w in what if w not in WHAT]
    if unknown:
        raise ValueError(f"Unknown what={unknown}; choose among {WHAT}.")
    subjects_int = check_subjects(spec, subjects)
    kw = {"retries": retries, "backoff": backoff, "sleep": sleep}
    plan = Plan()
    if "betas" in what:
        _extend(plan, plan_betas(spec, subjects_int, network, roi_set or spec.pickle_roi_set, drive_ids, known, **kw))
    if "metadata" in what and spec.annotations_key:
        dest = _relative(layout.annotations_path(None, dataset))
        plan.files.append(RemoteFile(dest, "http", f"{OPENNEURO_S3}/{spec.annotations_key}"))
    if "stimuli" in what and spec.stimuli_release is not None:
        _extend(plan, plan_stimuli(spec, network, drive_ids, known, accept_terms, **kw))
    if "checkpoints" in what:
        for key in spec.checkpoint_folders:
            dest = _relative(layout.checkpoint_dir(None, "published", f"{dataset}/{key}"))
            _extend(plan, plan_drive_folder(key, dest, network, drive_ids, known, **kw))
        if not spec.checkpoint_folders:
            with_checkpoints = [s.name for s in DATASETS.values() if s.checkpoint_folders]
            plan.manual.append(
                f"No published checkpoints for {dataset}: the MBM checkpoints on Drive are for {with_checkpoints} "
                f"(--dataset {' / '.join(with_checkpoints)} --what checkpoints)."
            )
    return plan


def _extend(plan: Plan, other: Plan) -> None:
    plan.files += other.files
    plan.manual += other.manual
    plan.warnings += other.warnings
    plan.missing += other.missing


# ---------------------------------------------------------------------------------------------
# Fetching


def with_retries(
    fn: Callable[[], object], retries: int, backoff: float, sleep: Callable[[float], None] = time.sleep, what: str = "download"
):
    """Call ``fn``; on ``TransientError`` wait ``backoff * 2**attempt`` s and try again, ``retries`` more times."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except TransientError as exc:
            if attempt == retries:
                raise DownloadError(f"{what} failed after {retries + 1} attempt(s): {exc}") from exc
            delay = backoff * 2**attempt
            print(f"  {what}: {exc}; retrying in {delay:.0f} s ({attempt + 1}/{retries})")
            sleep(delay)
    raise AssertionError("unreachable")


def part_path(dest: Path) -> Path:
    """The partial file of ``dest``: ``<dest>.part``."""
    return dest.with_name(dest.name + ".part")


def http_resume(network: Network, url: str, part: Path, expected_size: int | None) -> None:
    """Bring ``part`` to the full file: resume with a Range request from its current size."""
    start = part.stat().st_size if part.exists() else 0
    if expected_size is not None and start > expected_size:
        part.unlink()
        start = 0
    if expected_size is not None and start == expected_size:
        return
    response = network.open_http(url, start)
    if response.status == 416:
        part.unlink(missing_ok=True)
        raise TransientError(f"{url}: server refused to resume at byte {start}; starting over")
    if response.status not in (200, 206):
        raise DownloadError(f"{url}: unexpected HTTP status {response.status}")
    mode = "ab" if start and response.status == 206 else "wb"
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, mode) as handle:
        for block in response.chunks:
            handle.write(block)
    size = part.stat().st_size
    total = response.total if response.total is not None else expected_size
    if total is not None and size != total:
        raise TransientError(f"{url}: transfer stopped at {size} of {total} bytes")


def load_manifest(data_root: str | Path | None) -> dict:
    """The downloads manifest ``{"files": {dest: {...}}}`` (empty when absent)."""
    return read_json(layout.downloads_manifest_path(data_root), {"files": {}})


def _verify(path: Path, size: int | None, sha256: str | None, check_sha: bool) -> str | None:
    """None when ``path`` matches, else what differs (expected vs found)."""
    found_size = path.stat().st_size
    if size is not None and found_size != size:
        return f"size {found_size} bytes, expected {size}"
    if sha256 is not None and check_sha:
        found = sha256_file(path)
        if found != sha256:
            return f"sha256 {found}, expected {sha256}"
    return None


def fetch_one(
    item: RemoteFile,
    data_root: str | Path | None,
    network: Network,
    manifest: dict,
    retries: int = 3,
    backoff: float = 2.0,
    verify: str = "sha256",
    overwrite: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Fetch one file (or verify the copy on disk) and record it in ``manifest`` (not saved here)."""
    dest = layout.root(data_root) / item.dest
    record = manifest["files"].get(item.dest)
    check_sha = verify == "sha256"
    if dest.exists() and not overwrite:
        expected_size = record["size"] if record else item.size
        expected_sha = record["sha256"] if record else item.sha256
        problem = _verify(dest, expected_size, expected_sha, check_sha)
        if problem is None:
            if record is None:
                manifest["files"][item.dest] = _record(item, dest)
                return FetchResult(item.dest, "present", "found on disk; recorded in the manifest")
            return FetchResult(item.dest, "present", "verified")
        print(f"  {item.dest}: {problem} (differs from the manifest); downloading it again")
        dest.unlink()
    part = part_path(dest)
    if overwrite:
        part.unlink(missing_ok=True)
    part.parent.mkdir(parents=True, exist_ok=True)

    def attempt() -> None:
        if item.source == "gdrive":
            network.fetch_drive_file(item.ref, part)
        elif item.source == "http":
            http_resume(network, item.ref, part, item.size)
        else:
            raise DownloadError(f"{item.dest}: unknown source {item.source!r}")
        problem = _verify(part, item.size, item.sha256, True)
        if problem is not None:
            part.unlink()
            raise TransientError(f"downloaded file has {problem}")

    try:
        with_retries(attempt, retries=retries, backoff=backoff, sleep=sleep, what=item.dest)
    except DownloadError as exc:
        where = drive_url(item.ref) if item.source == "gdrive" else item.ref
        return FetchResult(item.dest, "failed", f"{exc}. Get it by hand from {where} and save it as {dest}.")
    os.replace(part, dest)
    manifest["files"][item.dest] = _record(item, dest)
    return FetchResult(item.dest, "downloaded")


def _record(item: RemoteFile, dest: Path) -> dict:
    return {
        "source": item.source,
        "ref": item.ref,
        "size": dest.stat().st_size,
        "sha256": sha256_file(dest),
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def fetch_all(
    plan: Plan,
    data_root: str | Path | None,
    network: Network,
    retries: int = 3,
    backoff: float = 2.0,
    verify: str = "sha256",
    overwrite: bool = False,
    dry_run: bool = False,
    limit: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[FetchResult]:
    """Fetch every file of ``plan`` (at most ``limit``); the manifest is saved after each file.

    ``dry_run`` lists what would be fetched and writes nothing.
    """
    if verify not in ("sha256", "size"):
        raise ValueError(f"Unknown verify={verify!r}; use 'sha256' or 'size'.")
    files = plan.files[:limit] if limit else plan.files
    manifest_path = layout.downloads_manifest_path(data_root)
    manifest = load_manifest(data_root)
    results = []
    for item in files:
        dest = layout.root(data_root) / item.dest
        if dry_run:
            size = f", {item.size} bytes" if item.size is not None else ""
            if dest.exists() and not overwrite:
                results.append(FetchResult(item.dest, "would-verify", f"on disk ({verify} against the manifest)"))
                continue
            state = "resume from .part" if part_path(dest).exists() and not overwrite else "new"
            results.append(FetchResult(item.dest, "would-fetch", f"{item.source} {item.ref} ({state}{size})"))
            continue
        result = fetch_one(item, data_root, network, manifest, retries, backoff, verify, overwrite, sleep)
        results.append(result)
        if result.status != "failed":
            write_json(manifest_path, manifest)
    return results


def recorded_drive_ids(data_root: str | Path | None) -> dict[str, str]:
    """Drive ids recorded in the manifest, keyed by destination relative to the data root."""
    return {dest: rec["ref"] for dest, rec in load_manifest(data_root)["files"].items() if rec.get("source") == "gdrive"}


def read_drive_ids(path: str | Path | None) -> dict[str, str]:
    """A user's ``{"<path in folder>": "<file id>"}`` JSON file (empty dict when no path)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--drive-ids file {path} does not exist.")
    ids = json.loads(path.read_text())
    if not isinstance(ids, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ids.items()):
        raise ValueError(f"{path}: expected a JSON object {{\"<path in folder>\": \"<file id>\"}}.")
    return ids
