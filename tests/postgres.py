"""A throwaway PostgreSQL server for integration tests: its own data directory, a free localhost port,
trust authentication, no fsync; stopped and removed on exit.

The server binaries come from the operating system (Debian: ``apt-get install postgresql``, which
``make install`` runs); PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MISSING = ("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH; install "
           "them with `apt-get install postgresql` (or `make install`)")


def server_binaries(installed: Path = Path("/usr/lib/postgresql")) -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: the newest ``<installed>/<version>/bin``, else PATH's."""
    candidates = sorted(installed.glob("*/bin/initdb"),
                        key=lambda path: [int(part) for part in path.parts[-3].split(".") if part.isdigit()])
    initdb = candidates[-1] if candidates else shutil.which("initdb")
    if initdb is None or not (Path(initdb).parent / "pg_ctl").exists():
        return None
    return Path(initdb).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """A running server on ``127.0.0.1:port`` whose superuser ``postgres`` needs no password."""

    def __init__(self, port: int) -> None:
        self.port = port

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def fresh_database(self, name: str) -> str:
        """Create database ``name`` (dropping it and its connections first); return its URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], what: str, log: Path | None = None) -> None:
    done = subprocess.run(_as_server_user(command), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        server_log = log.read_text()[-4000:] if log is not None and log.exists() else ""
        raise RuntimeError(f"PostgreSQL {what} failed (exit {done.returncode}): {done.stdout}{done.stderr}{server_log}")


@contextmanager
def postgres_server(binaries: Path) -> Iterator[PostgresServer]:
    """Start a server (``initdb`` and ``pg_ctl`` in ``binaries``) in a fresh temporary folder; stop it and
    delete the folder afterwards."""
    root = Path(tempfile.mkdtemp(prefix="cascade-postgres-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    data, port = root / "data", free_port()
    settings = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")  # fmt: skip
    try:
        _run([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
              "--locale=C", "--no-sync"], "initdb")  # fmt: skip
        _run([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o", settings, "-w",
              "-t", "60", "start"], "start", log=root / "server.log")  # fmt: skip
        try:
            yield PostgresServer(port)
        finally:
            _run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def installed_postgres_server() -> Iterator[PostgresServer]:
    """:func:`postgres_server` on the installed binaries; a missing server fails the test (no silent skip)."""
    import pytest

    binaries = server_binaries()
    if binaries is None:
        pytest.fail(MISSING, pytrace=False)
    with postgres_server(binaries) as running:
        yield running
