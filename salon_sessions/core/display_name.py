"""A salon's display name (`spec.displayName`, the API's `display_name`): human text that is
shown on the onboarding page, in `kubectl`, in logs.

Refused: control characters (C0, DEL, C1 — NUL included: PostgreSQL text cannot even hold
it) and the Unicode bidirectional controls (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069),
which reorder what is displayed ("Trojan Source": `U+202E` makes `Salon gnp.exe` read
differently from what it is), plus the line/paragraph separators U+2028/U+2029 and U+FEFF.
Zero-width joiners (emoji sequences, Persian ZWNJ) stay allowed.

One rule, two spellings of the same character class: `DISPLAY_NAME_PATTERN` for Python's
`re`, `DISPLAY_NAME_CRD_PATTERN` for the CRD's OpenAPI `pattern` (the API server's Go RE2
has no `\\u` escape). Both are generated from `FORBIDDEN` below; tests/crd keeps the CRD's
pattern equal to the generated one and checks that the API server refuses what Python
refuses.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, Field

DISPLAY_NAME_MAX: Final = 200
FORBIDDEN: Final = (
    (0x00, 0x1F), (0x7F, 0x9F),  # C0, DEL, C1 controls
    (0x061C, 0x061C),  # ARABIC LETTER MARK
    (0x200E, 0x200F),  # LRM, RLM
    (0x2028, 0x202E),  # LINE/PARAGRAPH SEPARATOR, LRE, RLE, PDF, LRO, RLO
    (0x2066, 0x2069),  # LRI, RLI, FSI, PDI
    (0xFEFF, 0xFEFF),  # ZERO WIDTH NO-BREAK SPACE (BOM)
)


def _class(escape: str) -> str:
    parts = []
    for low, high in FORBIDDEN:
        parts.append(escape.format(low) if low == high
                     else f"{escape.format(low)}-{escape.format(high)}")
    return "^[^" + "".join(parts) + "]*$"


DISPLAY_NAME_PATTERN: Final = _class("\\u{:04x}")
DISPLAY_NAME_CRD_PATTERN: Final = _class("\\x{{{:04X}}}")
_ALLOWED: Final = re.compile(DISPLAY_NAME_PATTERN)


class InvalidDisplayName(ValueError):
    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(why)


def check_display_name(value: str) -> str:
    """The name, or `InvalidDisplayName` (its message never echoes the value)."""
    if not _ALLOWED.fullmatch(value):
        raise InvalidDisplayName("control and bidirectional characters are not allowed")
    return value


DisplayName = Annotated[
    str,
    Field(min_length=1, max_length=DISPLAY_NAME_MAX,
          description="shown on the onboarding page; no control or bidirectional "
                      "characters"),
    AfterValidator(check_display_name),
]
