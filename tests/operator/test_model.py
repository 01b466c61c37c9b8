"""The status model: ordering by seq, heartbeats, conditions, phases (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from salon_sessions.core.bounds import Horizon
from salon_sessions.core.events import (
    SENDING_PAUSED,
    ConnectedData,
    DisconnectedData,
    ErrorData,
    EventSource,
    LinkedData,
    LinkExpiredData,
    LoggedOutData,
    PairingCodeData,
    PasskeyRequiredData,
    PasskeyStage,
    QrData,
)
from salon_sessions.core.resource import Phase
from salon_sessions.core.state_hash import StateHash, parse_state_hash
from salon_sessions.operator.model import Applied, SessionModel, status_patch

T0 = datetime(2025, 11, 25, 10, 0, tzinfo=UTC)
JID = "79686484488:12@s.whatsapp.net"


def beat(fields: dict[str, str]) -> StateHash:
    """A worker's state hash as the operator reads it from Redis."""
    state = parse_state_hash(fields, Horizon())
    assert state is not None
    return state


def started() -> SessionModel:
    model = SessionModel(generation=1)
    model.reconciled(1, suspended=False)
    model.refresh(T0)
    return model


def conds(model: SessionModel) -> dict[str, tuple[str, str]]:
    return {t: (c["status"], c["reason"]) for t, c in model.conditions.items()}


def test_phases_follow_the_workers_events() -> None:
    src = EventSource("company_1", "company-1")
    model = SessionModel(generation=1)
    model.refresh(T0)
    assert model.phase is Phase.PENDING
    model.reconciled(1, suspended=False)
    model.refresh(T0)
    assert model.phase is Phase.STARTING
    steps = [
        (QrData(code="q", timeout_s=20), Phase.AWAITING_LINK),
        (LinkedData(jid=JID, phone="79686484488"), Phase.STARTING),
        (ConnectedData(jid=JID), Phase.CONNECTED),
        (DisconnectedData(reason="net"), Phase.DISCONNECTED),
        (ConnectedData(jid=JID), Phase.CONNECTED),
        (LoggedOutData(reason="phone"), Phase.LOGGED_OUT),
    ]
    for data, phase in steps:
        assert model.apply_event(src.event(data), T0) is Applied.APPLIED
        model.refresh(T0)
        assert model.phase is phase, data
    assert (model.linked, model.connected, model.phone) == (False, False, None)
    assert conds(model)["Linked"] == ("False", "LoggedOut")
    assert [t.new for t in model.transitions] == [
        Phase.PENDING, Phase.STARTING, Phase.AWAITING_LINK, Phase.STARTING, Phase.CONNECTED,
        Phase.DISCONNECTED, Phase.CONNECTED, Phase.LOGGED_OUT]


def test_whatsapps_reasons_reach_the_conditions() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    for data in (LinkedData(jid=JID, phone="79686484488"), ConnectedData(jid=JID),
                 DisconnectedData(reason="temporary ban", will_reconnect=True),
                 ErrorData(code="temporary_ban", reason="sent_to_too_many_people",
                           message="WhatsApp banned this number temporarily until 11:00")):
        model.apply_event(src.event(data), T0)
    model.refresh(T0)
    assert conds(model)["Connected"] == ("False", "TemporaryBan")
    assert "until 11:00" in model.conditions["Connected"]["message"]
    model.apply_event(src.event(ConnectedData(jid=JID)), T0)
    model.refresh(T0)
    assert conds(model)["Connected"] == ("True", "Connected")
    model.apply_event(src.event(LoggedOutData(reason="banned", on_connect=True)), T0)
    model.refresh(T0)
    assert conds(model)["Linked"] == ("False", "Banned")
    assert "406" in model.conditions["Linked"]["message"]
    assert model.transitions[-1].reason == "Banned"  # the Warning Event's message says why
    assert conds(model)["Ready"] == ("False", "Banned")
    # the next login socket does not make the ban disappear from the status
    model.apply_event(src.event(QrData(code="q", timeout_s=60)), T0)
    model.refresh(T0)
    assert conds(model)["Linked"][1] == "Banned"


