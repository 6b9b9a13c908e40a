"""Video decoding, frame sampling, resizing and writing (PyAV / FFmpeg and Pillow).

Decoding returns RGB ``uint8`` arrays of shape (T, H, W, 3) at the stored size of the
video; audio tracks are ignored. Frames are addressed by index over all decoded frames,
never by assuming a frame rate: BMD stimuli mix 23.98, 24, 25, 29.97 and 30 fps and are
not always square (266-268 x 268 px).

Resizing (``resize_frames``) is bilinear with antialiasing by default (``torch.nn.functional.interpolate``,
``mode="bilinear", antialias=True, align_corners=False``) with torch's uint8 kernel, which
equals the float32 result rounded to within one grey level and is about 10x faster;
``antialias=False`` is plain bilinear, as the original pipeline resized. An ``int`` size
means a square output (aspect ratio is not kept, as in the original pipeline's 268x268 resize).

``sample_indices`` spreads indices by ``linspace(0, T-1, n)``, rounded (``rounding="round"``,
the default) or floored (``"floor"``, the original's ``numpy.linspace(..., dtype=int)``).
A video with fewer frames than asked gives repeated frames (the linspace rule, as the
original); ``sample_views`` reports it (``SampledVideo.is_short``) so callers can warn.
``sample_views`` / ``sample_frames`` decode frame by frame and keep only the picked frames,
each converted to RGB and passed through the caller's transforms (e.g. a resize) at once, so
memory holds one full-size frame at a time whatever the resolution (an 8K video no longer
holds all its decoded frames). The index rule needs the true frame count: the container's
declared count is used (or the demuxed packets when it declares none) and, should the
decoded count differ, the video is decoded a second time with the true count. Decoding uses
FFmpeg's frame + slice threads.

Writing: ``write_mp4`` stores H.264 (libx264, yuv420p, CRF 18, ``+faststart``); odd heights
or widths are padded to even by repeating the last row / column, because yuv420p needs even
sizes, so such a video reads back one pixel larger. The encoder runs single-threaded
(``threads=1``, one lookahead thread, no sliced threads) with fixed timestamps: x264's
automatic thread count follows the CPUs a process may use, and its frame decisions follow
the thread count, so the same frames gave other bytes (and other decoded pixels) under
another CPU affinity or on another machine. Now the same frames give the same bytes in
every process with the same FFmpeg/x264 build on a quiet machine (tested across processes
and CPU affinities); clips are small, so one thread costs little. Under CPU load, CRF 18
still came out different in another process for 10 of 48 small clips (cause unknown);
lossless CRF 0 came out identical, so data that must decode to the same pixels in every
process (the synthetic demo's stimuli) is written with ``crf=0``. ``write_gif`` uses Pillow
(adaptive palette per frame, looping forever); GIF delays have a 10 ms resolution and
Pillow merges identical consecutive frames into one longer frame. Every write is atomic.

A missing, empty, truncated or non-video file raises ``VideoDecodeError`` naming the file
and the cause.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from utils.io import atomic_path


class VideoDecodeError(ValueError):
    """A video file cannot be read: missing, empty, truncated, or not a video."""


def _check_file(path: Path) -> None:
    """Raise VideoDecodeError for a missing, non-regular or empty file."""
    if not path.exists():
        raise VideoDecodeError(f"Cannot read video {path}: the file does not exist.")
    if not path.is_file():
        raise VideoDecodeError(f"Cannot read video {path}: not a regular file.")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"Cannot read video {path}: the file is empty (0 bytes); download or write it again.")


def _open(path: Path) -> av.container.InputContainer:
    """Open ``path`` for reading and check that it has a video stream."""
    _check_file(path)
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as error:
        raise VideoDecodeError(f"Cannot read video {path}: FFmpeg cannot open it ({error}); it is truncated or not a video.") from error
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"Cannot read video {path}: it has no video stream.")
    return container


def _decode(path: Path) -> list[av.VideoFrame]:
    """Decode every video frame of ``path`` (still in the stream's pixel format).

    Raises VideoDecodeError when nothing decodes or when fewer frames decode than the
    container declares (truncation).
    """
    frames: list[av.VideoFrame] = []
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: faster, same frames
        declared = int(stream.frames or 0)
        frames.extend(_decoded_frames(container, stream, path))
    if not frames:
        raise VideoDecodeError(f"Cannot read video {path}: no frame could be decoded (truncated or corrupt).")
    if declared and len(frames) < declared:
        raise VideoDecodeError(
            f"Cannot read video {path}: decoded {len(frames)} of the {declared} frames the file declares; it is truncated."
        )
    return frames


def _to_rgb(frames: list[av.VideoFrame]) -> np.ndarray:
    """Decoded frames -> uint8 (T, H, W, 3) RGB at the size of the first frame."""
    height, width = frames[0].height, frames[0].width
    arrays = [
        f.to_ndarray(format="rgb24") if (f.height, f.width) == (height, width) else f.to_ndarray(format="rgb24", width=width, height=height)
        for f in frames
    ]
    return np.stack(arrays)  # (T, H, W, 3)


def read_video(path: str | Path) -> np.ndarray:
    """Decode every frame of a video -> uint8 (T, H, W, 3) RGB.

    All frames are converted to the size of the first frame. Raises VideoDecodeError for a
    missing, empty, truncated or non-video file.
    """
    return _to_rgb(_decode(Path(path)))


ROUNDINGS = ("round", "floor")


def sample_indices(n_total: int, n_frames: int, rounding: str = "round") -> np.ndarray:
    """``n_frames`` indices spread evenly over ``n_total`` frames: round (or floor) of linspace(0, T-1, n)."""
    if n_total < 1 or n_frames < 1:
        raise ValueError(f"Need n_total >= 1 and n_frames >= 1, got n_total={n_total}, n_frames={n_frames}.")
    if rounding not in ROUNDINGS:
        raise ValueError(f"Unknown rounding={rounding!r}; use one of {list(ROUNDINGS)}.")
    spaced = np.linspace(0, n_total - 1, n_frames)
    return (spaced.round() if rounding == "round" else np.floor(spaced)).astype(int)


@dataclass(frozen=True)
class SampledVideo:
    """The frames picked from one video, one array per view, and the video's true frame count."""

    views: dict[str, np.ndarray]  # {name: uint8 (n_sampled, h, w, 3)}, each view at its transform's size
    n_decoded: int  # frames the video has
    n_sampled: int  # frames asked for

    @property
    def is_short(self) -> bool:
        """True when the video has fewer frames than asked: some picked frames are repeats."""
        return self.n_decoded < self.n_sampled


Transform = Callable[[np.ndarray], np.ndarray]  # uint8 (n, H, W, 3) -> uint8 (n, h, w, 3)


def _decoded_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path) -> Iterator[av.VideoFrame]:
    """The stream's frames one at a time; a decoding error becomes VideoDecodeError naming ``path``."""
    try:
        yield from container.decode(stream)
    except av.FFmpegError as error:
        raise VideoDecodeError(f"Cannot read video {path}: decoding failed ({error}); the file is truncated or corrupt.") from error


