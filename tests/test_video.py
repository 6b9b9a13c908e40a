"""utils.video: decoding real BMD samples, sampling, resizing, writing and error cases."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import utils.video
from utils.video import (
    VideoDecodeError,
    read_video,
    resize_frames,
    sample_frames,
    sample_indices,
    sample_views,
    video_info,
    write_gif,
    write_mp4,
)

REPO = Path(__file__).resolve().parents[1]


def moving_gradient(n_frames: int, height: int, width: int) -> np.ndarray:
    """Smooth test clip uint8 (T, H, W, 3): a colour gradient that shifts every frame."""
    t = np.arange(n_frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    red = 128 + 90 * np.sin(np.pi * (x + 2 * t) / width)
    green = 128 + 90 * np.cos(np.pi * (y - t) / height)
    blue = np.broadcast_to(40 + 10 * t, red.shape)
    return np.stack(np.broadcast_arrays(red, green, blue), axis=-1).round().astype(np.uint8)


def write_vfr_with_audio(path: Path, frames: np.ndarray, pts_ms: list[int]) -> None:
    """An mp4 with irregular frame times (variable frame rate) and an AAC audio track."""
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        audio = container.add_stream("aac", rate=16000)
        for array, pts in zip(frames, pts_ms, strict=True):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        _mux_silence(container, audio, n_blocks=6)


def _mux_silence(container: av.container.OutputContainer, audio: av.audio.stream.AudioStream, n_blocks: int) -> None:
    """Encode ``n_blocks`` AAC frames (1024 samples each) of silence."""
    for block in range(n_blocks):
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        sound.sample_rate, sound.pts = 16000, block * 1024
        container.mux(audio.encode(sound))
    container.mux(audio.encode(None))


# ---------------------------------------------------------------- real BMD samples


@pytest.fixture(scope="module")
def decoded_samples(bmd_sample_videos: list[Path]) -> dict[Path, np.ndarray]:
    return {path: read_video(path) for path in bmd_sample_videos}


def test_bmd_samples_decode_with_expected_counts_and_sizes(decoded_samples):
    assert len(decoded_samples) == 10
    counts = set()
    for path, frames in decoded_samples.items():
        assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3, path
        assert 72 <= len(frames) <= 91, (path, frames.shape)
        assert 266 <= frames.shape[1] <= 268 and 266 <= frames.shape[2] <= 268, (path, frames.shape)
        assert frames.std() > 5, f"{path} decoded to a flat image"
        counts.add(len(frames))
    assert len(counts) > 1, "the samples mix frame rates, so frame counts should differ"


def test_bmd_sample_frames_linspace_over_all_frames(decoded_samples):
    for path, frames in decoded_samples.items():
        picked = sample_frames(path, 15)
        assert picked.shape == (15, *frames.shape[1:])
        np.testing.assert_array_equal(picked[0], frames[0])
        np.testing.assert_array_equal(picked[-1], frames[-1])
        np.testing.assert_array_equal(picked, frames[np.linspace(0, len(frames) - 1, 15).round().astype(int)])


def test_bmd_sample_frames_floored_as_the_original(decoded_samples):
    """--frame-sampling floor: numpy.linspace(0, T-1, 15, dtype=int), the original's indices."""
    differs = 0
    for path, frames in decoded_samples.items():
        floored = np.linspace(0, len(frames) - 1, 15, dtype=int)
        np.testing.assert_array_equal(sample_indices(len(frames), 15, "floor"), floored)
        np.testing.assert_array_equal(sample_frames(path, 15, rounding="floor"), frames[floored])
        differs += int((floored != sample_indices(len(frames), 15)).any())
    assert differs > 0, "rounding and flooring should pick other frames on some BMD samples"


def test_bmd_resize_without_antialias_is_plain_bilinear(decoded_samples):
    import torch
    import torch.nn.functional as F

    path, frames = next(iter(decoded_samples.items()))
    plain = sample_frames(path, 3, size=64, rounding="floor", antialias=False)  # (3, 64, 64, 3)
    picked = torch.from_numpy(frames[sample_indices(len(frames), 3, "floor")]).permute(0, 3, 1, 2).float()
    expected = F.interpolate(picked, size=(64, 64), mode="bilinear", antialias=False, align_corners=False)
    assert np.abs(plain.astype(float) - expected.permute(0, 2, 3, 1).numpy()).max() <= 1.0
    assert not np.array_equal(plain, sample_frames(path, 3, size=64, rounding="floor"))


