"""QR codes of short links, for print: what a phone camera reads is `short_url?qr=1`, so the
click is known to come from the printed code. (pure)"""

from __future__ import annotations

import io

import segno

FORMATS = {"svg": "image/svg+xml", "png": "image/png"}
SCALES = range(1, 41)  # pixels (SVG: user units) per module
DEFAULT_SCALE = 4
QUIET_ZONE = 4  # modules of white around the code, as ISO/IEC 18004 asks


def scan_url(short_url: str) -> str:
    return f"{short_url}?qr=1"


def image(url: str, kind: str, scale: int) -> bytes:
    """The QR code of `url` at error correction M (segno would raise it when the data leaves room:
    boost_error off keeps the level the SPEC names), as SVG or PNG."""
    out = io.BytesIO()
    segno.make(url, error="m", boost_error=False, micro=False).save(out, kind=kind, scale=scale, border=QUIET_ZONE)
    return out.getvalue()
