"""Apache Kafka itself, in a container, for the suite on machines with a Docker engine.

`SLUICE_TEST_KAFKA=testcontainers` asks for it, `SLUICE_TEST_KAFKA=embedded` refuses it; unset,
it is used when a Docker engine answers and the embedded broker (Tansu) otherwise.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import TYPE_CHECKING

from devkit.embedded import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

APACHE_KAFKA_IMAGE = "apache/kafka:3.9.1"


def docker_answers() -> bool:
    """Does a Docker engine answer `GET /_ping` at DOCKER_HOST (or the default socket)?"""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            path = host.removeprefix("unix://")
            if not os.path.exists(path):  # noqa: PTH110 - a socket path, not a file to open
                return False
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = path
        elif host.startswith("tcp://"):
            name, _, port = host.removeprefix("tcp://").rpartition(":")
            connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (name, int(port))
        else:
            return False
        with connection:
            connection.settimeout(2)
            connection.connect(address)
            connection.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in connection.recv(64)
    except (OSError, ValueError):
        return False


def use_apache_kafka() -> bool:
    choice = os.environ.get("SLUICE_TEST_KAFKA", "").strip().lower()
    if choice == "testcontainers":
        return True
    if choice in ("embedded", "tansu"):
        return False
    return docker_answers()


@contextlib.contextmanager
def apache_kafka() -> Iterator[str]:
    """A one-node KRaft broker; yields its bootstrap address on the host."""
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy  # noqa: PLC0415

    # The advertised address must be known before start: bind a chosen host port.
    port = free_port()
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }
    container = DockerContainer(APACHE_KAFKA_IMAGE).with_bind_ports(9092, port)
    for name, value in env.items():
        container = container.with_env(name, value)
    container = container.waiting_for(LogMessageWaitStrategy("Kafka Server started"))
    with container:
        yield f"127.0.0.1:{port}"
