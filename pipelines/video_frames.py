"""One video -> its frames as stored JPEGs: `convert((path, short_side, qscale, threads))`.

The one decode-and-encode function: tools/preprocess_video.py runs it in worker processes to build a
frame store, engine/predict.py on the files it is asked about, so both see the same frames. A video
is decoded sequentially with PyAV (no seeking), every frame resized and JPEG-encoded in libav; a
folder of extracted JPEG frames (3D-ResNets-PyTorch layout) is read instead. Errors are returned in
`Converted.error`, never raised: one broken video never stops a job.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
from PIL import Image

from pipelines import frame_store

# The video files `convert` is given when a folder is searched for videos (tools/preprocess_video.py,
# engine/predict.py): the usual suffixes of containers PyAV reads.
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v")

# How frames become JPEGs (JpegEncoder): part of a store's identity, so a store or a partial build
# from an older encoder (other pixels or bytes for the same settings) is rebuilt, never mixed in.
ENCODING = "swscale bilinear, chroma left->centre, mjpeg single-threaded"


@dataclass
class Converted:
    sizes: np.ndarray  # int64 bytes of each frame's JPEG
    blob: bytes  # the JPEGs, concatenated
    fps: float = 0.0
    width: int = 0
    height: int = 0
    error: str = ""


class JpegEncoder:
    """Frames -> JPEG bytes at the stored size, all in libav: a filter graph (swscale: resize to the
    shorter side, full-range 4:2:0 with JPEG's centred chroma) feeding PyAV's mjpeg encoder.

    The graph and the encoder are built once per video and reused for every frame (PyAV's
    `frame.reformat()` builds a new swscale context, with its thread pool, for every frame: ~20x the
    cost of the scaling). Everything runs single-threaded (the decoder gets the process's threads),
    which also lets the mjpeg encoder write optimal Huffman tables (~25% smaller than with slice
    threads, same pixels). `chroma_siting`: where the source's 4:2:0 chroma samples sit, "left" for
    MPEG-2/4 and H.264 video (their standards' default), "center" for JPEG; read wrongly, colours
    shift by half a chroma sample (measured: 0.9 dB PSNR)."""

    def __init__(self, short_side: int, qscale: int, chroma_siting: str = "auto"):
        self.short_side, self.qscale, self.chroma_siting = short_side, qscale, chroma_siting
        self.graph, self.encoder, self.input, self.frames = None, None, None, 0

    def encode(self, frame: av.VideoFrame) -> bytes:
        if self.input != (frame.width, frame.height, frame.format.name):
            self._build(frame)
        self.graph.push(frame)
        scaled = self.graph.pull()
        # Timestamps 0, 1, 2 ... in the encoder's time base: PyAV rescales the source's into it, and
        # ffmpeg refuses a repeated one (any 30 fps video in a 1/25 time base; odd AVI timestamps).
        scaled.pts, scaled.time_base = self.frames, self.encoder.time_base
        self.frames += 1
        packets = self.encoder.encode(scaled)
        if len(packets) != 1:
            raise RuntimeError(f"mjpeg encoder returned {len(packets)} packets for one frame")
        return bytes(packets[0])

    def _build(self, frame: av.VideoFrame) -> None:
        self.input = (frame.width, frame.height, frame.format.name)
        width, height = frame_store.stored_size(frame.width, frame.height, self.short_side)
        graph = av.filter.Graph()
        graph.threads = 1
        source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                  time_base=frame.time_base or Fraction(1, 25))
        scale = graph.add("scale", f"{width}:{height}:flags=bilinear:in_chroma_loc={self.chroma_siting}"
                                   ":out_chroma_loc=center")
        full_range = graph.add("format", "yuvj420p")
        sink = graph.add("buffersink")
        source.link_to(scale)
        scale.link_to(full_range)
        full_range.link_to(sink)
        graph.configure()
        self.graph = graph
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height = width, height
        encoder.pix_fmt, encoder.time_base = "yuvj420p", Fraction(1, 25)
        encoder.qmin = encoder.qmax = self.qscale
        encoder.thread_count = 1
        self.encoder = encoder


CENTRED_CHROMA_CODECS = {"mjpeg", "mpeg1video"}  # JPEG's and MPEG-1's 4:2:0 siting; others' default is left


def convert(task: tuple) -> Converted:
    """Decode one video (or read one JPEG folder) into resized JPEG frames; errors are returned."""
    source, short_side, qscale, threads = task
    try:
        if source is None:
            raise FileNotFoundError("not found on disk")
        if os.path.isdir(source):
            return _convert_folder(Path(source), short_side, qscale)
        return _convert_video(source, short_side, qscale, threads)
    except Exception as e:  # any decoder or file error: the video is reported and left out
        return Converted(np.zeros(0, np.int64), b"", error=f"{type(e).__name__}: {_first_line(e)}")


def _convert_video(path: str, short_side: int, qscale: int, threads: int) -> Converted:
    sizes, chunks = [], []
    with av.open(path) as container:  # closing the container frees the decoder (PyAV leaks otherwise)
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        siting = "center" if stream.codec_context.name in CENTRED_CHROMA_CODECS else "left"
        encoder = JpegEncoder(short_side, qscale, siting)
        stream.thread_type = "AUTO" if threads > 1 else "SLICE"
        stream.codec_context.thread_count = threads
        width, height = stream.codec_context.width, stream.codec_context.height
        for frame in container.decode(stream):
            jpeg = encoder.encode(frame)
            sizes.append(len(jpeg))
            chunks.append(jpeg)
        rate = stream.average_rate or stream.guessed_rate
        expected = stream.frames
    if not sizes:
        raise ValueError("no frame decoded")
    if expected and len(sizes) < expected:  # the container promised more: a truncated or damaged file
        raise ValueError(f"decoded {len(sizes)} of the {expected} frames the container lists (truncated?)")
    return Converted(np.asarray(sizes, np.int64), b"".join(chunks), float(rate or 0), width, height)


def _convert_folder(folder: Path, short_side: int, qscale: int) -> Converted:
    files = sorted(folder.glob("image_*.jpg"))
    if not files:
        raise ValueError("no image_XXXXX.jpg frames in the folder")
    numbers = [int(f.stem.split("_")[1]) for f in files]
    if numbers != list(range(1, len(files) + 1)):
        raise ValueError(f"frame files are not numbered 1..{len(files)}")
    encoder, sizes, chunks, original = JpegEncoder(short_side, qscale), [], [], None
    for path in files:
        data = path.read_bytes()
        with Image.open(path) as img:
            original = original or img.size
            size = frame_store.stored_size(*img.size, short_side)
            if img.size != size or img.format != "JPEG":  # else: already what we store, keep the bytes
                data = encoder.encode(av.VideoFrame.from_image(img.convert("RGB")))
        sizes.append(len(data))
        chunks.append(data)
    return Converted(np.asarray(sizes, np.int64), b"".join(chunks), 0.0, *original)


def _first_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return lines[0][:200] if lines else type(e).__name__
