"""Download logic with the network replaced by a fake: retries, resume, checksums, listings, dry run."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from utils import download, layout
from utils.datasets import BMD, CC2017, HAD
from utils.download import DriveEntry, HttpResponse, Plan, RemoteFile, TransientError

BMD_PKL = f"Group41{BMD.suffix}.pkl"


class FakeNetwork(download.Network):
    """In-memory Drive folders, Drive files and HTTP files; failures scheduled per key."""

    def __init__(self, folders=None, drive=None, http=None, s3=None, fail=None, cut=None, honour_range=True):
        super().__init__(quiet=True)
        self.folders = folders or {}
        self.drive = drive or {}
        self.http = http or {}
        self.s3 = s3 or {}
        self.fail = dict(fail or {})  # key -> failures left before success
        self.cut = dict(cut or {})  # url -> bytes sent before the connection drops (once)
        self.honour_range = honour_range
        self.calls: list[tuple] = []

    def _maybe_fail(self, key: str) -> None:
        if self.fail.get(key, 0) > 0:
            self.fail[key] -= 1
            raise TransientError(f"simulated failure for {key}")

    def list_drive_folder(self, folder_id):
        self.calls.append(("list", folder_id))
        self._maybe_fail(folder_id)
        return list(self.folders[folder_id])

    def fetch_drive_file(self, file_id, output):
        self.calls.append(("drive", file_id))
        self._maybe_fail(file_id)
        output.write_bytes(self.drive[file_id])

    def open_http(self, url, start=0):
        self.calls.append(("http", url, start))
        self._maybe_fail(url)
        body = self.http[url]
        if start and self.honour_range:
            return HttpResponse(206, len(body), self._chunks(url, body[start:]))
        return HttpResponse(200, len(body), self._chunks(url, body))

    def _chunks(self, url: str, body: bytes) -> Iterator[bytes]:
        if url in self.cut:
            n = self.cut.pop(url)
            yield body[:n]
            raise TransientError("connection reset")
        for i in range(0, len(body), 4):
            yield body[i : i + 4]

    def list_s3(self, bucket_url, prefix):
        self.calls.append(("s3", prefix))
        return [(k, s) for k, s in self.s3.items() if k.startswith(prefix)]


def _sleeps() -> tuple[list[float], callable]:
    waits: list[float] = []
    return waits, waits.append


def _fetch(plan, root, net, **kw):
    waits, sleep = _sleeps()
    results = download.fetch_all(plan, root, net, sleep=sleep, **{"retries": 3, "backoff": 1.0, **kw})
    return results, waits


def test_drive_retries_after_transient_failures_with_backoff(tmp_path):
    net = FakeNetwork(drive={"id1": b"pickle bytes"}, fail={"id1": 2})
    plan = Plan(files=[RemoteFile("a/b.pkl", "gdrive", "id1")])
    results, waits = _fetch(plan, tmp_path, net)
    assert [r.status for r in results] == ["downloaded"]
    assert waits == [1.0, 2.0]
    assert (tmp_path / "a/b.pkl").read_bytes() == b"pickle bytes"
    assert not (tmp_path / "a/b.pkl.part").exists()
    record = json.loads(layout.downloads_manifest_path(tmp_path).read_text())["files"]["a/b.pkl"]
    assert record["size"] == 12 and record["sha256"] == hashlib.sha256(b"pickle bytes").hexdigest()
    assert record["ref"] == "id1"


def test_retries_exhausted_gives_clear_failure_and_no_file(tmp_path):
    net = FakeNetwork(drive={"id1": b"x"}, fail={"id1": 10})
    results, waits = _fetch(Plan(files=[RemoteFile("f.pkl", "gdrive", "id1")]), tmp_path, net, retries=2)
    assert results[0].status == "failed"
    assert "3 attempt(s)" in results[0].message and "https://drive.google.com/uc?id=id1" in results[0].message
    assert waits == [1.0, 2.0]
    assert not (tmp_path / "f.pkl").exists()
    assert not layout.downloads_manifest_path(tmp_path).exists()


def test_http_resumes_from_existing_part_file(tmp_path):
    body = bytes(range(100))
    url = "https://example.org/x.json"
    (tmp_path / "m").mkdir()
    (tmp_path / "m/x.json.part").write_bytes(body[:30])
    net = FakeNetwork(http={url: body})
    results, _ = _fetch(Plan(files=[RemoteFile("m/x.json", "http", url)]), tmp_path, net)
    assert results[0].status == "downloaded"
    assert ("http", url, 30) in net.calls and ("http", url, 0) not in net.calls
    assert (tmp_path / "m/x.json").read_bytes() == body


def test_http_interrupted_transfer_resumes_on_retry(tmp_path):
    body = bytes(range(64))
    url = "https://example.org/v.mp4"
    net = FakeNetwork(http={url: body}, cut={url: 20})
    results, waits = _fetch(Plan(files=[RemoteFile("v.mp4", "http", url, size=64)]), tmp_path, net)
    assert results[0].status == "downloaded" and waits == [1.0]
    assert [c[2] for c in net.calls] == [0, 20]
    assert (tmp_path / "v.mp4").read_bytes() == body


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    body = b"0123456789" * 5
    url = "https://example.org/y"
    (tmp_path / "y.part").write_bytes(b"garbage")
    net = FakeNetwork(http={url: body}, honour_range=False)
    _fetch(Plan(files=[RemoteFile("y", "http", url)]), tmp_path, net)
    assert (tmp_path / "y").read_bytes() == body


def test_file_changed_on_disk_is_downloaded_again(tmp_path):
    net = FakeNetwork(drive={"id1": b"good content"})
    plan = Plan(files=[RemoteFile("f.pkl", "gdrive", "id1")])
    _fetch(plan, tmp_path, net)
    (tmp_path / "f.pkl").write_bytes(b"bad content!")  # same size, other bytes
    results, _ = _fetch(plan, tmp_path, net)
    assert results[0].status == "downloaded"
    assert (tmp_path / "f.pkl").read_bytes() == b"good content"
    assert net.calls.count(("drive", "id1")) == 2


def test_rerun_verifies_without_network(tmp_path):
    net = FakeNetwork(drive={"id1": b"abc"})
    plan = Plan(files=[RemoteFile("f.pkl", "gdrive", "id1")])
    _fetch(plan, tmp_path, net)
    results, _ = _fetch(plan, tmp_path, net)
    assert (results[0].status, results[0].message) == ("present", "verified")
    assert net.calls.count(("drive", "id1")) == 1


def test_checksum_mismatch_after_download_is_a_clear_error(tmp_path):
    net = FakeNetwork(drive={"id1": b"what the server sends"})
    plan = Plan(files=[RemoteFile("f.pkl", "gdrive", "id1", sha256="0" * 64)])
    results, _ = _fetch(plan, tmp_path, net, retries=1)
    assert results[0].status == "failed"
    assert "expected " + "0" * 64 in results[0].message
    assert not (tmp_path / "f.pkl").exists() and not (tmp_path / "f.pkl.part").exists()


def test_size_mismatch_from_listing_is_retried_then_reported(tmp_path):
    url = "https://example.org/short"
    net = FakeNetwork(http={url: b"12345"})
    results, _ = _fetch(Plan(files=[RemoteFile("s", "http", url, size=9)]), tmp_path, net, retries=1)
    assert results[0].status == "failed" and "size 5 bytes, expected 9" in results[0].message


def test_dry_run_writes_nothing_and_fetches_nothing(tmp_path):
    net = FakeNetwork(drive={"id1": b"abc"}, http={"https://e/x": b"x"})
    plan = Plan(files=[RemoteFile("a/f.pkl", "gdrive", "id1"), RemoteFile("b/x", "http", "https://e/x", size=1)])
    results, _ = _fetch(plan, tmp_path, net, dry_run=True)
    assert [r.status for r in results] == ["would-fetch", "would-fetch"]
    assert "1 bytes" in results[1].message
    assert list(tmp_path.iterdir()) == [] and net.calls == []
    (tmp_path / "a").mkdir()
    (tmp_path / "a/f.pkl").write_bytes(b"abc")
    (tmp_path / "b").mkdir()
    (tmp_path / "b/x.part").write_bytes(b"")
    results, _ = _fetch(plan, tmp_path, net, dry_run=True)
    assert [r.status for r in results] == ["would-verify", "would-fetch"] and "resume from .part" in results[1].message
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "f.pkl", "x.part"] and net.calls == []


def _pickle_listing(subjects, extra=0) -> list[DriveEntry]:
    entries = [DriveEntry(f"id{s}", f"bmd/sub{s:02d}/prepared_allvoxel_pkl/{BMD_PKL}") for s in subjects]
    return entries + [DriveEntry(f"x{i}", f"bmd/other_{i}.txt") for i in range(extra)]


def test_pickles_are_matched_by_suffix_and_subject():
    entries = [
        DriveEntry("a", f"sub-01/{BMD_PKL}"),
        DriveEntry("b", f"betas/sub02/{BMD_PKL}.bak"),  # not the exact name
        DriveEntry("c", f"sub03/Group41{CC2017.suffix}.pkl"),  # another dataset
        DriveEntry("d", f"sub10/{BMD_PKL}"),
        DriveEntry("e", f"sub1/copy/{BMD_PKL}"),  # subject 1 again: ambiguous
    ]
    matches, problems = download.match_pickles(entries, BMD, [1, 2, 3, 10])
    assert {s: e.id for s, e in matches.items()} == {1: "a", 10: "d"}
    assert len(problems) == 1 and "Two files for bmd subject 1" in problems[0]


def test_partial_listing_of_50_warns_and_drive_ids_fill_the_gap():
    folder = download.DRIVE_FOLDERS["pickles"]
    # Subject 3 is in the folder but beyond gdown's 50 listed entries.
    listing = [DriveEntry(f"id{s}", f"sub{s:02d}/{BMD_PKL}") for s in (1, 2)] + [DriveEntry(f"x{i}", f"z{i}.txt") for i in range(46)]
    listing += [DriveEntry("q", "sub04/notes.txt"), DriveEntry("r", "sub05/notes.txt")]
    net = FakeNetwork(folders={folder: listing})
    plan = download.plan_dataset("bmd", [1, 3], net, what=("betas",))
    assert any("50 entries" in w and "--drive-ids" in w for w in plan.warnings)
    assert [f.dest for f in plan.files] == [f"betas_cifti_bmd/sub01/prepared_allvoxel_pkl/{BMD_PKL}"]
    assert len(plan.missing) == 1 and "subject 3" in plan.missing[0] and "50-entry limit" in plan.missing[0]
    plan = download.plan_dataset("bmd", [1, 3], net, what=("betas",), drive_ids={f"sub03/{BMD_PKL}": "id3"})
    assert [f.ref for f in plan.files] == ["id1", "id3"] and plan.missing == []


def test_listing_below_limit_does_not_warn_and_reports_missing_plainly():
    folder = download.DRIVE_FOLDERS["pickles"]
    net = FakeNetwork(folders={folder: _pickle_listing([1], extra=3)})
    plan = download.plan_dataset("bmd", [2], net, what=("betas",))
    assert plan.warnings == [] and "50-entry" not in plan.missing[0] and "sub02" in plan.missing[0]


def test_subfolder_at_limit_is_detected():
    entries = [DriveEntry(f"i{i}", f"clips/seg1/c{i}.mp4") for i in range(50)] + [DriveEntry("t", "clips/readme.txt")]
    warnings = download.listing_warnings("F", entries)
    assert len(warnings) == 1 and "subfolder clips/seg1" in warnings[0]


def test_known_ids_from_the_manifest_keep_files_a_listing_no_longer_shows():
    folder = download.DRIVE_FOLDERS["pickles"]
    net = FakeNetwork(folders={folder: []})
    dest = f"betas_cifti_bmd/sub02/prepared_allvoxel_pkl/{BMD_PKL}"
    plan = download.plan_dataset("bmd", [2], net, what=("betas",), known={dest: "old-id"})
    assert [(f.dest, f.ref) for f in plan.files] == [(dest, "old-id")]


def test_listing_is_retried(tmp_path):
    folder = download.DRIVE_FOLDERS["pickles"]
    net = FakeNetwork(folders={folder: _pickle_listing([1])}, fail={folder: 1})
    waits, sleep = _sleeps()
    plan = download.plan_dataset("bmd", [1], net, what=("betas",), sleep=sleep, backoff=0.5)
    assert len(plan.files) == 1 and waits == [0.5]


def test_bmd_metadata_and_stimuli_terms(tmp_path):
    net = FakeNetwork(s3={
        f"{BMD.stimuli_release.location}mp4_h264/0001.mp4": 11,
        f"{BMD.stimuli_release.location}mp4_h264/0002.mp4": 12,
        f"{BMD.stimuli_release.location}annotations.json": 5,
    })
    plan = download.plan_dataset("bmd", [1], net, what=("metadata", "stimuli"))
    assert [f.dest for f in plan.files] == ["metadata_bmd/annotations.json"]
    assert plan.files[0].ref == "https://s3.amazonaws.com/openneuro.org/ds005165/derivatives/stimuli_metadata/annotations.json"
    assert len(plan.manual) == 1 and "terms of use" in plan.manual[0] and "--accept-stimuli-terms" in plan.manual[0]
    plan = download.plan_dataset("bmd", [1], net, what=("stimuli",), accept_terms=True)
    assert [(f.dest, f.size) for f in plan.files] == [("stimuli_bmd/mp4/0001.mp4", 11), ("stimuli_bmd/mp4/0002.mp4", 12)]


def test_had_stimuli_keep_class_folders_with_spaces():
    key = f"{HAD.stimuli_release.location}Drum_corps/v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1.mp4"
    net = FakeNetwork(s3={key: 99})
    plan = download.plan_dataset("had", [1], net, what=("stimuli",))
    assert [f.dest for f in plan.files] == ["stimuli_had/Drum corps/v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1.mp4"]


def test_cc2017_clips_are_padded_and_raw_data_is_by_hand():
    folder = download.DRIVE_FOLDERS["cc2017_clips"]
    net = FakeNetwork(folders={folder: [DriveEntry("c1", "seg1_begin-2_end-4.mp4")]})
    plan = download.plan_dataset("cc2017", [1], net, what=("stimuli",))
    assert [f.dest for f in plan.files] == ["stimuli_cc2017/seg1_begin-002_end-004.mp4"]
    assert any("PURR" in m and "2809" in m for m in plan.manual)


def test_bad_requests_are_refused():
    net = FakeNetwork()
    with pytest.raises(ValueError, match="Unknown subject"):
        download.plan_dataset("bmd", ["11"], net)
    with pytest.raises(ValueError, match="synthesised offline"):
        download.plan_dataset("demo", None, net)
    with pytest.raises(ValueError, match="Unknown what"):
        download.plan_dataset("bmd", None, net, what=("videos",))


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves BODY with Range support, and an S3-style listing in two pages."""

    BODY = bytes(range(256)) * 8

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path.startswith("/bucket?"):
            query = urllib.parse.parse_qs(self.path.split("?", 1)[1])
            ns = "http://s3.amazonaws.com/doc/2006-03-01/"
            if "continuation-token" not in query:
                xml = (f'<ListBucketResult xmlns="{ns}"><IsTruncated>true</IsTruncated><NextContinuationToken>t2'
                       f'</NextContinuationToken><Contents><Key>{query["prefix"][0]}a.mp4</Key><Size>3</Size></Contents></ListBucketResult>')
            else:
                xml = f'<ListBucketResult xmlns="{ns}"><IsTruncated>false</IsTruncated><Contents><Key>p/b.mp4</Key><Size>4</Size></Contents></ListBucketResult>'
            self._send(200, xml.encode(), {})
            return
        if self.path == "/missing":
            self._send(404, b"", {})
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if start:
            headers = {"Content-Range": f"bytes {start}-{len(self.BODY) - 1}/{len(self.BODY)}"}
            self._send(206, self.BODY[start:], headers)
        else:
            self._send(200, self.BODY, {})

    def _send(self, code, body, headers):
        self.send_response(code)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def local_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_real_network_layer_resumes_with_range_and_lists_pages(tmp_path, local_server):
    net = download.Network(timeout=10, quiet=True)
    body = _RangeHandler.BODY
    (tmp_path / "f.bin.part").write_bytes(body[:100])
    results, _ = _fetch(Plan(files=[RemoteFile("f.bin", "http", f"{local_server}/file")]), tmp_path, net)
    assert results[0].status == "downloaded" and (tmp_path / "f.bin").read_bytes() == body
    response = net.open_http(f"{local_server}/file", 2000)
    assert (response.status, response.total, b"".join(response.chunks)) == (206, len(body), body[2000:])
    assert net.list_s3(f"{local_server}/bucket", "p/") == [("p/a.mp4", 3), ("p/b.mp4", 4)]
    with pytest.raises(download.DownloadError, match="HTTP 404") as exc:
        net.open_http(f"{local_server}/missing")
    assert not isinstance(exc.value, TransientError)


