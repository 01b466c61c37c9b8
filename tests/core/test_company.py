from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from salon_sessions.core.company import (
    COMPANY_ID_PATTERN,
    CompanyId,
    InvalidCompanyId,
    canonical_company_id,
    company_number,
    is_canonical,
    resource_name,
)

numbers = st.integers(min_value=1, max_value=10**18 - 1)


@pytest.mark.parametrize(("raw", "expected"), [
    ("962302", "company_962302"),
    ("company_962302", "company_962302"),
    ("  962302\n", "company_962302"),
    ("\tcompany_962302 ", "company_962302"),
    (962302, "company_962302"),
    ("1", "company_1"),
    ("9" * 18, "company_" + "9" * 18),
])
def test_accepts_legacy_and_canonical_forms(raw: str | int, expected: str) -> None:
    assert canonical_company_id(raw) == expected


@pytest.mark.parametrize(("raw", "why"), [
    ("", "empty"),
    ("   ", "empty"),
    ("abc", "other than digits"),
    ("company_abc", "other than digits"),
    ("962302a", "other than digits"),
    ("company_", "missing"),
    ("-962302", "negative"),
    ("company_-5", "negative"),
    (-5, "positive"),
    (0, "positive"),
    ("1" * 19, "more than 18 digits"),
    ("company_" + "1" * 19, "more than 18 digits"),
    ("٩٦٢٣٠٢", "ASCII"),  # Arabic-Indic digits
    ("\uff19\uff16\uff12\uff13\uff10\uff12", "ASCII"),  # fullwidth digits
    ("0962302", "leading zeros"),
    ("company_0", "leading zeros"),
    ("Company_962302", "other than digits"),
    ("company-962302", "other than digits"),
    ("company_96 2302", "other than digits"),
    ("company__962302", "other than digits"),
    ("+962302", "other than digits"),
    (True, "string or an integer"),
    (3.0, "string or an integer"),
])
def test_rejects_everything_else_saying_what_is_expected(raw: object, why: str) -> None:
    with pytest.raises(InvalidCompanyId) as caught:
        canonical_company_id(raw)  # type: ignore[arg-type]
    message = str(caught.value)
    assert why in message
    assert "expected a company id like 'company_962302' or '962302'" in message


@given(numbers)
def test_round_trips_through_every_input_form(n: int) -> None:
    canonical = f"company_{n}"
    for form in (n, str(n), canonical, f" {n} ", f"\t{canonical}\n"):
        assert canonical_company_id(form) == canonical
    assert company_number(canonical) == n
    assert is_canonical(canonical)
    assert re.fullmatch(COMPANY_ID_PATTERN, canonical)


@given(st.one_of(numbers, numbers.map(str), numbers.map(lambda n: f"company_{n}")))
def test_canonicalising_is_idempotent(raw: int | str) -> None:
    once = canonical_company_id(raw)
    assert canonical_company_id(once) == once


@given(st.text(max_size=30))
def test_arbitrary_text_is_canonicalised_only_when_it_is_an_accepted_form(text: str) -> None:
    accepted = re.fullmatch(r"(company_)?[1-9][0-9]{0,17}", text.strip(), re.ASCII)
    try:
        result = canonical_company_id(text)
    except InvalidCompanyId:
        assert accepted is None
    else:
        assert accepted is not None
        assert is_canonical(result)
        assert result.endswith(text.strip().removeprefix("company_"))


def test_not_canonical_until_normalised() -> None:
    assert not is_canonical("962302")
    assert not is_canonical(" company_962302")


def test_resource_name_is_a_kubernetes_name() -> None:
    assert resource_name("962302") == "company-962302"
    assert resource_name("company_5") == "company-5"


def test_pydantic_field_type_canonicalises_and_rejects() -> None:
    class M(BaseModel):
        company_id: CompanyId

    assert M(company_id=" 962302 ").company_id == "company_962302"
    with pytest.raises(ValidationError, match="expected a company id"):
        M(company_id="salon-1")