def test_a_passkey_request_shows_in_the_phase_and_the_linked_condition() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    model.apply_event(src.event(QrData(code="q", timeout_s=60)), T0)
    model.apply_event(src.event(PasskeyRequiredData(stage=PasskeyStage.REQUEST)), T0)
    model.refresh(T0)
    assert model.phase is Phase.PASSKEY_REQUIRED
    assert conds(model)["Linked"] == ("False", "PasskeyRequired")
    model.apply_event(src.event(QrData(code="q2", timeout_s=20)), T0)
    model.refresh(T0)
    assert model.phase is Phase.PASSKEY_REQUIRED  # QR rotation on the same login socket
    model.apply_event(src.event(DisconnectedData(reason="login ended", will_reconnect=True)),
                      T0)
    model.refresh(T0)
    assert model.phase is Phase.AWAITING_LINK
    assert conds(model)["Linked"] == ("False", "NotLinked")


def test_the_heartbeat_restates_a_logout_reason_and_refuses_free_text() -> None:
    model = started()
    fields = {"phase": "LoggedOut", "linked": "false", "connected": "false",
              "reason": "locked", "seq": "10", "updated_at": T0.isoformat()}
    assert model.apply_heartbeat(beat(fields), T0)
    model.refresh(T0)
    assert conds(model)["Linked"] == ("False", "Locked")
    forged = dict(fields, reason="Owned By Mallory", seq="11")
    assert model.apply_heartbeat(beat(forged), T0)
    model.refresh(T0)
    assert conds(model)["Linked"] == ("False", "LoggedOut")
    # the next login's QR codes: the hash still says why, and so does the status
    waiting = dict(fields, phase="AwaitingLink", reason="banned", seq="12")
    assert model.apply_heartbeat(beat(waiting), T0)
    model.refresh(T0)
    assert conds(model)["Linked"] == ("False", "Banned")
    linked = dict(waiting, phase="Starting", linked="true", reason="", seq="13")
    assert model.apply_heartbeat(beat(linked), T0)
    model.refresh(T0)
    assert conds(model)["Linked"] == ("True", "Linked")


def test_late_and_duplicate_events_never_move_the_status_backwards() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    disconnected = src.event(DisconnectedData(reason="old"))
    linked = src.event(LinkedData(jid=JID, phone="79686484488"))
    connected = src.event(ConnectedData(jid=JID))
    assert model.apply_event(linked, T0) is Applied.APPLIED
    assert model.apply_event(connected, T0) is Applied.APPLIED
    assert model.apply_event(connected, T0) is Applied.DUPLICATE
    assert model.apply_event(disconnected, T0) is Applied.STALE
    model.refresh(T0)
    assert (model.phase, model.connected, model.last_event_seq) == (
        Phase.CONNECTED, True, connected.seq)


def test_qr_rotation_keeps_a_pending_pairing_code() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    expires = datetime.now(UTC) + timedelta(minutes=3)
    model.apply_event(src.event(PairingCodeData(code="ABCD1234", phone="79686484488",
                                                expires_at=expires)), T0)
    model.apply_event(src.event(QrData(code="q2", timeout_s=20)), T0)
    model.refresh(T0)
    assert model.phase is Phase.PAIRING_CODE_ISSUED


def test_heartbeat_hash_applies_only_when_newer_and_expiry_means_not_connected() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    event = src.event(ConnectedData(jid=JID))
    model.apply_event(event, T0)
    older = {"phase": "AwaitingLink", "linked": "false", "connected": "false",
             "updated_at": (event.ts - timedelta(seconds=5)).isoformat()}
    assert model.apply_heartbeat(beat(older), T0) is False
    model.refresh(T0)
    assert model.phase is Phase.CONNECTED
    newer = {"phase": "Disconnected", "linked": "true", "connected": "false",
             "phone": "79686484488", "updated_at": (event.ts + timedelta(seconds=5)).isoformat()}
    assert model.apply_heartbeat(beat(newer), T0) is True
    model.refresh(T0)
    assert (model.phase, model.linked, model.connected) == (Phase.DISCONNECTED, True, False)
    model.apply_heartbeat(beat({**newer, "connected": "true", "phase": "Connected",
                           "updated_at": (event.ts + timedelta(seconds=9)).isoformat()}), T0)
    model.lose_heartbeat("no heartbeat for 30s", T0)
    model.refresh(T0)
    assert model.connected is False
    assert conds(model)["Connected"] == ("False", "HeartbeatLost")
    assert conds(model)["WorkerHealthy"] == ("False", "HeartbeatLost")
    assert model.render("p-0")["connected"] is False
    assert [w.reason for w in model.warnings] == ["HeartbeatLost"]
    model.lose_heartbeat("still nothing", T0)  # one Event per loss, not per check
    assert len(model.warnings) == 1


