"""Shared fixtures: one real PostgreSQL, Redis and Kubernetes cluster (control plane and a
real node, `devstack.node`) per pytest run, torn down at the end even on failure, and the
host checked to be as the node found it; a fresh namespace and a fresh database per test
that asks for one.

Unit tests that request none of these fixtures start nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from devstack import node as devstack_node
from devstack import stack as devstack_stack
from devstack.pgbouncer import PgBouncer, pgbouncer
from devstack.stack import StackInfo
from tests.helpers import restore_session_users

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    """The whole local stack: PostgreSQL, Redis, etcd, kube-apiserver, controller-manager,
    scheduler and the node. After it stops, what the node changed on the host (iptables,
    ipsets, sysctls, mounts, links, cgroups, directories) must be back as it was: a
    difference fails the teardown of the last test that used it."""
    state_dir = Path(tempfile.mkdtemp(prefix="salon-test-stack-"))
    before = devstack_node.host_state()
    try:
        info = devstack_stack.start(state_dir)
        yield info
    finally:
        devstack_stack.stop(state_dir)
        changes = devstack_node.host_changes(before, devstack_node.host_state())
        if os.environ.get("SALON_KEEP_TEST_STATE"):
            print(f"test stack state kept in {state_dir}")
        else:
            keep = ARTIFACTS / "stack-logs"
            if (state_dir / "logs").exists():
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(state_dir / "logs", keep)
            shutil.rmtree(state_dir, ignore_errors=True)
    assert not changes, "the node left the host changed:\n" + "\n".join(changes)


@pytest.fixture(scope="session")
def redis_url(stack: StackInfo) -> str:
    return stack.redis_url


@pytest.fixture(scope="session")
def postgres_dsn(stack: StackInfo) -> str:
    """DSN of the stack's main database (shared; prefer `database` for tests with state)."""
    return stack.postgres_dsn


@contextmanager
def fresh_database(stack: StackInfo, prefix: str = "t") -> Iterator[str]:
    """Create an empty database, yield its DSN, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    base, _, _ = stack.postgres_dsn.rpartition("/")
    _psql(stack, f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        _psql(stack, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database(stack: StackInfo) -> Iterator[str]:
    """A fresh, empty database for this test; dropped afterwards. Yields its DSN."""
    with fresh_database(stack) as dsn:
        yield dsn


def _psql(stack: StackInfo, sql: str) -> None:
    dsn = stack.postgres_dsn
    subprocess.run([devstack_stack.pg_bin("psql"), dsn, "-v", "ON_ERROR_STOP=1", "-qc", sql],
                   check=True, capture_output=True)


@pytest.fixture
def pooler(stack: StackInfo) -> Iterator[PgBouncer]:
    """A private PgBouncer in transaction mode in front of the stack's PostgreSQL
    (`devstack.pgbouncer`); `pooler.url(dsn)` is `dsn` through it."""
    with pgbouncer(stack.postgres_dsn) as pg:
        yield pg


@pytest.fixture
def namespace(stack: StackInfo) -> Iterator[str]:
    """A fresh namespace for this test (with its default ServiceAccount); deleted after."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    stack.kubectl("create", "namespace", name)
    # Pods are refused until the ServiceAccount controller has made `default`.
    stack.kubectl("wait", "--for=create", "serviceaccount/default",
                  "-n", name, "--timeout=60s", check=False)
    try:
        yield name
    finally:
        stack.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def restart_redis(stack: StackInfo) -> object:
    """Call it to stop and restart the stack's Redis on the same port and password. The
    session users the tests created are created again, as the operator would (Redis keeps
    the users of its configuration only)."""
    def restart() -> None:
        devstack_stack.restart_redis(stack)
        restore_session_users()

    return restart


@pytest.fixture
def postgres_outage(stack: StackInfo) -> Iterator[Callable[[], AbstractContextManager[None]]]:
    """`with postgres_outage(): ...` stops the stack's PostgreSQL (fast shutdown, clients
    cut off) for the block and starts it again on the same port and data after it; a test
    that fails inside the block still gets it back."""
    down: list[bool] = []

    @contextmanager
    def outage() -> Iterator[None]:
        devstack_stack.stop_postgres(stack)
        down.append(True)
        try:
            yield
        finally:
            devstack_stack.start_postgres_again(stack)
            down.pop()

    try:
        yield outage
    finally:
        if down:  # never leave the rest of the run without its database
            devstack_stack.start_postgres_again(stack)