def test_real_drive_layer_calls_gdown_as_documented(tmp_path, monkeypatch):
    import gdown
    from gdown.download import GoogleDriveFileToDownload

    seen = {}

    def fake_folder(**kw):
        seen["folder"] = kw
        return [GoogleDriveFileToDownload(id="f1", path="sub01/a.pkl", local_path="/x/sub01/a.pkl")]

    def fake_download(**kw):
        seen["file"] = kw
        if kw["id"] == "bad":
            raise gdown.exceptions.FileURLRetrievalError("Too many users have viewed or downloaded this file recently")
        Path(kw["output"]).write_bytes(b"data")
        return kw["output"]

    monkeypatch.setattr(gdown, "download_folder", fake_folder)
    monkeypatch.setattr(gdown, "download", fake_download)
    net = download.Network(quiet=True)
    assert net.list_drive_folder("FOLDER") == [DriveEntry("f1", "sub01/a.pkl")]
    assert seen["folder"]["id"] == "FOLDER" and seen["folder"]["skip_download"] is True
    net.fetch_drive_file("good", tmp_path / "a.part")
    assert (tmp_path / "a.part").read_bytes() == b"data" and seen["file"]["resume"] is True
    with pytest.raises(TransientError, match="Too many users"):
        net.fetch_drive_file("bad", tmp_path / "b.part")
