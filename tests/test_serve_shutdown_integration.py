"""Stopping ``cascade serve``: SIGTERM and SIGHUP take Ctrl-C's way out, and what it started goes with it.

The integration tests run ``cascade serve CONFIG`` (knn-vote expert: no LLM) in a child process in a
session of its own, with Ray's temporary folder (``RAY_TMPDIR``) a fresh directory, so every process
it started is found by its session id or by that folder on its command line, and no other Ray
instance on this machine is joined unless the test starts one for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cascade.config import CascadeConfig
from deployments.app import STOP_SIGNALS, interrupt_on_stop_signals
from serving import cascade_config, free_port, tune_artifact

ROOT = Path(__file__).resolve().parents[1]
READY_WITHIN_S, EXIT_WITHIN_S, GONE_WITHIN_S = 240.0, 90.0, 30.0
SERVING = "cascade serving at"  # the CLI's line once serve.run has returned: the app is up, the driver waits
TOKEN_AUTH = {"RAY_AUTH_MODE": "token"}  # a driver joining a cluster sends ~/.ray/auth_token only when told to


def _raise_stop_signal(stop_signal: signal.Signals) -> None:
    assert signal.getsignal(stop_signal) not in (signal.SIG_DFL, signal.SIG_IGN, None)  # else it kills pytest
    os.kill(os.getpid(), stop_signal)
    time.sleep(5.0)  # the handler runs in the main thread at the next bytecode: well before this ends


@pytest.mark.parametrize("stop_signal", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_stop_signal_raises_keyboard_interrupt_as_ctrl_c_does(stop_signal: signal.Signals) -> None:
    with pytest.raises(KeyboardInterrupt, match=stop_signal.name), interrupt_on_stop_signals():
        _raise_stop_signal(stop_signal)


def test_later_stop_signals_are_ignored_while_the_shutdown_runs() -> None:
    with interrupt_on_stop_signals():
        with pytest.raises(KeyboardInterrupt):
            _raise_stop_signal(signal.SIGTERM)
        for stop_signal in STOP_SIGNALS:
            assert signal.getsignal(stop_signal) == signal.SIG_IGN
            os.kill(os.getpid(), stop_signal)  # ignored: the block goes on


def test_the_previous_handlers_come_back_after_the_block() -> None:
    def earlier(signum: int, frame: Any) -> None:
        raise AssertionError("not called")

    before = {stop_signal: signal.signal(stop_signal, earlier) for stop_signal in STOP_SIGNALS}
    try:
        with pytest.raises(KeyboardInterrupt), interrupt_on_stop_signals():
            _raise_stop_signal(signal.SIGHUP)
        assert all(signal.getsignal(stop_signal) is earlier for stop_signal in STOP_SIGNALS)
    finally:
        for stop_signal, handler in before.items():
            signal.signal(stop_signal, handler)


def test_outside_the_main_thread_no_handler_changes() -> None:
    before = {stop_signal: signal.getsignal(stop_signal) for stop_signal in STOP_SIGNALS}
    seen: list[dict[signal.Signals, Any]] = []

    def in_a_thread() -> None:
        with interrupt_on_stop_signals():
            seen.append({stop_signal: signal.getsignal(stop_signal) for stop_signal in STOP_SIGNALS})

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [before]


class Processes:
    """A child process in a session of its own, with its output in a file and ``RAY_TMPDIR`` set to
    ``ray_dir`` (``None``: a process that joins a cluster and starts no Ray of its own)."""

    def __init__(self, command: list[str], ray_dir: str | None, output: Path, **env: str) -> None:
        self.ray_dir = ray_dir
        self.output = output
        inherited = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        if ray_dir is not None:
            inherited["RAY_TMPDIR"] = ray_dir
        with output.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, env={**inherited, **env})

    def left_over(self) -> dict[int, str]:
        """Live processes (pid: command line) in the child's session or naming its Ray folder (if any)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                session = os.getsid(pid)
            except (OSError, IndexError):  # gone meanwhile
                continue
            if state != "Z" and (session == self.process.pid or (self.ray_dir is not None and self.ray_dir in command)):
                found[pid] = command[:200]
        return found

    def stop(self, stop_signal: signal.Signals = signal.SIGTERM) -> int:
        """Send ``stop_signal`` to the child alone (as a supervisor does); its exit status."""
        self.process.send_signal(stop_signal)
        try:
            return self.process.wait(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {EXIT_WITHIN_S:.0f} s after {stop_signal.name}:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL to the child and to whatever it left (each of them ours: in its session or Ray folder)."""
        for pid in [self.process.pid, *self.left_over()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)

    def tail(self) -> str:
        return self.output.read_text(errors="replace")[-4000:]


class Served(Processes):
    """``cascade serve CONFIG`` in a child process."""

    def __init__(self, config: CascadeConfig, folder: Path, ray_dir: str | None, **env: str) -> None:
        self.url = f"http://{config.serve.host}:{config.serve.port}"
        self.port = config.serve.port
        path = folder / "cascade.yaml"
        config.to_yaml(path)
        super().__init__([sys.executable, "-m", "cascade", "serve", str(path)], ray_dir, folder / "serve.txt", **env)

    def wait_ready(self) -> None:
        """Until ``/readyz`` answers 200 and the CLI says it serves."""
        deadline = time.monotonic() + READY_WITHIN_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"cascade serve exited early:\n{self.tail()}"
            if SERVING in self.tail() and self.ready():
                return
            time.sleep(1.0)
        raise AssertionError(f"not ready within {READY_WITHIN_S:.0f} s:\n{self.tail()}")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("artifact") / "spam"
    tune_artifact(path)
    return path


@pytest.fixture
def config(artifact: Path) -> CascadeConfig:
    return cascade_config(artifact, serve={"port": free_port(), "router_num_cpus": 0.2, "expert_num_cpus": 0.2,
                                           "shared_budget": {"num_cpus": 0.1}})


@pytest.fixture
def ray_dir() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _gone(processes: Processes) -> dict[int, str]:
    """What is left of ``processes`` once it had ``GONE_WITHIN_S`` to go."""
    deadline = time.monotonic() + GONE_WITHIN_S
    while processes.left_over() and time.monotonic() < deadline:
        time.sleep(0.5)
    return processes.left_over()


@pytest.mark.integration
@pytest.mark.parametrize("stop_signal", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_stop_signal_stops_serve_and_every_ray_process_it_started(
        config: CascadeConfig, tmp_path: Path, ray_dir: str, stop_signal: signal.Signals) -> None:
    served = Served(config, tmp_path, ray_dir)
    try:
        served.wait_ready()
        assert any("raylet" in command for command in served.left_over().values())  # the search does find Ray

        code = served.stop(stop_signal)
        left = served.left_over()  # at once: the CLI returns once Ray's processes have exited
    finally:
        served.kill()

    assert left == {}, served.tail()
    assert code == 0, served.tail()
    assert served.tail().rstrip().endswith("stopped")
    assert _port_is_free(served.port)


@pytest.mark.integration
def test_sigterm_on_a_joined_cluster_deletes_the_app_and_leaves_the_cluster_running(
        config: CascadeConfig, tmp_path: Path, ray_dir: str) -> None:
    head = Processes([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus=2",
                      f"--port={free_port()}", "--include-dashboard=false", "--disable-usage-stats"],
                     ray_dir, tmp_path / "head.txt", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", **TOKEN_AUTH)
    try:
        address_file = Path(ray_dir) / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + READY_WITHIN_S
        while not address_file.is_file() and time.monotonic() < deadline:
            assert head.process.poll() is None, head.tail()
            time.sleep(0.5)
        served = Served(config, tmp_path, None, RAY_ADDRESS=address_file.read_text().strip(), **TOKEN_AUTH)
        try:
            served.wait_ready()
            code = served.stop()
            left = served.left_over()
            answered = httpx.get(f"{served.url}/readyz", timeout=10.0).status_code
            cluster = list(head.left_over().values())
        finally:
            served.kill()
    finally:
        head.process.terminate()  # `ray start --block` takes its processes down on SIGTERM
        _gone(head)
        head.kill()

    assert code == 0 and left == {}, served.tail()
    assert answered == 404, served.tail()  # the app is deleted; the Serve proxy it started still answers
    assert any("gcs_server" in command for command in cluster) and any("raylet" in command for command in cluster)