def test_bmd_video_info_matches_decoding(decoded_samples):
    path, frames = next(iter(decoded_samples.items()))
    info = video_info(path)
    assert info["n_frames"] == len(frames)
    assert (info["height"], info["width"]) == frames.shape[1:3]
    assert 23.9 < info["fps"] < 30.1 and 2.9 < info["duration"] < 3.1
    assert info["codec"] == "h264"


def test_bmd_sample_frames_resized(bmd_sample_videos):
    out = sample_frames(bmd_sample_videos[0], 4, size=(240, 200))
    assert out.shape == (4, 240, 200, 3) and out.dtype == np.uint8


# ---------------------------------------------------------------- sampling and resizing


def test_sample_indices_cover_first_and_last():
    idx = sample_indices(75, 15)
    assert idx[0] == 0 and idx[-1] == 74 and len(idx) == 15
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(sample_indices(3, 5), [0, 0, 1, 2, 2])
    with pytest.raises(ValueError, match="n_frames"):
        sample_indices(10, 0)
    np.testing.assert_array_equal(sample_indices(75, 15, "floor"), np.linspace(0, 74, 15, dtype=int))
    np.testing.assert_array_equal(sample_indices(3, 5, "floor"), [0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="rounding='ceil'"):
        sample_indices(10, 3, "ceil")


def test_resize_int_is_square_and_tuple_is_h_w():
    frames = moving_gradient(2, 30, 40)
    assert resize_frames(frames, 16).shape == (2, 16, 16, 3)
    assert resize_frames(frames, (12, 20)).shape == (2, 12, 20, 3)
    np.testing.assert_array_equal(resize_frames(frames, (30, 40)), frames)
    with pytest.raises(ValueError, match="size"):
        resize_frames(frames, (0, 5))


def test_resize_is_antialiased_and_keeps_constants():
    checker = ((np.indices((32, 32)).sum(axis=0) % 2) * 255).astype(np.uint8)
    frames = np.repeat(checker[None, :, :, None], 3, axis=3)  # (1, 32, 32, 3) of 0/255 pixels
    small = resize_frames(frames, 8)
    assert np.abs(small.astype(int) - 127.5).max() <= 2, "antialiasing should average the fine checkerboard"
    flat = np.full((1, 17, 23, 3), 77, dtype=np.uint8)
    assert (resize_frames(flat, (40, 9)) == 77).all()


def test_resize_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        resize_frames(np.zeros((1, 4, 4, 3), dtype=np.float32), 2)


# ---------------------------------------------------------------- writing and reading back


@pytest.mark.parametrize("fps", [8, 29.97])
def test_mp4_roundtrip(tmp_path, fps):
    frames = moving_gradient(12, 48, 64)
    path = tmp_path / "clip.mp4"
    write_mp4(path, frames, fps)
    back = read_video(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 3
    info = video_info(path)
    assert info["n_frames"] == 12 and abs(info["fps"] - fps) < 0.01
    assert abs(info["duration"] - 12 / fps) < 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"], "no temporary file may be left"


def test_mp4_non_square_and_odd_sizes(tmp_path):
    frames = moving_gradient(5, 268, 266)
    write_mp4(tmp_path / "a.mp4", frames, 24)
    assert read_video(tmp_path / "a.mp4").shape == (5, 268, 266, 3)
    odd = moving_gradient(5, 21, 33)
    write_mp4(tmp_path / "b.mp4", odd, 24)
    back = read_video(tmp_path / "b.mp4")
    assert back.shape == (5, 22, 34, 3), "odd sizes are padded to even"
    assert np.abs(back[:, :21, :33].astype(int) - odd).mean() < 4


def test_gif_roundtrip(tmp_path):
    frames = moving_gradient(6, 32, 40)
    path = tmp_path / "clip.gif"
    write_gif(path, frames, 5)
    back = read_video(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 8
    assert abs(video_info(path)["duration"] - 6 / 5) < 0.05


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), dtype=np.float32), 8)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_gif(tmp_path / "x.gif", np.zeros((8, 8, 3), dtype=np.uint8), 8)
    with pytest.raises(ValueError, match="fps"):
        write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), dtype=np.uint8), 0)
    assert list(tmp_path.iterdir()) == []


