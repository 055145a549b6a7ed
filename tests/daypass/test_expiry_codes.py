"""Pure parts: when a pass expires (across daylight-saving changes) and how codes, ids and links relate."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from rolegate.config.sections.features import DaypassConfig, DaypassTemplate, parse_rate
from rolegate.identity.daypass import codes
from rolegate.identity.daypass.expiry import end_of_local_day, pass_expiry


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def template(**kw) -> DaypassTemplate:
    return DaypassTemplate.model_validate(
        {"role": "subcontractor", "scopes": ["building"], "timezone": "Europe/Amsterdam", **kw}
    )


def test_end_of_day_on_an_ordinary_day() -> None:
    # 10:00 CET (09:00Z) on Tue 4 Mar 2025 -> midnight CET = 23:00Z.
    assert end_of_local_day(utc(2025, 3, 4, 9, 0), "Europe/Amsterdam") == utc(2025, 3, 4, 23, 0)


def test_end_of_day_on_the_23_hour_day_in_march() -> None:
    # Sun 30 Mar 2025: clocks go 02:00 CET -> 03:00 CEST. Issued 00:30 CET (23:30Z the day before):
    # the day ends at 00:00 CEST on 31 Mar = 22:00Z, 22.5 hours later (not 23.5).
    issued = utc(2025, 3, 29, 23, 30)
    assert end_of_local_day(issued, "Europe/Amsterdam") == utc(2025, 3, 30, 22, 0)
    assert pass_expiry(template(), issued) == utc(2025, 3, 30, 22, 0)


def test_end_of_day_on_the_25_hour_day_in_october() -> None:
    # Sun 26 Oct 2025: 03:00 CEST -> 02:00 CET. Issued 00:30 CEST (22:30Z on the 25th): the day ends at
    # 00:00 CET on 27 Oct = 23:00Z on the 26th, 24.5 hours later.
    issued = utc(2025, 10, 25, 22, 30)
    assert end_of_local_day(issued, "Europe/Amsterdam") == utc(2025, 10, 26, 23, 0)
    # ... which max_lifetime 24h caps; a template allowing 26h gets the real end of the day.
    assert pass_expiry(template(max_lifetime="24h"), issued) == issued + 24 * 3600
    assert pass_expiry(template(max_lifetime="26h"), issued) == utc(2025, 10, 26, 23, 0)


def test_issued_just_before_midnight_ends_at_that_midnight() -> None:
    issued = utc(2025, 3, 4, 22, 59, 59)  # 23:59:59 CET
    assert pass_expiry(template(), issued) == utc(2025, 3, 4, 23, 0)


def test_duration_expiry_is_capped_by_max_lifetime() -> None:
    now = utc(2025, 6, 1, 8, 0)
    assert pass_expiry(template(expires="8h"), now) == now + 8 * 3600
    assert pass_expiry(template(expires="8h", max_lifetime="2h"), now) == now + 2 * 3600


@pytest.mark.parametrize(
    "bad",
    [
        {"timezone": "Mars/Olympus"},
        {"expires": "tomorrow"},
        {"max_lifetime": "90d"},
        {"scopes": []},
        {"landing": "https://evil.example/"},
        {"landing": "//evil"},
        {"devices": 0},
        {"unknown": 1},
    ],
)
def test_template_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        template(**bad)


def test_redeem_rate() -> None:
    assert parse_rate("10/min") == (10, 60.0)
    assert parse_rate("3/10m") == (3, 600.0)
    with pytest.raises(ValueError):
        DaypassConfig.model_validate({"templates": {"t": {"role": "r", "scopes": ["b"]}}, "redeem_rate": "lots"})


def test_codes_ids_and_links() -> None:
    code = codes.new_code()
    assert codes.well_formed(code) and len(code) == 43  # 256 bits
    pass_id = codes.pass_id_of(code)
    assert codes.is_pass_id(pass_id)
    # The stored hash and the id are different one-way functions of the code.
    assert codes.code_hash(code)[:16] != pass_id
    assert codes.code_matches(code, codes.code_hash(code))
    assert not codes.code_matches(codes.new_code(), codes.code_hash(code))
    link = codes.link_for("https://safety.example.com/", code)
    assert link == f"https://safety.example.com/.rolegate/pass/{code}"
    assert codes.code_from_link(link) == code
    assert codes.pass_id_from(link) == pass_id
    assert codes.pass_id_from(pass_id) == pass_id
    assert codes.pass_id_from("https://safety.example.com/.rolegate/pass/short") is None


def test_midnight_is_shown_as_the_end_of_the_day_it_closes() -> None:
    from rolegate.identity.daypass.expiry import format_local

    assert format_local(utc(2025, 3, 30, 22, 0), "Europe/Amsterdam") == "Sun 30 Mar 2025, 24:00 (Europe/Amsterdam)"
    assert format_local(utc(2025, 3, 30, 16, 0), "Europe/Amsterdam") == "Sun 30 Mar 2025, 18:00 (Europe/Amsterdam)"
