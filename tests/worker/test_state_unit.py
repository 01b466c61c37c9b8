"""SessionState: the linked/connected rules and the pairing-code rules, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from salon_sessions.core import control
from salon_sessions.core.events import (
    ConnectedData,
    DisconnectedData,
    ErrorData,
    LinkedData,
    LinkExpiredData,
    LoggedOutData,
    PairingCodeData,
    PasskeyRequiredData,
    PasskeyStage,
    QrData,
)
from salon_sessions.core.resource import Phase
from salon_sessions.worker.driver import (
    Connected,
    ConnectFailure,
    Disconnected,
    IssuedCode,
    LoggedOut,
    PairSuccess,
    PasskeyRequired,
    QrCode,
    StreamReplaced,
    TemporaryBan,
)
from salon_sessions.worker.state import RefusedError, SessionState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_qr_and_code_never_link_or_connect() -> None:
    s = SessionState()
    out = s.apply(QrCode("2@abc", 20), T0)
    assert out == [QrData(code="2@abc", timeout_s=20)]
    assert (s.phase, s.linked, s.connected) == (Phase.AWAITING_LINK, False, False)
    out = s.code_issued("79686484488", IssuedCode("ABCD1234", T0 + timedelta(minutes=3)))
    assert isinstance(out[0], PairingCodeData)
    assert (s.phase, s.linked, s.connected) == (Phase.PAIRING_CODE_ISSUED, False, False)


def test_pair_success_links_and_connected_connects() -> None:
    s = SessionState()
    s.apply(QrCode("2@abc", 20), T0)
    out = s.apply(PairSuccess("79686484488:5@s.whatsapp.net", "79686484488"), T0)
    assert isinstance(out[0], LinkedData)
    assert out[0].method == "qr"
    assert (s.linked, s.connected) == (True, False)
    s.apply(Connected("79686484488:5@s.whatsapp.net"), T0)
    assert (s.phase, s.linked, s.connected) == (Phase.CONNECTED, True, True)
    out = s.apply(Disconnected("net"), T0)
    assert out == [DisconnectedData(reason="net", will_reconnect=True)]
    assert (s.phase, s.linked, s.connected) == (Phase.DISCONNECTED, True, False)


def test_pair_success_with_a_lid_jid_has_no_phone() -> None:
    s = SessionState()
    out = s.apply(PairSuccess("123456789012345:3@lid", None), T0)
    linked = out[0]
    assert isinstance(linked, LinkedData)
    assert linked.phone is None
    assert s.phone is None


def test_logout_clears_link() -> None:
    s = SessionState()
    s.resume_linked("79686484488:5@s.whatsapp.net", "79686484488")
    s.apply(Connected("79686484488:5@s.whatsapp.net"), T0)
    s.apply(LoggedOut("removed"), T0)
    assert (s.phase, s.linked, s.connected, s.phone, s.jid) == (
        Phase.LOGGED_OUT, False, False, None, None)
    s.apply(QrCode("2@new", 20), T0)
    assert s.phase is Phase.AWAITING_LINK


@pytest.mark.parametrize(("event", "code"), [
    (StreamReplaced(), "stream_replaced"),
    (TemporaryBan("101", T0 + timedelta(hours=1)), "temporary_ban"),
    (ConnectFailure("banned", "refused"), "connect_failure"),
])
def test_failures_disconnect_and_report_an_error(event: object, code: str) -> None:
    s = SessionState()
    s.resume_linked("79686484488:5@s.whatsapp.net", "79686484488")
    s.apply(Connected("79686484488:5@s.whatsapp.net"), T0)
    out = s.apply(event, T0)  # type: ignore[arg-type]
    assert any(isinstance(d, ErrorData) and d.code == code for d in out)
    assert (s.connected, s.linked, s.phase) == (False, True, Phase.DISCONNECTED)


@pytest.mark.parametrize(("reason", "kept"), [
    ("banned", "banned"), ("locked", "locked"), ("code_419", "code_419"),
    ("removed on the phone", "logged_out"),
])
def test_the_logout_reason_is_kept_until_the_next_link(reason: str, kept: str) -> None:
    s = SessionState()
    s.resume_linked("79686484488:5@s.whatsapp.net", "79686484488")
    out = s.apply(LoggedOut(reason, on_connect=True), T0)
    assert out == [LoggedOutData(reason=kept, on_connect=True)]
    s.apply(Disconnected("the QR codes expired", will_reconnect=True), T0)
    s.apply(QrCode("2@new", 20), T0)
    assert (s.reason, s.snapshot()["reason"]) == (kept, kept)
    s.apply(PairSuccess("79686484488:6@s.whatsapp.net", "79686484488"), T0)
    assert (s.reason, s.snapshot()["reason"]) == (None, "")


def test_a_ban_names_its_reason_and_when_it_ends() -> None:
    s = SessionState()
    s.resume_linked("79686484488:5@s.whatsapp.net", "79686484488")
    until = T0 + timedelta(hours=1)
    out = s.apply(TemporaryBan("code_107", until), T0)
    error = next(d for d in out if isinstance(d, ErrorData))
    assert (error.code, error.reason, error.retry_at) == ("temporary_ban", "code_107", until)
    assert out[0] == DisconnectedData(reason=f"temporary ban code_107 until {until.isoformat()}",
                                      will_reconnect=True)
    snap = s.snapshot()
    assert (snap["reason"], snap["will_retry"], snap["retry_at"]) == (
        "code_107", "true", until.isoformat())
    s.apply(Connected("79686484488:5@s.whatsapp.net"), T0 + timedelta(hours=1))
    assert s.reason is None


def test_a_passkey_request_is_its_own_phase_and_survives_qr_rotation() -> None:
    s = SessionState()
    s.apply(QrCode("2@one", 60), T0)
    out = s.apply(PasskeyRequired("request"), T0)
    assert out == [PasskeyRequiredData(stage=PasskeyStage.REQUEST)]
    assert (s.phase, s.reason, s.linked) == (Phase.PASSKEY_REQUIRED, "passkey_required", False)
    s.apply(QrCode("2@two", 20), T0)
    assert s.phase is Phase.PASSKEY_REQUIRED
    confirm = s.apply(PasskeyRequired("confirmation", "ABCD-EF12"), T0)
    assert confirm == [PasskeyRequiredData(stage=PasskeyStage.CONFIRMATION, code="ABCD-EF12")]
    assert (s.snapshot()["passkey_stage"], s.snapshot()["passkey_code"]) == (
        "confirmation", "ABCD-EF12")
    assert s.apply(PasskeyRequired("bogus"), T0) == []
    # the login socket closes: back to waiting for a link, the passkey is history
    s.apply(Disconnected("the QR codes expired", will_reconnect=True), T0)
    s.apply(QrCode("2@three", 60), T0)
    assert (s.phase, s.reason, s.passkey) == (Phase.AWAITING_LINK, None, None)


def test_a_linked_device_is_never_asked_for_a_passkey() -> None:
    s = SessionState()
    s.resume_linked("79686484488:5@s.whatsapp.net", "79686484488")
    assert s.apply(PasskeyRequired("request"), T0) == []
    assert s.phase is not Phase.PASSKEY_REQUIRED


def test_stream_replaced_says_whether_it_retries() -> None:
    s = SessionState()
    s.resume_linked("79686484488:5@s.whatsapp.net", "79686484488")
    once = s.apply(StreamReplaced(will_retry=True), T0)
    assert once[0] == DisconnectedData(reason="stream replaced by another client",
                                       will_reconnect=True)
    final = s.apply(StreamReplaced(will_retry=False), T0)
    assert final[0] == DisconnectedData(reason="stream replaced by another client",
                                        will_reconnect=False)
    assert "not reconnecting" in next(d for d in final if isinstance(d, ErrorData)).message
    assert next(d for d in final if isinstance(d, ErrorData)).will_retry is False
    assert s.snapshot()["will_retry"] == "false"


def test_pending_code_survives_qr_rotation_and_is_returned_again() -> None:
    s = SessionState()
    s.apply(QrCode("2@one", 20), T0)
    assert s.current_code("79686484488", T0) is None
    s.code_issued("79686484488", IssuedCode("ABCD1234", T0 + timedelta(minutes=3)))
    for i in range(5):
        s.apply(QrCode(f"2@rot{i}", 20), T0 + timedelta(seconds=20 * i))
    pending = s.current_code("79686484488", T0 + timedelta(minutes=2))
    assert pending is not None
    assert pending.code == "ABCD1234"
    assert s.phase is Phase.PAIRING_CODE_ISSUED
    with pytest.raises(RefusedError) as other:
        s.current_code("79001234567", T0 + timedelta(minutes=2))
    assert other.value.code == "pairing_code_pending"
    with pytest.raises(RefusedError):
        s.check_restart(force=False, now=T0 + timedelta(minutes=2))
    s.check_restart(force=True, now=T0 + timedelta(minutes=2))
    # expired: a new one may be issued
    assert s.current_code("79686484488", T0 + timedelta(minutes=4)) is None
    assert s.phase is Phase.AWAITING_LINK


def test_a_cancelled_code_lets_another_number_have_one_at_once() -> None:
    s = SessionState()
    s.apply(QrCode("2@one", 20), T0)
    assert s.cancel_code(T0) is None, "nothing pending: a no-op"
    s.code_issued("79686484488", IssuedCode("ABCD1234", T0 + timedelta(minutes=3)))
    assert s.snapshot()["pairing_code_phone"] == "79686484488"
    with pytest.raises(RefusedError):
        s.current_code("79001234567", T0 + timedelta(seconds=5))
    cancelled = s.cancel_code(T0 + timedelta(seconds=5))
    assert cancelled is not None
    assert cancelled.phone == "79686484488"
    assert s.phase is Phase.AWAITING_LINK
    snap = s.snapshot()
    assert (snap["pairing_code_pending"], snap["pairing_code_phone"]) == ("false", "")
    assert s.current_code("79001234567", T0 + timedelta(seconds=6)) is None
    assert s.cancel_code(T0 + timedelta(seconds=7)) is None, "idempotent"


def test_code_pair_success_records_method_and_phone() -> None:
    s = SessionState()
    s.code_issued("79686484488", IssuedCode("ABCD1234", T0 + timedelta(minutes=3)))
    out = s.apply(PairSuccess("79686484488:7@s.whatsapp.net", None), T0)
    linked = out[0]
    assert isinstance(linked, LinkedData)
    assert (linked.method, linked.phone) == ("pairingCode", "79686484488")
    with pytest.raises(RefusedError) as refused:
        s.current_code("79686484488", T0)
    assert refused.value.code == "already_linked"


def test_connected_restated_after_gap() -> None:
    s = SessionState()
    assert isinstance(s.status_event(), DisconnectedData)
    s.apply(Connected("79686484488:5@s.whatsapp.net"), T0)
    assert s.status_event() == ConnectedData(jid="79686484488:5@s.whatsapp.net")


@pytest.mark.parametrize(("raw", "code"), [
    (b"nope", "malformed"),
    (b'{"v":1,"id":"a","company_id":"company_5","cmd":"state"}', "wrong_company"),
    (b'{"v":1,"id":"a","company_id":"company_7","cmd":"rm"}', "invalid"),
    (b'{"v":1,"id":"a","company_id":"company_7","cmd":"pairing_code"}', "invalid"),
    (b'{"v":1,"id":"a b","company_id":"company_7","cmd":"state"}', "invalid"),
    (b"{" + b" " * 9000 + b"}", "oversized"),
])
def test_control_requests_are_validated(raw: bytes, code: str) -> None:
    with pytest.raises(control.ControlError) as err:
        control.parse_request(raw, "company_7")
    assert err.value.code == code


def test_control_request_accepts_legacy_company_id_and_human_phone() -> None:
    req = control.parse_request(
        b'{"v":1,"id":"a","company_id":"7","cmd":"pairing_code","phone":"+7 968 648-44-88"}',
        "company_7")
    assert req.company_id == "company_7"
    assert req.phone == "+7 968 648-44-88", "read by the worker with its default region"
    cancel = control.parse_request(
        b'{"v":1,"id":"b","company_id":"company_7","cmd":"cancel_pairing_code"}', "company_7")
    assert cancel.cmd == "cancel_pairing_code"


def test_an_onboarding_ends_without_a_link_and_resumes_when_renewed() -> None:
    s = SessionState()
    ends = T0 + timedelta(minutes=30)
    s.link_window(ends)
    out = s.apply(QrCode("2@abc", 60), T0)
    assert out == [QrData(code="2@abc", timeout_s=60, link_expires_at=ends)]
    # a code issued near the end ends with the onboarding, not 3 minutes later
    s.code_issued("79686484488", IssuedCode("ABCD1234", ends + timedelta(minutes=2)))
    assert s.snapshot()["pairing_code_expires_at"] == ends.isoformat()

    out = s.expire_link(1800, ends)
    assert out == [LinkExpiredData(expire_after_s=1800)]
    assert (s.phase, s.pending_code, s.last_qr) == (Phase.LINK_EXPIRED, None, None)
    assert s.expire_link(1800, ends) == []  # said once
    snap = s.snapshot()
    assert (snap["phase"], snap["link_expires_at"], snap["pairing_code_pending"]) == (
        "LinkExpired", ends.isoformat(), "false")
    with pytest.raises(RefusedError) as refused:
        s.current_code("79686484488")
    assert refused.value.code == "link_expired"
    assert s.apply(QrCode("2@late", 20), ends) == []  # a QR racing the stop is not shown
    s.apply(Disconnected("closing"), ends)
    assert s.phase is Phase.LINK_EXPIRED
    s.restarted()  # the driver closed: still expired
    assert s.phase is Phase.LINK_EXPIRED

    later = ends + timedelta(minutes=30)
    s.renew_link(later)
    assert (s.phase, s.link_expired, s.link_expires_at) == (Phase.STARTING, False, later)
    assert s.current_code("79686484488") is None  # codes may be asked for again
    out = s.apply(QrCode("2@new", 60), ends)
    assert out == [QrData(code="2@new", timeout_s=60, link_expires_at=later)]
    s.apply(PairSuccess("79686484488:5@s.whatsapp.net", "79686484488"), ends)
    assert (s.link_expires_at, s.snapshot()["link_expires_at"]) == (None, "")
    assert s.expire_link(1800, later) == []  # a linked session never expires
    with pytest.raises(RefusedError) as linked:
        s.renew_link(later)
    assert linked.value.code == "already_linked"


def test_a_race_lost_to_the_phone_links_anyway() -> None:
    """The phone scanned as the bound passed: the link is WhatsApp's fact and wins."""
    s = SessionState()
    s.link_window(T0)
    s.apply(QrCode("2@abc", 60), T0)
    s.expire_link(60, T0)
    out = s.apply(PairSuccess("79686484488:5@s.whatsapp.net", "79686484488"), T0)
    assert isinstance(out[0], LinkedData)
    assert (s.linked, s.link_expired, s.phase) == (True, False, Phase.STARTING)
    s.restarted()
    assert s.phase is Phase.STARTING


def test_control_accepts_renew_link() -> None:
    raw = b'{"v": 1, "id": "r1", "company_id": "company_962302", "cmd": "renew_link"}'
    assert control.parse_request(raw, "company_962302").cmd == "renew_link"
