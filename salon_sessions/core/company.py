"""Company id: the one canonical form `company_<digits>` and the legacy forms it replaces.

Rules (the only place they live; the CRD pattern and the SQL CHECKs are tested against
`COMPANY_ID_PATTERN`):

- canonical: `company_` followed by 1-18 ASCII digits without a leading zero
  (`company_962302`); 18 digits keep every id inside a PostgreSQL `bigint`;
- accepted on input: the canonical form, the bare number (`962302`, also as a Python `int`)
  and either of them with surrounding whitespace;
- rejected, with a message naming the expected form: empty, letters, a bare `company_`,
  negative numbers, more than 18 digits, non-ASCII digits (`٩٦٢`) and leading zeros.
  Leading zeros are rejected rather than stripped: `0962302` and `962302` may be two
  different records in a legacy table, and silently merging them would hide that.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import BeforeValidator

PREFIX: Final = "company_"
MAX_DIGITS: Final = 18
_DIGITS: Final = rf"[1-9][0-9]{{0,{MAX_DIGITS - 1}}}"
COMPANY_ID_PATTERN: Final = rf"^{PREFIX}{_DIGITS}$"
"""Regular expression of the canonical form (also valid as a POSIX/ECMA/RE2 pattern)."""

_INPUT = re.compile(rf"(?:{PREFIX})?({_DIGITS})", re.ASCII)
EXPECTED: Final = (
    f"expected a company id like 'company_962302' or '962302' "
    f"(1-{MAX_DIGITS} ASCII digits, no leading zero)"
)


class InvalidCompanyId(ValueError):
    """The value is not a company id in any accepted form."""

    def __init__(self, value: object, why: str) -> None:
        self.value = value
        self.why = why
        super().__init__(f"invalid company id {_preview(value)}: {why}; {EXPECTED}")


def canonical_company_id(value: str | int) -> str:
    """Return the canonical `company_<digits>` form of `value`, or raise `InvalidCompanyId`."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidCompanyId(value, f"must be a string or an integer, not {type(value).__name__}")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidCompanyId(value, "must be a positive number")
        value = str(value)
    text = value.strip()
    match = _INPUT.fullmatch(text)
    if match is None:
        raise InvalidCompanyId(value, _why(text))
    return PREFIX + match.group(1)


def company_number(company_id: str | int) -> int:
    """The numeric part of a company id (accepts every input form)."""
    return int(canonical_company_id(company_id).removeprefix(PREFIX))


def is_canonical(value: str) -> bool:
    """True if `value` is already exactly canonical (no whitespace, prefix present)."""
    return re.fullmatch(COMPANY_ID_PATTERN, value, re.ASCII) is not None


def resource_name(company_id: str | int) -> str:
    """The SalonSession resource name for a company: `company_962302` -> `company-962302`.

    Kubernetes names cannot contain `_`; the CRD enforces this derivation, so there is at
    most one SalonSession per company in a namespace.
    """
    return canonical_company_id(company_id).replace("_", "-")


def _why(text: str) -> str:
    digits = text.removeprefix(PREFIX)
    if not text:
        return "it is empty"
    if not digits:
        return "the number after 'company_' is missing"
    if digits.startswith("-"):
        return "negative numbers are not company ids"
    if any(c.isdigit() and not c.isascii() for c in digits):
        return "only ASCII digits 0-9 are allowed"
    if not digits.isascii() or not digits.isdigit():
        return "it contains characters other than digits after the optional 'company_' prefix"
    if digits.startswith("0"):
        return "leading zeros are not allowed"
    return f"more than {MAX_DIGITS} digits"


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


CompanyId = Annotated[str, BeforeValidator(canonical_company_id)]
"""A pydantic field type: accepts every input form, stores the canonical one."""
