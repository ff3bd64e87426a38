"""A real PostgreSQL 15 server for tests, started and removed by the tests themselves.

``initdb`` and ``pg_ctl`` from Debian's postgresql-15 run as the ``postgres`` user (through
``runuser`` when the tests run as root, as CI does; as the current user otherwise) in a temp
dir owned by that user, listening on 127.0.0.1 on a free port and on a unix socket in the
same dir. Each test gets its own database, created from a migrated template (fast), and
dropped afterwards.

``PgServer(host="10.77.3.1", netns="ns")`` runs the server inside a network namespace a test
made (tests/hq/test_pg_cluster.py): clients in other namespaces reach it on ``host``, and the
test itself administers it through the unix socket, which no network namespace hides. Clients
from the namespace's /24 log in with a password (scram-sha-256), as on a real network.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.ports import free_port

PG_BIN = Path(os.environ.get("SMARTQ_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


class PgServer:
    """``with PgServer() as pg: pg.url(dbname)``; the data dir is removed on exit, also after errors."""

    def __init__(self, *, host: str = "127.0.0.1", durable: bool = False, netns: str | None = None,
                 settings: dict[str, str] | None = None) -> None:
        self.host, self.durable, self.netns = host, durable, netns
        self.settings = dict(settings or {})  # more server settings (-c name=value), e.g. for a bench
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="smartq-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._root = os.geteuid() == 0
        self._count = 0
        self._lock = threading.Lock()
        self.template: str | None = None
        self.password = secrets.token_urlsafe(12) if netns else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*(["ip", "netns", "exec", self.netns] if self.netns else []),
               *(["runuser", "-u", "postgres", "--"] if self._root else []), *args]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120, cwd=self.dir)

    def start(self) -> PgServer:
        atexit.register(self.stop)  # also when pytest is interrupted: no server left running
        os.chmod(self.dir, 0o700)
        if self._root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-locale", "--no-sync")
        if self.password is not None:  # other namespaces on this /24: password only
            subnet = ".".join(self.host.split(".")[:3]) + ".0/24"
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {subnet} scram-sha-256\n")
        opts = [f"-c listen_addresses={self.host}", f"-p {self.port}", f"-c unix_socket_directories={self.dir}",
                "-c max_connections=400", "-c shared_buffers=64MB", "-c max_pred_locks_per_transaction=256"]
        if not self.durable:  # a test server: losing it in a power cut loses nothing
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        opts += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", " ".join(opts), "start")
        if self.password is not None:
            self.sql(f"ALTER ROLE postgres PASSWORD '{self.password}'")
        return self

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if (self.data / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, dbname: str = "postgres", host: str | None = None) -> str:
        login = f"postgres:{self.password}" if self.password else "postgres"
        return f"postgresql://{login}@{host or self.host}:{self.port}/{dbname}"

    def admin_url(self, dbname: str = "postgres") -> str:
        """A URL this (the test's) process can always use: TCP on loopback, the socket for a namespace."""
        if self.netns is None:
            return self.url(dbname)
        return f"postgresql://postgres@/{dbname}?host={self.dir}&port={self.port}"

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg
        with psycopg.connect(self.admin_url(dbname), autocommit=True) as conn:
            conn.execute(statement)

    def make_template(self) -> None:
        """A database with HQ's migrations applied, copied by :meth:`create_database`."""
        from hq.db_pg import PostgresDatabase
        self.sql("CREATE DATABASE hq_template")
        db = PostgresDatabase(self.admin_url("hq_template"), readers=1, writers=1)
        try:
            db.migrate()
        finally:
            db.close()
        self.template = "hq_template"

    def create_database(self) -> str:
        """A fresh, migrated database; returns its URL."""
        with self._lock:
            self._count += 1
            name = f"hq_{os.getpid()}_{self._count}"
        if self.template is None:
            self.make_template()
        for attempt in range(50):
            try:
                self.sql(f"CREATE DATABASE {name} TEMPLATE {self.template}")
                break
            except Exception as err:  # the template is briefly busy while another copy starts
                if "being accessed by other users" not in str(err) or attempt == 49:
                    raise
                time.sleep(0.05)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
