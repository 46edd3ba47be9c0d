"""Children die with the launcher: when the process that owns a Stack is SIGKILLed (it can
clean nothing up), its servers, services and stand-ins (each in its own session) die too,
including one the supervisor restarted, and their ports are free again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from infra.local.servers import port_in_use, wait_until

ROOT = Path(__file__).resolve().parents[2]

# The launcher: both servers, a stand-in and a service, supervised; the service is killed
# once so that a child forked by the supervisor's restart is among those checked.
LAUNCHER = """
import json, signal, sys, time
from pathlib import Path
from infra.local.servers import KafkaWireServer, MongoWireServer, free_port
from infra.local.stack import Stack, StackPorts

logs = Path(sys.argv[1])
mongo = MongoWireServer(free_port(), logs)
mongo.start()
kafka = KafkaWireServer(free_port(), logs)
kafka.start()
stack = Stack(StackPorts.free(), logs, mongo_uri=mongo.uri, kafka_bootstrap=kafka.bootstrap_servers)
for name in ("fake-google", "profile"):
    stack.start_process(name)
for name in ("fake-google", "profile"):
    stack.wait_healthy(name)
stack.supervise()
stack.kill("profile", signal.SIGKILL)
stack.wait_running("profile")
children = {
    "mongodb": (mongo.process.pid, mongo.port),
    "kafka": (kafka.process.pid, kafka.port),
    "fake-google": (stack.processes["fake-google"].pid, stack.ports.google),
    "profile": (stack.processes["profile"].pid, stack.ports.grpc["profile"]),
}
print(json.dumps({"restarts": stack.restarts("profile"), "children": children}), flush=True)
time.sleep(600)
"""


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_killing_the_launcher_kills_every_child_and_frees_the_ports(log_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")])}
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(log_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    children: dict[str, tuple[int, int]] = {}
    try:
        assert launcher.stdout is not None
        line = launcher.stdout.readline()
        assert line, f"the launcher exited early ({launcher.poll()}); see {log_dir}"
        report = json.loads(line)
        children = {name: (pid, port) for name, (pid, port) in report["children"].items()}
        assert report["restarts"] == 1
        assert all(not gone(pid) for pid, _ in children.values())
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(30)
        wait_until(
            lambda: all(gone(pid) for pid, _ in children.values()), 30, "every child gone", 0.1
        )
        wait_until(
            lambda: not any(port_in_use(port) for _, port in children.values()),
            30,
            "every port free",
            0.1,
        )
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(30)
        # Never leave a child behind, even when the test failed.
        for pid, _ in children.values():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
