"""Pass images drawn in code: a solid PNG per size, so a pass needs no image files.

Apple asks for ``icon.png`` (29 x 29 points) and shows ``logo.png`` (up to 160 x 50 points);
each comes at @1x, @2x and @3x.
"""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache

# (name, width, height) in points.
PASS_IMAGES = (("icon", 29, 29), ("logo", 160, 50))
SCALES = (1, 2, 3)


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


@lru_cache(maxsize=64)
def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """An 8-bit RGB PNG of one colour."""
    row = b"\x00" + bytes(rgb) * width  # filter byte "none", then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * height, 9))
        + _chunk(b"IEND", b"")
    )


def image_files(rgb: tuple[int, int, int]) -> dict[str, bytes]:
    """Every pass image at every scale, named as Apple expects (``logo@2x.png``)."""
    files: dict[str, bytes] = {}
    for name, width, height in PASS_IMAGES:
        for scale in SCALES:
            suffix = "" if scale == 1 else f"@{scale}x"
            files[f"{name}{suffix}.png"] = solid_png(width * scale, height * scale, rgb)
    return files
