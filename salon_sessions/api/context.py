"""Everything a request handler needs, built once per process by the app's lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
from redis.asyncio import Redis

from salon_sessions.api.auth import Authenticator
from salon_sessions.api.bus import Bus
from salon_sessions.api.fleet import Fleet
from salon_sessions.api.hub import Hub
from salon_sessions.api.kube import SessionResources
from salon_sessions.api.metrics import ApiMetrics
from salon_sessions.api.ratelimit import PairingRateLimit
from salon_sessions.api.ws_transport import Transport
from salon_sessions.core.settings import ApiSettings


@dataclass
class Context:
    settings: ApiSettings
    redis: Redis
    metrics: ApiMetrics
    auth: Authenticator
    kube: SessionResources | None
    hub: Hub
    bus: Bus
    rate: PairingRateLimit
    ws: Transport
    """Serves the WebSocket connections that the routes accept."""
    pg: asyncpg.Pool | None = None
    fleet: Fleet | None = None
    """Every session for the admin console (None without a Kubernetes API)."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
