"""Apache's number and text formats for the status views (mod_status's, byte for byte).

It owns APR's `%g` without a leading zero, mod_status's single-precision arithmetic and its
byte and kilobyte units, shared by the HTML page, `?auto`, the memory section and the report
`mpmctl status` prints. Pure functions: no scoreboard, no clock.
"""

from __future__ import annotations

import struct

KBYTE = 1024
MBYTE = 1048576
GBYTE = 1073741824
_F32 = struct.Struct("<f")


def f32(value: float) -> float:
    """Round to C's `float`, as mod_status computes its rates in single precision."""
    return _F32.unpack(_F32.pack(value))[0]


def apr_g(value: float, spec: str = "%g") -> str:
    """APR's `%g`: like C's, but a magnitude below 1 loses its leading zero (`.238095`)."""
    text = spec % value
    if text.startswith("0."):
        return text[1:]
    if text.startswith("-0."):
        return "-" + text[2:]
    return text


def show_time(seconds: int) -> str:
    """` N day(s) N hour(s) N minute(s) N second(s)`, zero parts left out (Apache's show_time)."""
    parts = []
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    for count, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"), (secs, "second")):
        if count:
            parts.append(f" {count} {unit}{'' if count == 1 else 's'}")
    return "".join(parts)


def format_bytes(count: int) -> str:
    """mod_status's format_byte_out: B under 5 kB, then kB, MB, GB with one decimal."""
    if count < 5 * KBYTE:
        return f"{int(count)} B"
    if count < MBYTE / 2:
        return f"{f32(count / KBYTE):.1f} kB"
    if count < GBYTE / 2:
        return f"{f32(count / MBYTE):.1f} MB"
    return f"{f32(count / GBYTE):.1f} GB"


def format_kbytes(kbytes: int) -> str:
    """mod_status's format_kbyte_out."""
    if kbytes < KBYTE:
        return f"{int(kbytes)} kB"
    if kbytes < MBYTE:
        return f"{f32(kbytes / KBYTE):.1f} MB"
    return f"{f32(kbytes / MBYTE):.1f} GB"


def escape_html(text: str) -> str:
    """ap_escape_html: & < > and double quotes (a single quote stays as it is)."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def strfsize(size: int) -> str:
    """apr_strfsize: at most four characters, `  0 `, `972 `, `1.2K`, ` 10K`, `1.0M`."""
    if size < 0:
        return "  - "
    if size < 973:
        return f"{size:3d} "
    units = "KMGTPE"
    unit = 0
    while True:
        remain = size & 1023
        size >>= 10
        if size >= 973:
            unit += 1
            continue
        if size < 9 or (size == 9 and remain < 973):
            remain = (remain * 5 + 256) // 512
            if remain >= 10:
                size, remain = size + 1, 0
            return f"{size}.{remain}{units[unit]}"
        if remain >= 512:
            size += 1
        return f"{size:3d}{units[unit]}"
