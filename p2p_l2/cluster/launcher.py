"""Node processes of one run: spawn, signal, watch and stop them (DESIGN §7).

Nodes run in their own sessions so they outlive `p2p-l2 up`; their pids go to
cluster.json as soon as they exist, so `down` finds every one even after `up` was
interrupted.  A pid is only signalled after /proc shows it is this run's node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import events as ev
from ..errors import P2PL2Error
from ..log import EventLog
from . import rundir


ZYGOTE_MODULE = "p2p_l2.cluster.zygote"


def node_command(run_dir: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "p2p_l2", "node", "--run-dir", str(run_dir), "--name", name]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _kill(pid: int, sig: signal.Signals) -> None:
    """Signal a process that may have exited since we looked."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2]
    except (OSError, ValueError, IndexError):
        return ""


class Launcher:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir).absolute()
        self.info = rundir.read_info(self.run_dir)
        self.log = EventLog("launcher", self.run_dir / "launcher.jsonl", line_buffered=True)
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def names(self) -> list[str]:
        return list(self.info["nodes"])

    def pid(self, name: str) -> int | None:
        """The node's pid: from the pid file the node writes at start, else cluster.json."""
        proc = self._procs.get(name)
        if proc is not None:
            return proc.pid
        try:
            return int((self.run_dir / "nodes" / name / "pid").read_text())
        except (OSError, ValueError):
            return self.info["nodes"][name]["pid"]

    def owns(self, name: str, pid: int | None) -> bool:
        """Is `pid` this run's process for node `name` (and not a zombie)?"""
        if not pid or _state(pid) in ("", "Z", "X"):
            return False
        cmd = _cmdline(pid)
        forked = ZYGOTE_MODULE in cmd  # a node forked by the zygote keeps its command line
        return "--run-dir" in cmd and str(self.run_dir) in cmd and (forked or name in cmd)

    def alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            return False
        return self.owns(name, self.pid(name))

    def spawn(self, name: str) -> int:
        if self.alive(name):
            raise P2PL2Error(f"node {name} is already running (pid {self.pid(name)})")
        node_dir = self.run_dir / "nodes" / name
        node_dir.mkdir(parents=True, exist_ok=True)
        with open(node_dir / "stderr.log", "ab") as err:
            proc = subprocess.Popen(node_command(self.run_dir, name), stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err, start_new_session=True,
                                    cwd=self.run_dir)
        self._procs[name] = proc
        self.info["nodes"][name]["pid"] = proc.pid
        rundir.write_info(self.run_dir, self.info)
        self.log.info(ev.PROCESS_STARTED, node=name, pid=proc.pid)
        return proc.pid

    def spawn_many(self, names: list[str]) -> None:
        """Start many nodes at once through a fork server (see zygote.py)."""
        for name in names:
            if self.alive(name):
                raise P2PL2Error(f"node {name} is already running (pid {self.pid(name)})")
            self.info["nodes"][name]["pid"] = None
        zygote = subprocess.Popen([sys.executable, "-m", ZYGOTE_MODULE, "--run-dir", str(self.run_dir)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  start_new_session=True, cwd=self.run_dir)
        try:
            zygote.stdin.write("".join(f"{n}\n" for n in names))
            zygote.stdin.close()
            for line in zygote.stdout:
                name, pid = line.split()
                self.info["nodes"][name]["pid"] = int(pid)
                self.log.info(ev.PROCESS_STARTED, node=name, pid=int(pid))
        finally:
            rundir.write_info(self.run_dir, self.info)
            zygote.wait()
        missing = [n for n in names if not self.info["nodes"][n]["pid"]]
        if missing:
            raise P2PL2Error(f"the fork server did not start {', '.join(missing)}")

    def signal(self, name: str, sig: signal.Signals, event: str) -> int:
        pid = self.pid(name)
        if not self.alive(name):
            raise P2PL2Error(f"node {name} is not running")
        _kill(pid, sig)
        self.log.info(event, node=name, pid=pid)
        return pid

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL, ev.PROCESS_KILLED)
        self._reap(name, timeout=5.0)

    def pause(self, name: str) -> None:
        self.signal(name, signal.SIGSTOP, ev.PROCESS_PAUSED)

    def resume(self, name: str) -> None:
        self.signal(name, signal.SIGCONT, ev.PROCESS_RESUMED)

    def _reap(self, name: str, timeout: float) -> bool:
        """Wait until the node's process is really gone (an exiting process loses its
        command line before it is a zombie: `alive` says no too early)."""
        deadline = time.monotonic() + timeout
        pid = self.pid(name)
        while self.alive(name) or (pid and _state(pid) not in ("", "Z", "X")):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        proc = self._procs.pop(name, None)
        code = proc.wait() if proc is not None else None
        self.log.info(ev.PROCESS_EXITED, node=name, pid=self.pid(name), returncode=code)
        return True

    def stop(self, names: list[str], timeout: float = 5.0) -> int:
        """SIGTERM (a clean shutdown; paused nodes are resumed first), then SIGKILL what is
        still there after `timeout`.  Returns how many were running."""
        running = [n for n in names if self.alive(n)]
        for name in running:
            pid = self.pid(name)
            if _state(pid) == "T":
                _kill(pid, signal.SIGCONT)
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in running:
            if not self._reap(name, max(0.0, deadline - time.monotonic())):
                _kill(self.pid(name), signal.SIGKILL)
                self.log.info(ev.PROCESS_KILLED, node=name, pid=self.pid(name))
                self._reap(name, 5.0)
        for name in names:
            self._procs.pop(name, None)
        return len(running)

    def stop_all(self, timeout: float = 5.0) -> None:
        """Stop every node of the run; no process of it is left behind."""
        try:  # a fork server still forking (its `up` was killed) must not start more nodes
            zygote = int((self.run_dir / "zygote.pid").read_text())
            if ZYGOTE_MODULE in _cmdline(zygote) and str(self.run_dir) in _cmdline(zygote):
                _kill(zygote, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        stopped = self.stop(self.names, timeout)
        self.log.info(ev.LAUNCHER_DOWN, nodes=stopped)

    def tail(self, name: str, lines: int = 15) -> str:
        """The last lines of a node's stderr and event log, to show why it failed."""
        out = []
        for fname in ("stderr.log", "events.jsonl"):
            path = self.run_dir / "nodes" / name / fname
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    out.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(out) or f"(node {name} left no log)"
