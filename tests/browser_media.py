"""A small, real WebM video written with the standard library only.

Browsers decode VP8, and a VP8 key frame whose two bool-coded partitions hold only
zero bytes is valid: every flag and mode decodes as 0 and every block ends at once,
so the frame is a flat grey picture predicted from the frame border. Such frames,
muxed with a duration and a cue per second, make a seekable video without an
encoder. Each frame is padded to ``frame_bytes`` so that the file is big enough for
a browser to fetch it in several ranges.
"""

from __future__ import annotations

import struct

__all__ = ["webm_video"]

_TIMESCALE_NS = 1_000_000  # one tick of a Matroska timestamp: 1 ms


def _size(length: int) -> bytes:
    # Always the 8-byte form: the layout is then known before anything is written.
    return b"\x01" + length.to_bytes(7, "big")


def _element(element_id: int, payload: bytes) -> bytes:
    raw_id = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    return raw_id + _size(len(payload)) + payload


def _uint(element_id: int, value: int, width: int = 0) -> bytes:
    width = width or max(1, (value.bit_length() + 7) // 8)
    return _element(element_id, value.to_bytes(width, "big"))


def _vp8_key_frame(width: int, height: int, frame_bytes: int) -> bytes:
    first_partition = 4096
    tokens = max(frame_bytes - 10 - first_partition, 2048)
    # Frame tag: key frame (bit 0 clear), version 0, shown, size of partition 1.
    tag = (1 << 4) | (first_partition << 5)
    header = tag.to_bytes(3, "little") + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    return header + bytes(first_partition + tokens)


def webm_video(
    width: int = 64,
    height: int = 48,
    seconds: int = 10,
    fps: int = 10,
    frame_bytes: int = 16 * 1024,
) -> bytes:
    """Return a VP8 WebM of ``seconds`` seconds, one cluster and one cue per second."""
    frame = _vp8_key_frame(width, height, frame_bytes)
    info = _element(
        0x1549A966,
        _uint(0x2AD7B1, _TIMESCALE_NS)
        + _element(0x4489, struct.pack(">d", seconds * 1000.0))
        + _element(0x4D80, b"dash-file-cache tests")
        + _element(0x5741, b"dash-file-cache tests"),
    )
    video = _element(0xE0, _uint(0xB0, width) + _uint(0xBA, height))
    track = _element(
        0xAE,
        _uint(0xD7, 1)
        + _uint(0x73C5, 1)
        + _uint(0x83, 1)
        + _element(0x86, b"V_VP8")
        + _uint(0x9C, 0)
        + video,
    )
    tracks = _element(0x1654AE6B, track)

    clusters = []
    for second in range(seconds):
        blocks = b""
        for index in range(fps):
            offset_ms = index * 1000 // fps
            # Track 1, timestamp relative to the cluster, key-frame flag.
            blocks += _element(0xA3, b"\x81" + struct.pack(">hB", offset_ms, 0x80) + frame)
        clusters.append(_element(0x1F43B675, _uint(0xE7, second * 1000) + blocks))

    def cues(first_cluster: int) -> bytes:
        points = b""
        position = first_cluster
        for second, cluster in enumerate(clusters):
            where = _uint(0xF7, 1) + _uint(0xF1, position, width=8)
            points += _element(0xBB, _uint(0xB3, second * 1000, width=8) + _element(0xB7, where))
            position += len(cluster)
        return _element(0x1C53BB6B, points)

    # Cue positions count from the start of the segment's payload; the cues come
    # before the clusters, and their size does not depend on the positions.
    head = info + tracks
    first_cluster = len(head) + len(cues(0))
    segment = head + cues(first_cluster) + b"".join(clusters)
    ebml = _element(
        0x1A45DFA3,
        _uint(0x4286, 1)
        + _uint(0x42F7, 1)
        + _uint(0x42F2, 4)
        + _uint(0x42F3, 8)
        + _element(0x4282, b"webm")
        + _uint(0x4287, 2)
        + _uint(0x4285, 2),
    )
    return ebml + _element(0x18538067, segment)