def test_worker_troubles_are_condition_reasons_and_warnings() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    model.apply_event(src.event(ConnectedData(jid=JID)), T0)
    model.set_health(True, "", T0)
    model.apply_event(src.event(ErrorData(code="lock_lost", message="lock connection gone")),
                      T0)
    model.refresh(T0)
    assert conds(model)["WorkerHealthy"] == ("False", "LockLost")
    assert model.conditions["WorkerHealthy"]["message"] == "lock connection gone"
    assert conds(model)["Ready"] == ("False", "WorkerUnhealthy")
    reloaded = SessionModel.from_status(model.render("p-0"), 1, suspended=False)
    reloaded.refresh(T0)
    assert conds(reloaded)["WorkerHealthy"] == ("False", "LockLost")
    model.apply_event(src.event(ConnectedData(jid=JID)), T0)  # needs the lock again
    model.refresh(T0)
    assert conds(model)["WorkerHealthy"] == ("True", "PongReceived")
    model.worker_restarted("the worker container restarted (1 restart)", T0)
    model.refresh(T0)
    assert conds(model)["WorkerHealthy"] == ("False", "WorkerRestarted")
    model.set_health(True, "", T0)  # the new process answers
    model.refresh(T0)
    assert conds(model)["WorkerHealthy"] == ("True", "PongReceived")
    model.set_health(False, "3 consecutive health pings unanswered", T0)
    model.set_health(False, "4 consecutive health pings unanswered", T0)
    model.refresh(T0)
    assert conds(model)["WorkerHealthy"] == ("False", "PongsMissed")
    assert [w.reason for w in model.warnings] == ["LockLost", "WorkerRestarted",
                                                  "PongsMissed"]


def test_a_restart_after_a_lost_heartbeat_is_reported_as_the_restart() -> None:
    # a killed worker restarted after a crash-loop backoff: its heartbeat expired first, then
    # the pod's restart count grew; WorkerHealthy names the restart until the new process
    # answers, Connected keeps saying HeartbeatLost until it reports
    src = EventSource("company_1", "company-1")
    model = started()
    model.apply_event(src.event(ConnectedData(jid=JID)), T0)
    model.set_health(True, "", T0)
    model.lose_heartbeat("the heartbeat expired", T0)
    model.refresh(T0)
    assert conds(model)["WorkerHealthy"] == ("False", "HeartbeatLost")
    model.worker_restarted("the worker container restarted (2 restarts)", T0)
    model.refresh(T0)
    assert conds(model)["WorkerHealthy"] == ("False", "WorkerRestarted")
    assert conds(model)["Connected"] == ("False", "HeartbeatLost")
    model.set_health(True, "", T0)
    model.refresh(T0)
    assert conds(model)["WorkerHealthy"] == ("False", "HeartbeatLost")
    model.apply_event(src.event(ConnectedData(jid=JID)), T0)
    model.refresh(T0)
    assert conds(model)["WorkerHealthy"] == ("True", "PongReceived")


def test_a_written_seq_beyond_the_horizon_is_not_trusted_on_reload() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    forged = {**model.render("p-0"), "lastEventSeq": 2**63 - 1}
    reloaded = SessionModel.from_status(forged, 1, suspended=False)
    assert reloaded.last_event_seq == 0
    assert reloaded.apply_event(src.event(ConnectedData(jid=JID)), T0) is Applied.APPLIED
    fine = {**model.render("p-0"), "lastEventSeq": 5}
    assert SessionModel.from_status(fine, 1, suspended=False).last_event_seq == 5