def test_variable_frame_rate_with_audio(tmp_path):
    frames = moving_gradient(9, 32, 32)
    path = tmp_path / "vfr.mp4"
    write_vfr_with_audio(path, frames, [0, 33, 66, 150, 160, 170, 300, 333, 366])
    back = read_video(path)
    assert back.shape == frames.shape, "every frame must decode once, whatever the timing"
    assert np.abs(back.astype(int) - frames).mean() < 4
    assert video_info(path)["has_audio"]
    np.testing.assert_array_equal(sample_frames(path, 3), back[[0, 4, 8]])


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(VideoDecodeError, match="does not exist") as info:
        read_video(tmp_path / "nope.mp4")
    assert "nope.mp4" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_empty_and_non_video_files(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty"):
        read_video(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        read_video(text)
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        video_info(text)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        _mux_silence(container, container.add_stream("aac", rate=16000), n_blocks=4)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        read_video(path)


@pytest.mark.parametrize("keep", [0.3, 0.7])
def test_truncated_mp4(tmp_path, keep):
    path = tmp_path / "clip.mp4"
    write_mp4(path, moving_gradient(24, 64, 64), 24)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        read_video(cut)


def test_truncated_bmd_sample(bmd_sample_videos, tmp_path):
    data = bmd_sample_videos[0].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        sample_frames(cut, 15)


# ---------------------------------------------------------------- issue 12: memory, short videos, deterministic mp4


def test_sampling_holds_one_full_size_frame_at_a_time(tmp_path, monkeypatch):
    """A high-resolution video is decoded frame by frame: only the picked frames are converted, one
    full-size RGB frame is alive at a time, and the result equals resizing the picked frames of the
    fully decoded video (the old way)."""
    path = tmp_path / "big.mp4"
    write_mp4(path, moving_gradient(40, 360, 640), 25)
    refs: list[weakref.ref] = []
    peak = {"live": 0, "calls": 0}
    real = utils.video._frame_rgb

    class Tracked(np.ndarray):  # a plain ndarray subclass, so that it can be weakly referenced
        pass

    def tracked(frame, height, width):
        array = real(frame, height, width).view(Tracked)
        refs.append(weakref.ref(array))
        peak["live"] = max(peak["live"], sum(ref() is not None for ref in refs))
        peak["calls"] += 1
        return array

    monkeypatch.setattr(utils.video, "_frame_rgb", tracked)
    sampled = sample_views(path, 15, {"small": lambda f: resize_frames(np.asarray(f), 32)})
    assert peak == {"live": 1, "calls": 15}
    assert sampled.views["small"].shape == (15, 32, 32, 3) and sampled.n_decoded == 40 and not sampled.is_short
    monkeypatch.setattr(utils.video, "_frame_rgb", real)
    expected = resize_frames(read_video(path)[sample_indices(40, 15)], 32)
    np.testing.assert_array_equal(sampled.views["small"], expected)


def test_short_video_repeats_frames_and_says_so(tmp_path):
    path = tmp_path / "short.mp4"
    write_mp4(path, moving_gradient(5, 16, 16), 8)
    sampled = sample_views(path, 15, {"frames": lambda f: f})
    assert sampled.is_short and sampled.n_decoded == 5 and sampled.n_sampled == 15
    np.testing.assert_array_equal(sampled.views["frames"], read_video(path)[sample_indices(5, 15)])


WRITE_ONE = """
import sys
sys.path.insert(0, {repo!r})
import numpy as np
from utils.video import write_mp4
rng = np.random.default_rng(0)
noise = rng.integers(0, 64, (12, 240, 320, 3), dtype=np.uint8)
ramp = np.linspace(0, 180, 320).astype(np.uint8)[None, None, :, None]
write_mp4(sys.argv[1], noise + ramp, 8)
"""


def test_write_mp4_is_deterministic_across_processes_and_cpu_affinities(tmp_path):
    """The same frames give the same bytes in two fresh processes, one of them pinned to one CPU (x264's
    automatic thread count would follow the CPUs and change the bytes)."""
    script = tmp_path / "write_one.py"
    script.write_text(WRITE_ONE.format(repo=str(REPO)))
    digests = []
    for index, one_cpu in enumerate([False, True]):
        out = tmp_path / f"clip{index}.mp4"
        pin = [] if not one_cpu or not hasattr(os, "sched_getaffinity") else ["taskset", "-c", str(min(os.sched_getaffinity(0)))]
        command = pin + [sys.executable, str(script), str(out)]
        if pin and subprocess.run(["which", "taskset"], capture_output=True).returncode != 0:
            command = command[3:]
        subprocess.run(command, check=True, timeout=120)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
