"""Real node processes on loopback: the CLI, the control API and bad input on raw sockets.

Few and bounded: every wait has a deadline, and every cluster is stopped by its fixture.
"""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import trio

from p2p_l2 import Cluster, events as ev
from p2p_l2.cluster import rundir
from p2p_l2.errors import ControlError
from p2p_l2.net.frames import receive_frame
from p2p_l2.node.control import ControlClient
from p2p_l2.testing import make_config
from p2p_l2.wire import FrameDecoder, Handshake, Identity, encode_frame

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "p2p_l2"]


def cli(*args, timeout=60, **kw):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def pids_alive(run_dir: Path) -> list[int]:
    """Live processes of the run: pids in cluster.json and the pid files nodes write."""
    info = rundir.read_info(run_dir)
    pids = {n["pid"] for n in info["nodes"].values()}
    pids |= {int(p.read_text()) for p in run_dir.glob("nodes/*/pid") if p.read_text()}
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, TypeError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def test_cli_up_status_ctl_down(tmp_path):
    run = tmp_path / "run"
    up = cli("up", ROOT / "configs" / "line5.toml", "--run-dir", run)
    try:
        assert up.returncode == 0, up.stderr
        assert "alice" in up.stdout
        status = json.loads(cli("status", run, "--json").stdout)
        peers = {n["name"]: set(n["peers"]) for n in status["nodes"]}
        assert peers["bob"] == {"alice", "carol"} and all(n["alive"] for n in status["nodes"])
        res = cli("ctl", run, "alice", "gossip.publish", "--params", '{"topic": "t", "data": "x"}')
        assert res.returncode == 0 and "msg_id" in json.loads(res.stdout)
        odd = cli("ctl", run, "alice", "status", "--params", '{"method": 1, "self": 2}')
        assert odd.returncode == 1 and json.loads(odd.stdout)["error"]["code"] == "bad_params"
        bad = cli("ctl", run, "alice", "no.such.method")
        assert bad.returncode == 1 and json.loads(bad.stdout)["error"]["code"] == "unknown_method"
        for f in ("topology.toml", "cluster.json", "control.token", "nodes/alice/events.jsonl"):
            assert (run / f).exists(), f
        assert (run / "control.token").stat().st_mode & 0o777 == 0o600
    finally:
        down = cli("down", run)
    assert down.returncode == 0, down.stderr
    assert pids_alive(run) == []
    events = [json.loads(line) for line in (run / "nodes/bob/events.jsonl").read_text().splitlines()]
    assert {"ts", "node", "event", "level"} <= set(events[0])
    assert events[-1]["event"] == ev.NODE_STOPPED


def test_config_error_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[node]]\nname = "a"\nroles = ["minr"]\n')
    res = cli("up", bad, "--run-dir", tmp_path / "run")
    assert res.returncode == 2
    assert "bad.toml" in res.stderr and "node[0].roles[0]" in res.stderr