def test_conditions_keep_transition_times_and_carry_the_generation() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    first = model.conditions["Connected"]["lastTransitionTime"]
    later = T0 + timedelta(minutes=1)
    model.apply_event(src.event(QrData(code="q", timeout_s=20)), later)
    model.refresh(later)
    assert model.conditions["Connected"]["lastTransitionTime"] == first  # still False
    model.apply_event(src.event(ConnectedData(jid=JID)), later)
    model.refresh(later)
    assert model.conditions["Connected"]["lastTransitionTime"] == "2025-11-25T10:01:00Z"
    assert {c["observedGeneration"] for c in model.conditions.values()} == {1}
    model.set_health(True, "")
    model.refresh(later)
    assert conds(model)["Ready"] == ("True", "SessionReady")
    model.set_health(False, "3 consecutive health pings unanswered")
    model.refresh(later)
    assert conds(model)["WorkerHealthy"] == ("False", "PongsMissed")
    assert conds(model)["Ready"] == ("False", "WorkerUnhealthy")


def test_suspend_fatal_errors_and_cleanup_failures() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    model.apply_event(src.event(ErrorData(code="boom", message="bad", fatal=True)), T0)
    model.refresh(T0)
    assert model.phase is Phase.FAILED
    model.apply_event(src.event(ConnectedData(jid=JID)), T0)
    model.reconciled(2, suspended=True)
    model.refresh(T0)
    assert model.phase is Phase.SUSPENDED
    assert model.connected is False  # never a stale true while suspended
    assert conds(model)["WorkerHealthy"] == ("Unknown", "Suspended")
    assert "podName" not in model.render("p-0")
    model.reconciled(3, suspended=False)
    model.refresh(T0)
    assert model.phase is Phase.STARTING  # what the worker said before is history
    model.cleanup_failed("database unreachable")
    model.refresh(T0)
    assert model.phase is Phase.FAILED
    assert conds(model)["Ready"] == ("False", "CleanupFailed")


def test_reload_from_a_written_status_and_patches() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    model.apply_event(src.event(LinkedData(jid=JID, phone="79686484488")), T0)
    model.apply_event(src.event(ConnectedData(jid=JID)), T0)
    model.refresh(T0)
    written = model.render("company-1-0")
    again = SessionModel.from_status(written, 1, suspended=False)
    again.refresh(T0 + timedelta(hours=1))
    assert again.render("company-1-0") == written  # nothing to patch after a restart
    assert again.transitions == []
    patch, urgent = status_patch(written, {**written, "lastEventSeq": 5})
    assert (patch, urgent) == ({"lastEventSeq": 5}, False)
    smaller = {k: v for k, v in written.items() if k != "phone"}
    assert status_patch(written, smaller) == ({"phone": None}, True)


def test_a_duplicate_runs_nothing_says_who_owns_the_company_and_survives_a_reload() -> None:
    src = EventSource("company_1", "company-1-copy")
    model = started()
    model.apply_event(src.event(ConnectedData(jid=JID)), T0)
    model.hold_as_duplicate("salons/company-1", generation=2)
    model.refresh(T0)
    assert model.phase is Phase.FAILED
    assert model.transitions[-1].reason == "DuplicateCompany"
    assert set(conds(model).values()) <= {("Unknown", "DuplicateCompany"),
                                          ("False", "DuplicateCompany")}
    assert conds(model)["Ready"] == ("False", "DuplicateCompany")
    assert "salons/company-1" in model.conditions["Ready"]["message"]
    written = model.render("company-1-copy-0")
    assert written["connected"] is False
    assert "podName" not in written
    assert "linked" not in written
    assert written["observedGeneration"] == 2

    again = SessionModel.from_status(written, 2, suspended=False)
    assert again.duplicate_of == "salons/company-1"
    assert again.applied is False  # no heartbeat or ping is expected from it
    again.refresh(T0)
    assert again.render("company-1-copy-0") == written
    assert again.transitions == []

    again.release_duplicate()  # the owner went away: this one takes over
    again.reconciled(2, suspended=False)
    again.refresh(T0)
    assert again.phase is Phase.STARTING
    assert conds(again)["Ready"][1] != "DuplicateCompany"


