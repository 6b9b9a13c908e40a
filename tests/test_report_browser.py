"""report.html renders in headless Chromium and every video and image in it loads.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); skipped when it is absent.
"""
from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import evaluate
from utils import layout
from utils.io import write_json
from utils.synthetic import make_demo
from utils.video import write_mp4

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--mute-audio", "--virtual-time-budget=15000",
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


class MediaParser(HTMLParser):
    """Collects the attributes of every <video>/<img>, the <body> and the table ids of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.media: list[tuple[str, dict]] = []
        self.body: dict = {}
        self.tables: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("video", "img"):
            self.media.append((tag, attrs))
        elif tag == "body":
            self.body = attrs
        elif tag == "table":
            self.tables.append(attrs.get("id", ""))


def dump_dom(page: Path, profile: Path) -> MediaParser:
    """The DOM of ``page`` after Chromium ran its scripts."""
    out = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--allow-file-access-from-files", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    parser = MediaParser()
    parser.feed(out.stdout)
    return parser


def make_run(root: Path, run: str) -> None:
    """A two-clip reconstruction run (shifted copies of the ground truth) with captions."""
    make_demo(root, n_subjects=1, n_train=2, n_test=3, size=32, n_frames=8)
    for number in (3, 4, 5):
        frames = np.full((6, 32, 32, 3), 40 * number, np.uint8)
        write_mp4(layout.reconstructions_dir(root, run) / "mp4" / f"{number:04d}.mp4", frames, 5)
    write_json(layout.reconstructions_dir(root, run) / "captions.json", {"0003": "a red circle", "0004": "a blue box", "0005": "sky"})


@pytest.mark.parametrize("embed", [True, False], ids=["embedded", "linked"])
def test_report_renders_and_media_load(tmp_path: Path, embed: bool):
    root = tmp_path / "data"
    make_run(root, "browser")
    argv = ["--data-root", str(root), "--reconstructions", "browser", "--no-semantic", "--report-size", "32"]
    assert evaluate.main(argv + ([] if embed else ["--no-embed-media"])) == 0
    page = layout.evaluation_dir(root, "browser") / "report.html"
    dom = dump_dom(page, tmp_path / "profile")
    videos = [a for tag, a in dom.media if tag == "video"]
    images = [a for tag, a in dom.media if tag == "img"]
    assert len(videos) == 6 and len(images) == 3  # truth + reconstruction per clip; three figures
    assert dom.body.get("data-media-checked") == "1"
    failed = [a.get("src", "")[:80] for _, a in dom.media if a.get("data-loaded") != "1"]
    assert not failed, f"media that did not load: {failed}"
    assert {"metrics-table", "oracle-table", "caption-table"} <= set(dom.tables)
    if not embed:
        assert all(not a["src"].startswith("data:") for _, a in dom.media)


def test_broken_media_is_detected(tmp_path: Path):
    """The check can fail: a report whose video file is gone marks it with data-error."""
    root = tmp_path / "data"
    make_run(root, "broken")
    assert evaluate.main(["--data-root", str(root), "--reconstructions", "broken", "--no-semantic", "--no-embed-media", "--report-size", "32"]) == 0
    out_dir = layout.evaluation_dir(root, "broken")
    (out_dir / "media" / "0003_recon.mp4").unlink()
    dom = dump_dom(out_dir / "report.html", tmp_path / "profile")
    errors = [a["src"] for _, a in dom.media if a.get("data-error") == "1"]
    assert errors == ["media/0003_recon.mp4"]
