"""A PgBouncer (Debian's `pgbouncer`, 1.18) in transaction mode in front of a PostgreSQL: what
docs/HELM.md recommends for many sessions, run locally for the tests that show the project
working behind it (tests/worker/test_pgbouncer.py).

The settings that matter (`pgbouncer_config`, explained in docs/HELM.md, "Behind PgBouncer"):

- `pool_mode = transaction`: a server connection is a client's only for one transaction.
  Session-level state (advisory locks, prepared statements, `SET`) does not survive, so the
  session lock and migrations go to PostgreSQL directly (`SALON_LOCK_DATABASE_URL`) and the
  processes turn asyncpg's statement cache off (`SALON_DATABASE_POOLER=transaction`).
- Authentication of the per-session roles (`db.tenancy`, SCRAM-SHA-256 verifiers): through
  `auth_user`/`auth_query` PgBouncer reads the role's verifier from PostgreSQL, checks the
  client with it and logs in to PostgreSQL with the client's SCRAM proof (pass-through; it
  needs the database entry without a `user=`). The `auth_user`'s own password is in
  `auth_file`.
- `ignore_startup_parameters = extra_float_digits`: lib/pq (whatsmeow's store, in the
  neonize driver) sends it and PgBouncer refuses unknown startup parameters.
- One pool per (role, database) pair, so per session: `min_pool_size = 0` and
  `server_idle_timeout` let an idle session's server connections go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from devstack.procs import free_port, spawn, stop_named, wait_until

BINARY = "/usr/sbin/pgbouncer"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class PgBouncer:
    host: str
    port: int
    pid: int
    state_dir: Path
    admin_user: str
    """May use the admin console (database `pgbouncer`: SHOW POOLS, SHOW SERVERS, ...)."""

    def url(self, database_url: str) -> str:
        """`database_url` (its user, password, database, options) through this PgBouncer."""
        parts = urlsplit(database_url)
        netloc = parts.netloc.rpartition("@")[0]
        return parts._replace(netloc=f"{netloc}@{self.host}:{self.port}").geturl()

    @property
    def log(self) -> Path:
        return self.state_dir / "logs" / f"pgbouncer-{self.port}.log"


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def pgbouncer_config(*, listen_host: str, listen_port: int, server_host: str,
                     server_port: int, auth_user: str, auth_file: Path,
                     pool_size: int = 2, server_idle_timeout_s: int = 30,
                     client_idle_timeout_s: int = 600, max_client_conn: int = 1000) -> str:
    """pgbouncer.ini for transaction pooling of every database of one PostgreSQL, with the
    per-session roles authenticated through `auth_user` (module docstring)."""
    return "\n".join([
        "[databases]",
        # no user= here: SCRAM pass-through logs in as the client's own role
        f"* = host={server_host} port={server_port}",
        "",
        "[pgbouncer]",
        f"listen_addr = {listen_host}",
        f"listen_port = {listen_port}",
        "unix_socket_dir =",
        "pool_mode = transaction",
        "auth_type = scram-sha-256",
        f"auth_file = {auth_file}",
        f"auth_user = {auth_user}",
        "auth_query = SELECT rolname, CASE WHEN rolvaliduntil < pg_catalog.now() THEN NULL "
        "ELSE rolpassword END FROM pg_authid WHERE rolname = $1 AND rolcanlogin",
        f"admin_users = {auth_user}",
        f"stats_users = {auth_user}",
        "ignore_startup_parameters = extra_float_digits",
        f"default_pool_size = {pool_size}",
        "min_pool_size = 0",
        "reserve_pool_size = 0",
        f"server_idle_timeout = {server_idle_timeout_s}",
        # the connections whatsmeow never closes (one per finished Go client, see
        # NeonizeStore.terminate_backends) end at PgBouncer: it closes them when idle
        f"client_idle_timeout = {client_idle_timeout_s}",
        "server_lifetime = 3600",
        f"max_client_conn = {max_client_conn}",
        "log_connections = 0",
        "log_disconnections = 0",
        "",
    ])


@contextmanager
def pgbouncer(postgres_dsn: str, *, name: str = "pgbouncer", pool_size: int = 2,
              server_idle_timeout_s: int = 30) -> Iterator[PgBouncer]:
    """A private PgBouncer on a free port of 127.0.0.1 in front of the PostgreSQL of
    `postgres_dsn`, whose role (a superuser or one allowed to read `pg_authid`) becomes the
    `auth_user`; its own config, auth file and log in a temporary directory; stopped (by its
    pid) afterwards. PgBouncer refuses to run as root: as root it runs as `postgres`."""
    if not Path(BINARY).exists():
        raise RuntimeError(f"{BINARY} is missing (scripts/bootstrap.sh installs pgbouncer)")
    dsn = urlsplit(postgres_dsn)
    if not dsn.username or dsn.password is None or not dsn.hostname:
        raise ValueError("the PostgreSQL DSN must name a host, a user and a password")
    as_root = os.geteuid() == 0
    state = Path(tempfile.mkdtemp(prefix="salon-pgbouncer-"))
    port = free_port()
    try:
        auth_file = state / "userlist.txt"
        auth_user = unquote(dsn.username)
        auth_file.write_text(f"{_quote(auth_user)} {_quote(unquote(dsn.password))}\n")
        ini = state / "pgbouncer.ini"
        ini.write_text(pgbouncer_config(
            listen_host=HOST, listen_port=port, server_host=dsn.hostname,
            server_port=dsn.port or 5432, auth_user=auth_user, auth_file=auth_file,
            pool_size=pool_size, server_idle_timeout_s=server_idle_timeout_s))
        (state / "logs").mkdir()
        for path in (auth_file, ini):
            path.chmod(0o600)
        if as_root:
            for path in (state, auth_file, ini, state / "logs"):
                shutil.chown(path, "postgres", "postgres")
        proc_name = f"pgbouncer-{port}"
        proc = spawn(state, proc_name, [BINARY, str(ini)],
                     user="postgres" if as_root else None)
        pg = PgBouncer(HOST, port, proc.pid, state, auth_user)

        def listening() -> bool:
            import socket
            with socket.create_connection((HOST, port), timeout=1):
                return True

        wait_until("PgBouncer", listening, 20, proc, pg.log)
        try:
            yield pg
        finally:
            stop_named(state, [proc_name])
    finally:
        if os.environ.get("SALON_KEEP_TEST_STATE"):
            print(f"PgBouncer state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


def admin(pg: PgBouncer, postgres_dsn: str, command: str) -> list[dict[str, str]]:
    """Rows of an admin console command (`SHOW SERVERS`, ...), through psql."""
    from devstack.stack import pg_bin

    password = urlsplit(postgres_dsn).password or ""
    out = subprocess.run(
        [pg_bin("psql"), "-h", pg.host, "-p", str(pg.port), "-U", pg.admin_user,
         "-d", "pgbouncer", "-X", "-A", "-F", "\t", "-P", "footer=off", "-c", command],
        capture_output=True, text=True, check=True, timeout=20,
        env={**os.environ, "PGPASSWORD": unquote(password)})
    lines = out.stdout.splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]