def test_a_paused_sender_is_a_warning_and_leaves_the_connection_alone() -> None:
    model = started()
    src = EventSource("company_1001", "company-1001")
    model.apply_event(src.event(ConnectedData()), T0)
    model.refresh(T0)
    model.warnings.clear()
    until = T0 + timedelta(hours=1)
    model.apply_event(src.event(ErrorData(
        code=SENDING_PAUSED, reason="rate_limited", retry_at=until, will_retry=True,
        message="WhatsApp refused a send (rate_limited); no message is sent until 11:00")), T0)
    model.refresh(T0)
    assert [(w.reason, w.message) for w in model.warnings] == [
        ("SendingPaused",
         "WhatsApp refused a send (rate_limited); no message is sent until 11:00")]
    assert conds(model)["Connected"][0] == "True"  # still connected: only sending waits


def test_an_onboarding_that_ends_shows_link_expired_until_renewed() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    ends = T0 + timedelta(minutes=30)
    model.apply_event(src.event(QrData(code="q", timeout_s=60, link_expires_at=ends)), T0)
    model.refresh(T0)
    assert model.phase is Phase.AWAITING_LINK
    assert model.render("company-1-0")["linkExpiresAt"] == "2025-11-25T10:30:00Z"

    model.apply_event(src.event(LinkExpiredData(expire_after_s=1800)), ends)
    model.refresh(ends)
    assert model.phase is Phase.LINK_EXPIRED
    assert model.transitions[-1].reason == "LinkExpired"
    assert conds(model)["Linked"] == ("False", "LinkExpired")
    assert "10:30:00Z" in model.conditions["Linked"]["message"]
    assert conds(model)["Ready"] == ("False", "LinkExpired")
    assert conds(model)["Connected"] == ("False", "NotLinked")
    status = model.render("company-1-0")
    assert (status["phase"], status["linked"], status["linkExpiresAt"]) == (
        "LinkExpired", False, "2025-11-25T10:30:00Z")

    # an operator restart keeps it (rebuilt from the written status)
    again = SessionModel.from_status(status, generation=1, suspended=False)
    again.refresh(ends)
    assert again.phase is Phase.LINK_EXPIRED
    assert again.render("company-1-0")["linkExpiresAt"] == "2025-11-25T10:30:00Z"

    # renewed: the worker's hash says Starting with the new end, then QR codes come again
    later = ends + timedelta(minutes=5)
    assert model.apply_heartbeat(beat({"phase": "Starting", "linked": "false",
                                  "connected": "false", "seq": str(src.next_seq()),
                                  "link_expires_at": (later + timedelta(minutes=30))
                                  .isoformat(), "updated_at": later.isoformat()}), later)
    model.refresh(later)
    assert model.phase is Phase.STARTING
    assert conds(model)["Linked"] == ("False", "NotLinked")
    model.apply_event(src.event(QrData(code="q2", timeout_s=60,
                                       link_expires_at=later + timedelta(minutes=30))), later)
    model.refresh(later)
    assert model.phase is Phase.AWAITING_LINK
    assert model.render("company-1-0")["linkExpiresAt"] == "2025-11-25T11:05:00Z"

    # a link ends the onboarding: no expiry shown any more
    model.apply_event(src.event(LinkedData(jid=JID, phone="79686484488")), later)
    model.apply_event(src.event(ConnectedData(jid=JID)), later)
    model.refresh(later)
    assert model.phase is Phase.CONNECTED
    assert "linkExpiresAt" not in model.render("company-1-0")


def test_link_expired_from_a_heartbeat_and_never_for_a_linked_session() -> None:
    src = EventSource("company_1", "company-1")
    model = started()
    assert model.apply_heartbeat(beat({"phase": "LinkExpired", "linked": "false",
                                  "connected": "false", "seq": str(src.next_seq()),
                                  "link_expires_at": T0.isoformat(),
                                  "reason": "banned", "updated_at": T0.isoformat()}), T0)
    model.refresh(T0)
    assert model.phase is Phase.LINK_EXPIRED
    # a device logged out (banned) earlier, then the new onboarding ended: the phase's
    # reason comes first
    assert conds(model)["Linked"] == ("False", "LinkExpired")

    linked = started()
    linked.apply_event(src.event(LinkedData(jid=JID, phone="79686484488")), T0)
    linked.apply_event(src.event(LinkExpiredData(expire_after_s=60)), T0)  # a late one
    linked.refresh(T0)
    assert linked.phase is Phase.STARTING
    assert conds(linked)["Linked"] == ("True", "Linked")
