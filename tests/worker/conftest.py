from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import SessionRedisUser, session_redis_user
from tests.worker.harness import WorkerProc, new_company

WorkerFactory = Callable[..., WorkerProc]


@pytest.fixture
def company() -> str:
    return new_company()


@pytest.fixture
def session_user(redis_url: str, company: str) -> Iterator[SessionRedisUser]:
    """The company's own Redis user, as the operator would create it for its pod."""
    with session_redis_user(redis_url, company) as user:
        yield user


@pytest.fixture
async def workers(tmp_path: Path, database: str, session_user: SessionRedisUser,
                  company: str) -> AsyncIterator[WorkerFactory]:
    """Start worker processes for this test's company and database, each with the company's
    own Redis user (the tests observe with the default user); all stopped after."""
    started: list[WorkerProc] = []

    def start(name: str = "w0", **kwargs: object) -> WorkerProc:
        w = WorkerProc(tmp_path, database, session_user.url, company, name=name, **kwargs)  # type: ignore[arg-type]
        started.append(w.start())
        return w

    yield start
    for w in started:
        await w.stop()