def _frame_rgb(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    """One decoded frame -> uint8 (height, width, 3) RGB (converted to that size when it differs)."""
    if (frame.height, frame.width) == (height, width):
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=width, height=height)


def _count_packets(path: Path) -> int:
    """Video packets of ``path`` (a frame count without decoding)."""
    with _open(path) as container:
        try:
            return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)
        except av.FFmpegError as error:
            raise VideoDecodeError(f"Cannot read video {path}: demuxing failed ({error}); the file is truncated or corrupt.") from error


def _sample_pass(path: Path, indices: np.ndarray, transforms: dict[str, Transform]) -> tuple[dict[int, dict[str, np.ndarray]], int, int]:
    """Decode ``path`` frame by frame, keeping ``{index: {view: transform(frame)}}`` for the picked
    ``indices`` only; returns (kept, decoded count, declared count)."""
    wanted = set(int(i) for i in indices)
    kept: dict[int, dict[str, np.ndarray]] = {}
    count, size = 0, None
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: faster, same frames
        declared = int(stream.frames or 0)
        for frame in _decoded_frames(container, stream, path):
            size = size or (frame.height, frame.width)  # every frame is converted to the first frame's size
            if count in wanted:
                rgb = _frame_rgb(frame, *size)[None]  # (1, H, W, 3): the one full-size frame held
                kept[count] = {name: fn(rgb) for name, fn in transforms.items()}
                del rgb
            count += 1
    return kept, count, declared


def sample_views(path: str | Path, n_frames: int, transforms: dict[str, Transform], rounding: str = "round") -> SampledVideo:
    """Pick ``n_frames`` frames by ``sample_indices`` over all decoded frames and pass each through
    every transform as soon as it is decoded -> ``SampledVideo`` ({name: uint8 (n, h, w, 3)}).

    Only one full-size frame is held at a time. Raises VideoDecodeError for a missing, empty,
    truncated or non-video file (fewer frames decoded than the container declares).
    """
    path = Path(path)
    with _open(path) as container:
        expected = int(container.streams.video[0].frames or 0)
    expected = expected or _count_packets(path)
    indices = sample_indices(max(expected, 1), n_frames, rounding)
    kept, count, declared = _sample_pass(path, indices, transforms)
    if count == 0:
        raise VideoDecodeError(f"Cannot read video {path}: no frame could be decoded (truncated or corrupt).")
    if declared and count < declared:
        raise VideoDecodeError(f"Cannot read video {path}: decoded {count} of the {declared} frames the file declares; it is truncated.")
    if count != expected:  # the guessed count was wrong: pick again from the true one
        indices = sample_indices(count, n_frames, rounding)
        kept, count, _ = _sample_pass(path, indices, transforms)
    views = {name: np.concatenate([kept[int(i)][name] for i in indices]) for name in transforms}
    return SampledVideo(views=views, n_decoded=count, n_sampled=n_frames)


