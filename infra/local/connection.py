"""Where the running launcher's stack can be reached: the gateway URL, the write key, the dev
API key, the gRPC service token and addresses, and the demo's anchor day, in
``<log dir>/connection.json`` (readable by this user only: it holds keys). ``python -m
infra.local load-demo`` reads it; the launcher writes it once started and removes it on exit.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from infra.local.demo_load import DemoTarget

FILE_NAME = "connection.json"


class Reachable(Protocol):
    """What the connection is written from (a Stack)."""

    write_key: str
    api_key: str
    grpc_token: str

    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway."""
        ...

    @property
    def passkit_url(self) -> str:
        """Base URL of the PassKit web service."""
        ...

    def service_processes(self) -> list[str]:
        """Every service process by name."""
        ...

    def grpc_target(self, service: str) -> str:
        """``host:port`` of a service's gRPC server."""
        ...


def connection_path(log_dir: Path) -> Path:
    """The connection file of a launcher logging to ``log_dir``."""
    return log_dir / FILE_NAME


def write_connection(log_dir: Path, stack: Reachable, anchor: date | None = None) -> DemoTarget:
    """Publish ``stack``'s doors and keys (owner-only file, written aside then renamed)."""
    target = DemoTarget(
        gateway_url=stack.gateway_url,
        write_key=stack.write_key,
        api_key=stack.api_key,
        grpc_token=stack.grpc_token,
        grpc_targets={name: stack.grpc_target(name) for name in stack.service_processes()},
        passkit_url=stack.passkit_url,
        anchor=anchor or datetime.now(UTC).date(),
        log_dir=str(log_dir),
    )
    document = {
        "launcher_pid": os.getpid(),
        "gateway_url": target.gateway_url,
        "write_key": target.write_key,
        "api_key": target.api_key,
        "grpc_token": target.grpc_token,
        "grpc": dict(target.grpc_targets),
        "passkit_url": target.passkit_url,
        "demo_anchor": target.anchor.isoformat(),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    path = connection_path(log_dir)
    aside = path.with_suffix(".tmp")
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(json.dumps(document, indent=1))
    aside.replace(path)
    return target


def read_connection(log_dir: Path) -> DemoTarget:
    """The running launcher's doors and keys; ``FileNotFoundError`` (saying what to start)
    when no launcher published them, ``ValueError`` when the file is unreadable."""
    path = connection_path(log_dir)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no running stack: {path} does not exist (start one with make run, or pass "
            "--log-dir of the launcher)"
        ) from None
    except ValueError:
        raise ValueError(f"{path} is not JSON: is the launcher still starting?") from None
    try:
        return DemoTarget(
            gateway_url=str(document["gateway_url"]),
            write_key=str(document["write_key"]),
            api_key=str(document["api_key"]),
            grpc_token=str(document["grpc_token"]),
            grpc_targets={str(k): str(v) for k, v in dict(document["grpc"]).items()},
            passkit_url=str(document["passkit_url"]),
            anchor=date.fromisoformat(str(document["demo_anchor"])),
            log_dir=str(log_dir),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: missing or bad field {error}") from None


def remove_connection(log_dir: Path) -> None:
    """Withdraw the connection file (the launcher is stopping)."""
    connection_path(log_dir).unlink(missing_ok=True)
