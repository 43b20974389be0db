"""A fork server for node processes: import everything once, then fork a node per request.

Starting 50 Python interpreters costs ~0.4 s of CPU each in imports alone; forking a
process that has already imported the node's modules costs milliseconds.  The launcher
writes node names to the zygote's stdin, one a line, and reads back `name pid` lines.
Each child starts its own session, redirects its output to `nodes/NAME/stderr.log` and
runs the node exactly as `p2p-l2 node` would.  The zygote exits when its stdin closes;
its children live on (the launcher tracks them by pid, like any other node process).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _child(run_dir: Path, name: str) -> None:
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open(run_dir / "nodes" / name / "stderr.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    code = 1
    try:
        from ..node.process import main
        code = main(str(run_dir), name)
    except BaseException:  # noqa: BLE001 - report and leave with a status
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(run_dir: Path) -> None:
    from ..node import process  # noqa: F401 - the point: import the node's modules once

    # Reap children that end while we are alive; after we exit, init adopts the rest.
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    (run_dir / "zygote.pid").write_text(str(os.getpid()))  # so `down` can stop us mid-spawn
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        (run_dir / "nodes" / name).mkdir(parents=True, exist_ok=True)
        pid = os.fork()
        if pid == 0:
            _child(run_dir, name)
        print(name, pid, flush=True)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


if __name__ == "__main__":
    serve(Path(sys.argv[sys.argv.index("--run-dir") + 1]))
