"""Bounds on what a worker claims about order and time: one rule for events and state hashes.

Consumers order a session's facts by `seq` (microseconds since the epoch, `SeqCounter`)
and compare timestamps. A fact numbered or dated in the future wins every later
comparison: one forged `seq` near 2**63, or a `connected` dated minutes ahead, would
freeze the status (every real fact refused as stale) or show a phone as linked that never
was. And a `seq` outside int64 cannot even be written to `.status.lastEventSeq` (the API
server answers 422 to every later patch). So every consumer — the operator's events
consumer and heartbeat reconciler, the API's WebSocket fan-out and its state reads, the
terminal QR — applies this one rule:

- `seq` is an integer in `[0, SEQ_MAX]` (int64, PostgreSQL `bigint`, Kubernetes' integers);
- `seq`, read as microseconds, and every timestamp that says when something *happened*
  are at most `max_skew_s` ahead of the consumer's clock (`DEFAULT_MAX_SKEW_S` unless
  configured). Timestamps of the future by nature (a pairing code's expiry) are not
  judged by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

SEQ_MAX: Final = 2**63 - 1
DEFAULT_MAX_SKEW_S: Final = 30.0
MAX_SEQ_DIGITS: Final = len(str(SEQ_MAX))
STATE_TIME_FIELDS: Final = ("updated_at", "heartbeat_at", "last_connected_at")
"""The state hash's timestamps of things that happened (bounded by the horizon)."""


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 / ISO 8601 timestamp (naive ones are UTC); None when unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_seq(text: str) -> int | None:
    """A `seq` from its text form (a state hash field): ASCII digits within int64, else
    None."""
    if not text or len(text) > MAX_SEQ_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= SEQ_MAX else None


def seq_in_range(value: int) -> bool:
    return 0 <= value <= SEQ_MAX


@dataclass(frozen=True, slots=True)
class Horizon:
    """How far ahead of the consumer's clock a fact may be (clock skew between pods)."""

    max_skew_s: float = DEFAULT_MAX_SKEW_S

    def ahead(self, seq: int | None = None, times: Iterable[datetime | None] = (),
              now: datetime | None = None) -> bool:
        """True when `seq` (as microseconds) or any of `times` is beyond the horizon, or
        `seq` is outside int64."""
        now = now or datetime.now(UTC)
        limit = now + timedelta(seconds=self.max_skew_s)
        if seq is not None:
            if not seq_in_range(seq):
                return True
            if seq > (now.timestamp() + self.max_skew_s) * 1_000_000:
                return True
        return any(t is not None and t > limit for t in times)


def state_out_of_bounds(fields: Mapping[str, str], horizon: Horizon,
                        now: datetime | None = None) -> str | None:
    """Why a worker's state hash (`whatsapp:session:<company>`) breaks the rule: `"seq"`
    (not an int64), `"future"` (numbered or dated beyond the horizon); None when it is
    within bounds. A hash without `seq` is judged by its timestamps alone."""
    seq: int | None = None
    text = fields.get("seq", "")
    if text:
        seq = parse_seq(text)
        if seq is None:
            return "seq"
    times = (parse_time(fields.get(name)) for name in STATE_TIME_FIELDS)
    return "future" if horizon.ahead(seq, times, now) else None
