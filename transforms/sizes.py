"""Size bounds of the outputs (DESIGN.md section 8, Sizes): the pure rules, one place.

    dead_letter(raw, origin, reason, error, received_at, core) -> DeadLetter
    display_name(name, max_length) -> str | None        one_line(text) -> str
    check_output_limit(core)                                 raises SettingsError

A dead letter keeps at most `core.max_dead_letter_raw` bytes of its record, with the whole
record's length and SHA-256 (enough to match it against the source, not to replay it), and an
error message of at most `core.max_string_length` characters. A payload is bounded by
transforms/compose.py: evidence and rendered items capped, and over `core.max_output_bytes`
encoded, the trigger's static fallback (then without recommendations or evidence if need be).
"""

from __future__ import annotations

import hashlib
import unicodedata

from transforms.model import DeadLetter, Origin
from transforms.settings import CoreSettings, SettingsError

# Bytes an encoded payload needs beyond its customer strings: ids, enums, numbers, framing,
# the fallback content (a trigger's fallback.json beyond this gets the generic one).
PAYLOAD_OVERHEAD = 8192
_JOINERS = frozenset("\u200c\u200d")


def dead_letter(
    raw: bytes, origin: Origin, reason: str, error: str, received_at: int, core: CoreSettings
) -> DeadLetter:
    """A dead letter of `raw` within the size bounds (see the module docstring)."""
    return DeadLetter(
        raw=raw[: core.max_dead_letter_raw],
        origin=origin,
        reason=reason,
        error=error[: core.max_string_length],
        received_at=received_at,
        raw_length=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
    )


def one_line(text: str) -> str:
    """Control and format characters (CR, LF, NUL, bidi overrides, line separators...) and
    runs of whitespace become one space; emoji joiners (ZWJ, ZWNJ) are kept."""
    if not text.isprintable():
        text = "".join(
            " " if unicodedata.category(c)[0] in "CZ" and c not in _JOINERS else c for c in text
        )
    return " ".join(text.split())


def display_name(name: str | None, max_length: int) -> str | None:
    """A customer's name fit for a header: on one line (one_line), at most `max_length`
    characters; None when nothing is left."""
    cleaned = one_line(name or "")[:max_length].rstrip()
    return cleaned or None


def smallest_payload_bound(core: CoreSettings) -> int:
    """Bytes that always hold a payload stripped to its fallback: six customer strings (ids,
    email, time zone, trigger key and category) of max_string_length characters of up to 4
    UTF-8 bytes, the name, and PAYLOAD_OVERHEAD."""
    return 4 * (6 * core.max_string_length + core.max_name_length) + PAYLOAD_OVERHEAD


def check_output_limit(core: CoreSettings) -> None:
    """Refuse an output limit that a stripped payload or a dead letter could exceed."""
    need = max(smallest_payload_bound(core),
               core.max_dead_letter_raw + 5 * core.max_string_length + PAYLOAD_OVERHEAD)
    if core.max_output_bytes < need:
        raise SettingsError(
            f"core.max_output_bytes = {core.max_output_bytes} is below {need}, what the largest "
            "stripped payload or dead letter can take with these string and raw-prefix bounds"
        )
