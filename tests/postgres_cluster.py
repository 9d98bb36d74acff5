"""A throwaway PostgreSQL cluster for the tests.

`start_cluster()` finds PostgreSQL's server programs (on PATH, or Debian's
/usr/lib/postgresql/<version>/bin, which `make test` installs), runs `initdb` in a fresh temporary
directory, starts the server on a free port on 127.0.0.1 only (its unix socket in that directory,
not /var/run), creates a database and yields the cluster, whose `url()` is
`postgresql://relay:<password>@127.0.0.1:<port>/relay`. Leaving the context stops the server and
removes the directory, after a failure too.

The superuser has a password (scram-sha-256 on every connection, as in production), so the URLs
carry a secret the way RELAY_DATABASE will, and tests can check that it is never shown.

PostgreSQL refuses to run as root. When the tests do (CI does), initdb and the server run as
Debian's `postgres` user (or `nobody` where that is missing) and the directory is handed to it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

DEBIAN_ROOT = Path("/usr/lib/postgresql")
PROGRAMS = ("initdb", "postgres")
SUPERUSER = "relay"
DATABASE = "relay"
HOST = "127.0.0.1"
INITDB_TIMEOUT_SECONDS = 60
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 10
# Throwaway data: durability buys nothing here, and without it writes and CREATE DATABASE are
# several times faster. Never run a real database like this.
SPEED_OVER_DURABILITY = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
# Another process may take the free port between our probe and the server's bind.
PORT_ATTEMPTS = 3


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server programs are not installed, or there is no user to run them as."""


class PostgresStartError(RuntimeError):
    """initdb or the server failed; the message carries the server log's tail."""


@dataclass(frozen=True)
class Cluster:
    port: int
    password: str
    directory: Path
    user: str = SUPERUSER
    database: str = DATABASE
    host: str = HOST

    def url(self, database: str | None = None) -> str:
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"postgresql://{credentials}@{self.host}:{self.port}/{quote(database or self.database, safe='')}"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no server log)"

    def server_pid(self) -> int | None:
        """The postmaster's process id while it runs (from postmaster.pid)."""
        try:
            return int(self.data.joinpath("postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None


def _version(bin_dir: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in bin_dir.parent.name.split("."))
    except ValueError:
        return ()


def find_bin_dir() -> Path | None:
    """The directory with initdb and postgres: PATH's first, else Debian's newest version."""
    candidates = [Path(found).resolve().parent for found in [shutil.which("initdb")] if found]
    candidates += sorted(DEBIAN_ROOT.glob("*/bin"), key=_version, reverse=True)
    for directory in candidates:
        if all(os.access(directory / program, os.X_OK) for program in PROGRAMS):
            return directory
    return None


def server_account() -> pwd.struct_passwd | None:
    """Whom to run PostgreSQL as: None (ourselves) unless we are root, which PostgreSQL refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable("the tests run as root and there is no postgres or nobody user to run PostgreSQL as")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class _Runner:
    """Runs PostgreSQL's programs as the server account, in the cluster's directory."""

    def __init__(self, bin_dir: Path, account: pwd.struct_passwd | None, directory: Path) -> None:
        self.bin_dir = bin_dir
        self.account = account
        self.directory = directory

    def chown(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def options(self) -> dict[str, Any]:
        as_account: dict[str, Any] = {}
        if self.account is not None:
            as_account = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        # A clean environment: PGDATA, PGPORT and friends from the caller must not steer the server.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.directory)}
        return {"cwd": self.directory, "env": env, **as_account}

    def run(self, program: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / program), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **self.options())

    def start(self, program: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Our own child (pg_ctl would daemonise it), so that we stop and reap it ourselves."""
        with log.open("ab") as output:
            return subprocess.Popen([str(self.bin_dir / program), *args], stdout=output, stderr=subprocess.STDOUT, **self.options())


def _init(runner: _Runner, cluster: Cluster) -> None:
    password_file = cluster.directory / "password"
    password_file.write_text(cluster.password + "\n")
    runner.chown(password_file)
    try:
        done = runner.run(
            "initdb",
            "--pgdata",
            str(cluster.data),
            "--username",
            cluster.user,
            "--pwfile",
            str(password_file),
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
            timeout=INITDB_TIMEOUT_SECONDS,
        )
    finally:
        password_file.unlink()
    if done.returncode != 0:
        raise PostgresStartError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    settings = {
        "listen_addresses": HOST,
        "unix_socket_directories": str(cluster.directory),
        **SPEED_OVER_DURABILITY,
    }
    with cluster.data.joinpath("postgresql.conf").open("a") as conf:
        conf.write("\n# tests/postgres_cluster.py\n")
        conf.writelines(f"{name} = {_conf_value(value)}\n" for name, value in settings.items())


def _start(runner: _Runner, cluster: Cluster) -> subprocess.Popen[bytes]:
    """The server, once it accepts connections; or an error with the log's tail."""
    server = runner.start("postgres", "-D", str(cluster.data), "-p", str(cluster.port), log=cluster.log)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if server.poll() is not None:
            problem = f"exited with {server.returncode}"
            break
        try:
            with connect(cluster.url("postgres"), connect_timeout=1):
                return server
        except psycopg.OperationalError as error:
            # Refused while it binds, "the database system is starting up" while it recovers.
            problem = str(error).strip()
        if time.monotonic() > deadline:
            _stop(server)
            break
        time.sleep(0.05)
    raise PostgresStartError(
        f"PostgreSQL did not start on {cluster.host}:{cluster.port} within {START_TIMEOUT_SECONDS} s ({problem}); "
        f"server log tail:\n{cluster.log_tail()}"
    )


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGQUIT is PostgreSQL's immediate shutdown: the data is thrown away, so nothing needs flushing."""
    if server.poll() is None:
        server.send_signal(signal.SIGQUIT)
    try:
        server.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        server.kill()  # its back-ends exit by themselves once the postmaster is gone
        server.wait(STOP_TIMEOUT_SECONDS)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def connect(url: str, **options: Any) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(url, **{"connect_timeout": 5, **options})


@contextlib.contextmanager
def start_cluster() -> Iterator[Cluster]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(f"PostgreSQL's {', '.join(PROGRAMS)} are neither on PATH nor in {DEBIAN_ROOT}/<version>/bin")
    account = server_account()
    directory = Path(tempfile.mkdtemp(prefix="relay-pg-"))
    runner = _Runner(bin_dir, account, directory)
    cluster = Cluster(port=0, password=secrets.token_urlsafe(18), directory=directory)
    server: subprocess.Popen[bytes] | None = None
    try:
        runner.chown(directory)
        _init(runner, cluster)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            cluster = Cluster(port=free_port(), password=cluster.password, directory=directory)
            try:
                server = _start(runner, cluster)
                break
            except PostgresStartError:
                if attempt == PORT_ATTEMPTS or "could not bind" not in cluster.log_tail():
                    raise
        with connect(cluster.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cluster.database)))
        yield cluster
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(cluster: Cluster) -> Iterator[str]:
    """A new, empty database on the cluster (its URL), dropped afterwards with whatever still uses it."""
    name = f"test_{secrets.token_hex(6)}"
    with connect(cluster.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield cluster.url(name)
    finally:
        with connect(cluster.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
