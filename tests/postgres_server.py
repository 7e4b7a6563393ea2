"""A throw-away PostgreSQL cluster for the tests and the scale benchmark: Debian's server binaries,
run as an unprivileged user (the server refuses root), listening only on a Unix socket in a temporary
folder. `make postgres` installs the binaries where it can; without them, or where the server cannot
start, `start_cluster` raises Unavailable with the reason, and the tests skip with it."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why."""


@dataclass(frozen=True)
class Cluster:
    socket_dir: Path
    superuser: str = "postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.superuser}@/{database}?host={self.socket_dir}"

    def create_database(self, template: str | None = None) -> str:
        """A new database, empty or a copy of the database `template` (a name); its SQLAlchemy URL."""
        name = f"gradebook_{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        finally:
            engine.dispose()
        return self.url(name)


def server_binaries() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise Unavailable("PostgreSQL's server is not installed (`make postgres` installs Debian's postgresql)")


def as_unprivileged() -> tuple[list[str], str | None]:
    """How to run the server's commands: as ourselves, or as root through runuser as an unprivileged user."""
    if os.geteuid() != 0:
        return [], None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", user, "--"], user
    raise Unavailable("running as root without runuser or an unprivileged user for the server")


def run(prefix: list[str], command: list[str], log: Path) -> None:
    done = subprocess.run([*prefix, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    if done.returncode != 0:
        raise Unavailable(f"{Path(command[0]).name} failed: {done.stdout.strip()[-400:]} {read_tail(log)}")


def read_tail(log: Path) -> str:
    return log.read_text()[-400:] if log.is_file() else ""


@contextmanager
def start_cluster(durable: bool = False) -> Iterator[Cluster]:
    """A running cluster, stopped and deleted afterwards. `durable=False` turns fsync off (tests); the
    benchmark keeps it on, as a real server has it."""
    binaries = server_binaries()
    prefix, user = as_unprivileged()
    folder = Path(tempfile.mkdtemp(prefix="coursekit-pg-", dir="/tmp"))
    if user:
        shutil.chown(folder, user)
    data, log = folder / "data", folder / "server.log"
    options = f"-c listen_addresses='' -k {folder} -c max_connections=100" + ("" if durable else " -c fsync=off")
    try:
        run(prefix, [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], log)
        run(prefix, [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"], log)
        try:
            yield Cluster(folder)
        finally:
            subprocess.run([*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