def _interrupt_up(run: Path, sig: signal.Signals) -> subprocess.Popen:
    proc = subprocess.Popen([*CLI, "up", str(ROOT / "configs" / "ring12.toml"), "--run-dir", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # interrupt once some nodes exist
        if (run / "cluster.json").exists() and pids_alive(run):
            break
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    return proc


def test_ctrl_c_during_up_leaves_no_process(tmp_path):
    proc = _interrupt_up(tmp_path / "run", signal.SIGINT)
    assert proc.returncode != 0
    assert pids_alive(tmp_path / "run") == []


def test_down_after_up_was_killed(tmp_path):
    run = tmp_path / "run"
    _interrupt_up(run, signal.SIGKILL)  # up cannot clean up: its nodes live on ...
    res = cli("down", run)  # ... and down finds every one of them
    assert res.returncode == 0, res.stderr
    assert pids_alive(run) == []


async def _refused(port: int, ident: Identity, network: str) -> bool:
    """Handshake with the node at `port`; True when the node then closes the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    hs = Handshake(ident, network, True)
    await stream.send_all(b"".join(encode_frame(b) for b in hs.start()))
    dec = FrameDecoder()
    with trio.fail_after(5):
        try:
            while True:
                frame = await receive_frame(stream, dec)
                if frame is None:
                    return True
                if not hs.complete:
                    await stream.send_all(b"".join(encode_frame(b) for b in hs.receive(frame)))
        except Exception:
            return True
        finally:
            await stream.aclose()


async def test_bad_peer_input_is_rejected_and_node_keeps_serving(cluster_factory):
    cluster = await cluster_factory(make_config(3, "line", name="raw"))
    info = rundir.read_info(cluster.run_dir)["nodes"]["n1"]
    port = info["port"]

    async def send_raw(data: bytes):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(data)
        with trio.move_on_after(5):
            while await stream.receive_some(65536):
                pass  # the node closes the connection
        await stream.aclose()

    await send_raw(b"GET / HTTP/1.1\r\n\r\n" * 3)  # garbage: a huge length prefix
    await cluster.wait_for_event("n1", ev.MSG_REJECTED, reason="frame_too_large")
    await send_raw((1 << 31).to_bytes(4, "big"))  # oversized length prefix
    await cluster.wait_for_event("n1", ev.MSG_REJECTED, reason="frame_too_large")
    await send_raw(encode_frame(msgpack.packb(["zzz", {}])))  # unknown kind in the handshake
    await cluster.wait_for_event("n1", ev.MSG_REJECTED, reason="unknown_kind")
    await send_raw(encode_frame(b"\xc1\xc1\xc1"))  # not msgpack
    await cluster.wait_for_event("n1", ev.MSG_REJECTED, reason="malformed")

    # a hello claiming n0's key but signed by someone else: forged signature
    real = Identity.derive(cluster.config.cluster.seed, "n0")
    class Forger(Identity):
        def sign(self, msg):
            return Identity.derive(99, "mallory").sign(msg)
    forger = Forger.derive(cluster.config.cluster.seed, "n0")
    assert await _refused(port, forger, "raw")
    await cluster.wait_for_event("n1", ev.MSG_REJECTED, reason="bad_signature")
    # a peer of another network
    assert await _refused(port, real, "other-net")
    await cluster.wait_for_event("n1", ev.MSG_REJECTED, reason="wrong_network")
    # a stranger's key
    assert await _refused(port, Identity.derive(5, "stranger"), "raw")
    await cluster.wait_for_event("n1", ev.MSG_REJECTED, reason="unknown_peer")

    status = await cluster["n1"].call("status")
    assert set(status["peers"]) == {"n0", "n2"}  # real peers were never disturbed
    res = await cluster["n0"].call("gossip.publish", topic="t", data="still fine")
    await cluster.wait_for_event("n2", ev.GOSSIP_DELIVERED, msg_id=res["msg_id"])


async def test_control_api_refuses_bad_requests(cluster_factory):
    cluster = await cluster_factory(make_config(2, "line", name="ctl"))
    port = rundir.read_info(cluster.run_dir)["nodes"]["n0"]["control_port"]
    token = rundir.read_token(cluster.run_dir)
    for wrong in ("", "nope"):
        with pytest.raises(ControlError) as err:
            await ControlClient("127.0.0.1", port, wrong).call("status")
        assert err.value.code == "unauthorized"
    client = ControlClient("127.0.0.1", port, token)
    with pytest.raises(ControlError) as err:
        await client.call("gossip.publish", topic=3, data="x")
    assert err.value.code == "bad_params"
    # garbage on the control socket does not take the node down
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(encode_frame(b"\xc1garbage"))
    reply = msgpack.unpackb((await stream.receive_some(65536))[4:])
    assert reply["error"]["code"] == "bad_request"
    await stream.aclose()
    assert (await client.call("status"))["name"] == "n0"
    await client.aclose()
    logged = await cluster.wait_for_event("n0", ev.CONTROL_ERROR, code="unauthorized")
    assert logged["level"] == "warning"


async def test_process_faults_and_event_cursor(cluster_factory):
    cluster = await cluster_factory(make_config(3, "line", name="faults"))
    first = await cluster.wait_for_event("n1", ev.PEER_CONNECTED)
    second = await cluster.wait_for_event("n1", ev.PEER_CONNECTED)
    assert {first["peer"], second["peer"]} == {"n0", "n2"}  # never the same line twice

    await cluster.kill("n2")
    assert not cluster.alive("n2")
    await cluster.wait_for_event("n1", ev.PEER_DISCONNECTED, peer="n2")
    await cluster.restart("n2")
    await cluster.wait_for_event("n1", ev.PEER_CONNECTED, peer="n2")

    await cluster.pause("n0")
    with pytest.raises(ControlError) as err:
        await cluster["n0"].call("status", _timeout=0.5)
    assert err.value.code == "timeout"
    await cluster.resume("n0")
    assert (await cluster["n0"].call("status"))["name"] == "n0"
    launcher = [json.loads(x) for x in (cluster.run_dir / "launcher.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in launcher]
    for name in (ev.PROCESS_KILLED, ev.PROCESS_PAUSED, ev.PROCESS_RESUMED):
        assert name in kinds


def test_node_that_fails_to_start_is_reported_with_its_log(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    cfg = tmp_path / "clash.toml"
    cfg.write_text(f'[cluster]\nname = "clash"\n[[node]]\nname = "a"\n[[node]]\nname = "b"\n'
                   f'port = {port}\n[topology]\nlinks = [["a", "b"]]\n')
    run = tmp_path / "run"
    try:
        res = cli("up", cfg, "--run-dir", run)
    finally:
        holder.close()
    assert res.returncode == 1
    assert "node b exited during start-up" in res.stderr
    assert "Address already in use" in res.stderr  # the tail of b's log says why
    assert pids_alive(run) == []  # and a, which did start, was stopped


async def test_cluster_launch_stops_everything_on_exit(tmp_path):
    async with Cluster.launch(make_config(3, "ring", name="launch"), run_dir=tmp_path / "run") as c:
        assert await c.linked()
        res = await c["n0"].call("gossip.publish", topic="t", data="x")
        await c.wait_for_event("n2", ev.GOSSIP_DELIVERED, msg_id=res["msg_id"])
        attached = Cluster.attach(tmp_path / "run")  # what scripts use after `p2p-l2 up`
        assert (await attached["n1"].call("status"))["name"] == "n1"
    assert pids_alive(tmp_path / "run") == []


CHAIN = '[chain]\nblock_interval = 0.3\n[accounts]\nn1 = 100000\n'


async def test_chain_on_processes_survives_kill_9(cluster_factory):
    config = make_config(3, "line", name="l1proc", roles={"n0": ["miner"]}, extra=CHAIN)
    cluster = await cluster_factory(config)
    res = await cluster["n1"].call("chain.send", to="n2", amount=700, fee=3)

    async def confirmed():
        return (await cluster["n2"].call("chain.tx", txid=res["txid"]))["status"] == "confirmed"
    await cluster.wait_for(confirmed, timeout=30)
    assert (await cluster["n2"].call("chain.balance"))["balance"] == 700
    status = await cluster["n2"].call("status")
    assert status["height"] >= 1 and len(status["tip"]) == 64

    await cluster.wait_for_event("n2", ev.CHAIN_LOADED)  # the first start, at genesis
    height = (await cluster["n2"].call("chain.tip"))["height"]
    await cluster.kill("n2")  # kill -9

    async def advanced():
        return (await cluster["n1"].call("chain.tip"))["height"] >= height + 3
    await cluster.wait_for(advanced, timeout=30)
    await cluster.restart("n2")
    loaded = await cluster.wait_for_event("n2", ev.CHAIN_LOADED)
    assert loaded["height"] >= height  # resumed from its database, no replay from genesis

    async def caught_up():
        a, b = await cluster["n1"].call("chain.tip"), await cluster["n2"].call("chain.tip")
        return a == b and a["height"] >= height + 3
    await cluster.wait_for(caught_up, timeout=30)
    assert (await cluster["n2"].call("chain.balance"))["balance"] == 700


def test_cli_channels_on_processes(tmp_path):
    run = tmp_path / "run"
    up = cli("up", ROOT / "configs" / "line5.toml", "--run-dir", run, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        chans = json.loads(cli("ctl", run, "carol", "channel.list").stdout)
        assert {c["peer"] for c in chans} == {"bob", "dave"} and all(c["state"] == "open" for c in chans)
        inv = json.loads(cli("ctl", run, "erin", "invoice.create", "--params", '{"amount": 777}').stdout)
        paid = json.loads(cli("ctl", run, "alice", "pay", "--params",
                              json.dumps({"invoice": inv["invoice"]})).stdout)
        assert paid["status"] == "succeeded" and paid["route"][-1] == "erin" and paid["fee"] == 3
        status = json.loads(cli("status", run, "--json").stdout)
        alice = next(n for n in status["nodes"] if n["name"] == "alice")
        assert alice["channels"] == 1
    finally:
        cli("down", run)
    assert pids_alive(run) == []


async def test_cli_plasma_on_processes(tmp_path):
    run = tmp_path / "run"
    up = cli("up", ROOT / "configs" / "plasma.toml", "--run-dir", run, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        bal = json.loads(cli("ctl", run, "carol", "plasma.balance").stdout)
        assert bal["total"] == 20_000 and len(bal["utxos"]) == 1  # `up` waited for it
        sent = json.loads(cli("ctl", run, "alice", "plasma.transfer", "--params",
                              '{"to": "carol", "amount": 1234}').stdout)
        assert len(sent["tx_hash"]) == 64
        cluster = Cluster.attach(run)

        async def received():
            return (await cluster["carol"].call("plasma.balance"))["total"] == 21_234
        await cluster.wait_for(received, timeout=30)
        status = json.loads(cli("status", run, "--json").stdout)
        assert next(n for n in status["nodes"] if n["name"] == "op")["plasma_blocks"] >= 1
    finally:
        cli("down", run)
    assert pids_alive(run) == []
    final = json.loads((run / "final_state.json").read_text())  # what `analyze` checks
    assert final["total_balances"] + sum(final["locked"].values()) == (
        final["genesis_total"] + final["rewards"])
    assert final["locked"]["plasma"] == 120_000 and "op" in final["plasma"]


def test_cli_fault_shapes_a_running_cluster(tmp_path):
    import tomli_w
    config = tmp_path / "ring.toml"
    config.write_text(tomli_w.dumps(make_config(4, "ring", name="flt").to_dict()))
    run = tmp_path / "run"
    assert cli("up", config, "--run-dir", run, timeout=60).returncode == 0
    try:
        def rtt():
            out = cli("ctl", run, "n0", "ping", "--params", '{"peer": "n1"}')
            return json.loads(out.stdout)["rtt_ms"]
        assert rtt() < 40
        res = cli("fault", run, "link", "from=n0", "to=n1", "latency_ms=60")
        assert res.returncode == 0 and "ok" in res.stderr, res.stderr
        assert 60 <= rtt() < 120  # one way shaped: the round trip is 60 ms and a bit
        res = cli("fault", run, "partition", "groups=n0,n1/n2,n3")
        assert res.returncode == 0, res.stderr
        cut = cli("ctl", run, "n0", "ping", "--params", '{"peer": "n3", "timeout": 1}')
        assert cut.returncode == 1  # n3 is across the cut (n0's ring neighbours: n1, n3)
        assert cli("fault", run, "heal").returncode == 0
        bad = cli("fault", run, "link", "between=n0,n9", "loss=0.5")
        assert bad.returncode == 2 and "n9" in bad.stderr  # checked like a [[fault]]
    finally:
        cli("down", run)
    assert pids_alive(run) == []


def test_demo_runs_end_to_end(tmp_path):
    """The README's first command: a ~50 s experiment on real processes."""
    res = cli("demo", "--run-dir", tmp_path / "demo", timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    for line in ("payments succeeded", "stale closes punished", "L1 blocks mined",
                 "plasma blocks committed", "PASS    coins_conserved", "report.html"):
        assert line in res.stdout, res.stdout[-3000:]
    assert "FAIL" not in res.stdout
    assert pids_alive(tmp_path / "demo") == []
    report = (tmp_path / "demo" / "report" / "report.html").read_text()
    assert "data:image/png;base64" in report  # self-contained, plots inside
