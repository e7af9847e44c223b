"""Values a user hands to any command, read one way: finite numbers, durations, URLs with a valid port,
UTF-8 files.

Each reader takes `where` (the flag, the file and field, the inventory knob) and raises UserError naming
it, so a bad value anywhere is the same one line and exit 2.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from loadlab.errors import UserError

MAX_DURATION = 24 * 3600.0  # longer than a day for one step or warm-up is a typo, not a plan

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def finite_number(
    value: Any,
    where: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    what: str = "a number",
) -> float:
    """A real, finite number in range: NaN and infinity are refused like any other typo."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserError(f"{where}: expected {what}, got {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise UserError(f"{where}: expected {what}, got {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"{where}: expected {what}, got {value!r} (not a finite number)")
    if above is not None and not number > above:
        raise UserError(f"{where}: {value!r} is not {what} (must be more than {above:g})")
    if minimum is not None and number < minimum:
        raise UserError(f"{where}: {value!r} is not {what} (must be at least {minimum:g})")
    if maximum is not None and number > maximum:
        raise UserError(f"{where}: {value!r} is not {what} (must be at most {maximum:g})")
    return number


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """Seconds from '30s', '2m', '1m30s', '500ms' or a bare number of seconds."""
    if isinstance(text, bool):
        raise UserError(f"{what}: expected a duration like 30s or 2m, got {text!r}")
    if isinstance(text, int | float):
        seconds = finite_number(text, what, what="a duration like 30s or 2m")
    else:
        raw = str(text).strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", raw):
            seconds = float(raw)
        else:
            parts = _DURATION_PART.findall(raw)
            if not parts or "".join(n + u for n, u in parts) != raw:
                raise UserError(f"{what}: expected a duration like 30s, 2m or 1m30s, got {text!r}")
            scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            seconds = sum(float(n) * scale[u] for n, u in parts)
    if seconds < 0:
        raise UserError(f"{what}: must not be negative, got {text!r}")
    if not seconds <= MAX_DURATION:
        raise UserError(f"{what}: {text!r} is longer than {MAX_DURATION / 3600:g}h")
    return seconds


def target_port(url: str) -> int:
    """The TCP port a target URL talks to (its scheme's own where it names none)."""
    parts = urlsplit(url)
    if parts.port:
        return parts.port
    return 443 if parts.scheme == "https" else 80


def parse_share(text: Any, where: str) -> float:
    """A share of something, as 5% or 0.05: a number from 0 to 1."""
    value = str(text).strip()
    scale = 100.0 if value.endswith("%") else 1.0
    share = finite_number(value.rstrip("%"), where, minimum=0, maximum=scale, what="a share (5% or 0.05)")
    return share / scale


def parse_url(text: Any, where: str, schemes: tuple[str, ...] = ("http", "https")) -> SplitResult:
    """A URL with one of `schemes`, a host (unix sockets excepted) and a port in 1-65535 if it names one."""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where}: expected a URL like {schemes[0]}://127.0.0.1:8080, got {text!r}")
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unclosed IPv6 bracket
        raise UserError(f"{where}: {text!r} is not a URL ({exc})") from None
    if parts.scheme not in schemes:
        raise UserError(f"{where}: {text!r} must start with {' or '.join(s + '://' for s in schemes)}")
    try:
        port = parts.port
    except ValueError:
        raise UserError(f"{where}: {text!r} has an invalid port (a TCP port is 1-65535)") from None
    if port == 0:
        raise UserError(f"{where}: {text!r} has an invalid port (a TCP port is 1-65535)")
    if parts.scheme != "unix" and not parts.hostname:
        raise UserError(f"{where}: {text!r} has no host")
    return parts


def read_text(path: Path, what: str = "file") -> str:
    """A text file the user named; unreadable or not UTF-8 is one line naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path}: not UTF-8 text (byte {exc.start}); is it the right file?") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path}: is a folder, not a file") from None
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
