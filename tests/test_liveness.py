"""When a channel stops waiting on its peer (the sans-IO `Liveness`)."""

from p2p_l2.channel.liveness import FORCE_CLOSE, RESYNC, RESYNC_AFTER, UNRESPONSIVE, Liveness


def run(live, seq_at, waiting_at, until, step=0.25):
    """Ask every `step` seconds; returns [(t, verdict)] of the non-None verdicts."""
    out, t = [], 0.0
    while t <= until:
        v = live.check(seq_at(t), waiting_at(t), t)
        if v:
            out.append((t, v))
        t = round(t + step, 6)
    return out


def test_progress_never_trips_anything():
    assert run(Liveness(), lambda t: int(t), lambda t: True, 30) == []


def test_an_idle_channel_accumulates_nothing():
    assert run(Liveness(), lambda t: 5, lambda t: False, 60) == []


def test_a_silent_peer_is_resynced_then_force_closed():
    verdicts = run(Liveness(), lambda t: 7, lambda t: True, UNRESPONSIVE + 1)
    resyncs = [t for t, v in verdicts if v == RESYNC]
    assert resyncs and resyncs[0] > RESYNC_AFTER
    assert all(b - a > RESYNC_AFTER for a, b in zip(resyncs, resyncs[1:]))
    assert verdicts[-1][1] == FORCE_CLOSE and verdicts[-1][0] > UNRESPONSIVE


def test_a_wait_that_gave_up_after_a_resync_still_counts():
    # waiting for 3 s (one resync), then the queued op expired: nothing to wait for, but
    # the peer never answered, so the clock keeps running to the force close
    verdicts = run(Liveness(), lambda t: 3, lambda t: t < 3, UNRESPONSIVE + 1)
    assert [v for _, v in verdicts][:1] == [RESYNC]
    assert verdicts[-1][1] == FORCE_CLOSE


def test_progress_after_a_resync_resets_the_clock():
    seq = lambda t: 1 if t < 4 else 2  # noqa: E731 - the peer answers at t=4
    verdicts = run(Liveness(), seq, lambda t: True, 4 + UNRESPONSIVE - 1)
    assert FORCE_CLOSE not in [v for _, v in verdicts]
