"""Video files for the style networks, through PyAV (FFmpeg): probed before anything is styled, read as
batches of RGB frames in [0, 1], and written back as H.264 with each frame's own timestamp (so the source's
frame rate, constant or variable) and without audio."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from core.errors import DataError


def open_container(path: Path, mode: str = "r", container_format: str | None = None):  # noqa: ANN201
    """`av.open` (an av container), with FFmpeg's errors as a DataError naming the file."""
    import av

    try:
        return av.open(str(path), mode, format=container_format)
    except (av.FFmpegError, OSError) as err:
        raise DataError(f"Cannot read video {path}: {err}. Give a video FFmpeg reads (.mp4, .mov, .mkv, "
                        "...), or convert it (ffmpeg -i in.xyz out.mp4).") from err


@dataclass(frozen=True)
class VideoFacts:
    """What a video file's first video stream says about itself, read before any frame is decoded."""

    path: Path
    width: int
    height: int
    frames: int            # as the container states it (0: not stated)
    rate: Fraction | None  # average frames per second (None: not stated)
    has_audio: bool

    @classmethod
    def probe(cls, path: Path) -> VideoFacts:
        """The facts of `path`, or a DataError when it cannot be opened or holds no video stream."""
        with open_container(path) as container:
            if not container.streams.video:
                kinds = ", ".join(sorted({stream.type for stream in container.streams})) or "none"
                raise DataError(f"{path} holds no video stream (its streams: {kinds}): nothing to style. "
                                "Give a video file, or the images themselves.")
            stream = container.streams.video[0]
            return cls(path, int(stream.width), int(stream.height), int(stream.frames or 0),
                       Fraction(stream.average_rate) if stream.average_rate else None,
                       bool(container.streams.audio))


Stamp = tuple[int | None, Fraction | None]  # a frame's presentation timestamp and its time base


def frame_batches(path: Path, batch_size: int) -> Iterator[tuple[torch.Tensor, list[Stamp]]]:
    """Batches of the first video stream's frames, (N, 3, H, W) uint8 RGB, with each frame's timestamp;
    a frame FFmpeg cannot decode raises DataError saying which."""
    import av

    decoded = 0
    with open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        images, stamps = [], []
        try:
            for frame in container.decode(stream):
                images.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1))
                stamps.append((frame.pts, frame.time_base))
                decoded += 1
                if len(images) == batch_size:
                    yield torch.stack(images), stamps
                    images, stamps = [], []
        except av.FFmpegError as err:
            raise DataError(f"{path}: frame {decoded + 1} cannot be decoded ({err}).") from err
        if images:
            yield torch.stack(images), stamps


class VideoWriter:
    """An H.264 (yuv420p) MP4 written frame by frame with the given timestamps; `rate` is the stream's
    nominal frame rate. yuv420p needs even sides: an odd last row or column is left out. The file is
    `<path>.partial` until `close` renames it, so that an interrupted run leaves no file that looks whole."""

    def __init__(self, path: Path, width: int, height: int, rate: Fraction | None,
                 time_base: Fraction | None) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = open_container(self.partial, "w", "mp4")
        self.stream = self.container.add_stream("libx264", rate=rate or Fraction(25))
        self.width, self.height = width - width % 2, height - height % 2
        self.cut = (self.width, self.height) != (width, height)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.options = {"crf": "18"}  # visually lossless: what the network made, not codec noise
        if time_base is not None:
            self.stream.time_base = time_base
        self.frames = 0

    def write(self, images: torch.Tensor, stamps: list[Stamp]) -> None:
        """Encode (N, 3, H, W) images in [0, 1], each with its source frame's (pts, time base)."""
        import av

        pixels = (images[..., :self.height, :self.width].clamp(0, 1) * 255).round().byte()
        for image, (pts, time_base) in zip(pixels.permute(0, 2, 3, 1).cpu().numpy(), stamps, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts, time_base
            self.container.mux(self.stream.encode(frame))
            self.frames += 1

    def close(self) -> None:
        """Flush the encoder, finish the file and give it its name."""
        self.container.mux(self.stream.encode(None))
        self.container.close()
        self.partial.replace(self.path)

    def discard(self) -> None:
        """Close without finishing, and remove the partial file."""
        with contextlib.suppress(Exception):
            self.container.close()
        self.partial.unlink(missing_ok=True)