def sample_frames(
    path: str | Path, n_frames: int, size: int | tuple[int, int] | None = None, rounding: str = "round", antialias: bool = True
) -> np.ndarray:
    """Pick ``n_frames`` frames by ``sample_indices``, optionally resize -> uint8 (n, H, W, 3).

    Decodes frame by frame; only the picked frames are converted to RGB (and resized one by one).
    """
    def keep(frames: np.ndarray) -> np.ndarray:
        return frames if size is None else resize_frames(frames, size, antialias)

    return sample_views(path, n_frames, {"frames": keep}, rounding).views["frames"]


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """``int`` -> (s, s); ``(h, w)`` -> (h, w); checks positivity."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}.")
    return int(h), int(w)


def resize_frames(frames: np.ndarray, size: int | tuple[int, int], antialias: bool = True) -> np.ndarray:
    """Resize uint8 (T, H, W, 3) frames to ``size`` (int = square, or (h, w)) -> uint8 (T, h, w, 3).

    Bilinear, with antialiasing unless ``antialias=False`` (torch ``F.interpolate`` on uint8
    channels-last, which matches the float32 computation rounded to within one grey level).
    """
    frames = _check_frames(frames, "frames")
    h, w = _size_hw(size)
    if frames.shape[1:3] == (h, w):
        return frames.copy()
    import torch
    import torch.nn.functional as F

    # (T, H, W, 3) viewed as channels-last (T, 3, H, W): torch's uint8 antialiased kernel
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    y = F.interpolate(x, size=(h, w), mode="bilinear", antialias=antialias, align_corners=False)  # (T, 3, h, w) uint8
    return y.permute(0, 2, 3, 1).contiguous().numpy()


def _check_frames(frames: np.ndarray, name: str) -> np.ndarray:
    """Validate uint8 (T, H, W, 3) frames."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"{name} must be uint8 (T, H, W, 3) with T >= 1, got shape {frames.shape}.")
    if frames.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (convert with np.clip(x, 0, 255).astype(np.uint8)), got {frames.dtype}.")
    return frames


def _as_rate(fps: float) -> Fraction:
    """Frame rate as a Fraction (29.97 -> 2997/100); must be positive."""
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps!r}.")
    return Fraction(str(fps)).limit_denominator(1001)


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Pad (T, H, W, 3) to even H and W by repeating the last row / column."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


# One encoder thread, one lookahead thread, no slices: the encoder's decisions do not follow the CPU count (for bytes that
# match under CPU load as well, write lossless: see the module docstring).
X264_DETERMINISTIC = "threads=1:lookahead-threads=1:sliced-threads=0"


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, crf: int = 18) -> None:
    """Write uint8 (T, H, W, 3) RGB frames as H.264 mp4 (yuv420p; odd sizes padded to even), atomically.

    One encoder thread; ``crf=0`` is lossless and decodes to the same pixels in every process (lossy CRFs may
    differ in a few clips under CPU load: see the module docstring)."""
    frames = _pad_even(_check_frames(frames, "frames"))
    rate = _as_rate(fps)
    height, width = frames.shape[1:3]
    with atomic_path(path, suffix=".tmp.mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1  # x264's automatic count follows the CPUs, and its output the count
            stream.codec_context.time_base = 1 / rate
            stream.options = {"crf": str(crf), "x264-params": X264_DETERMINISTIC}
            for index, array in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                frame.pts = index
                frame.time_base = 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))


def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write uint8 (T, H, W, 3) RGB frames as a looping GIF (Pillow), atomically."""
    from PIL import Image

    frames = _check_frames(frames, "frames")
    duration_ms = max(10, int(round(1000 / float(_as_rate(fps)) / 10)) * 10)
    images = [Image.fromarray(np.ascontiguousarray(f), mode="RGB") for f in frames]
    with atomic_path(path, suffix=".tmp.gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def video_info(path: str | Path) -> dict:
    """Container facts without decoding pixels.

    Returns n_frames (video packets counted by demuxing), fps (the stream's average rate, a
    guess for variable-rate files), duration (s), height, width, codec, has_audio.
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            n_frames = sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as error:
            raise VideoDecodeError(f"Cannot read video {path}: demuxing failed ({error}); the file is truncated or corrupt.") from error
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = n_frames / float(rate) if rate else float("nan")
        return {
            "n_frames": n_frames,
            "fps": float(rate) if rate else float("nan"),
            "duration": duration,
            "height": int(stream.codec_context.height),
            "width": int(stream.codec_context.width),
            "codec": stream.codec_context.name,
            "has_audio": bool(container.streams.audio),
        }
