from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.worker.harness import WorkerProc, new_company

WorkerFactory = Callable[..., WorkerProc]


@pytest.fixture
def company() -> str:
    return new_company()


@pytest.fixture
async def workers(tmp_path: Path, database: str, redis_url: str,
                  company: str) -> AsyncIterator[WorkerFactory]:
    """Start worker processes for this test's company and database; all stopped after."""
    started: list[WorkerProc] = []

    def start(name: str = "w0", **kwargs: object) -> WorkerProc:
        w = WorkerProc(tmp_path, database, redis_url, company, name=name, **kwargs)  # type: ignore[arg-type]
        started.append(w.start())
        return w

    yield start
    for w in started:
        await w.stop()
