"""pytest plugin (loaded through the `pytest11` entry point): cluster fixtures for tests.

- `cluster_factory`: real node processes on loopback, stopped after the test.
- `memory_cluster_factory`: nodes in the test's own trio run (use with `autojump_clock`).

Both fail the test at teardown when a node logged an error-level event that the test
did not declare with `expect_errors=["event.name", "glob.*"]`, like pyln-testing does.
`make_config(n, topology=...)` builds small configs in code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .config import Config, load_config, make_config  # noqa: F401 - re-exported for tests


def _as_config(config) -> Config:
    return config if isinstance(config, Config) else load_config(Path(config))


def _check_errors(clusters) -> None:
    problems = []
    for cluster, expected in clusters:
        for event in cluster.errors(expected):
            problems.append(f"{event.get('node')}: {event}")
    if problems:
        pytest.fail("nodes logged unexpected errors:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
async def cluster_factory(tmp_path):
    """`cluster = await cluster_factory(config_or_path, expect_errors=(), timeout=60)`."""
    from .cluster.process import Cluster

    clusters = []

    async def factory(config, *, expect_errors=(), timeout: float = 60.0) -> Cluster:
        cluster = Cluster.create(_as_config(config), tmp_path / f"run{len(clusters)}")
        clusters.append((cluster, list(expect_errors)))
        await cluster.start(timeout=timeout)
        return cluster

    try:
        yield factory
    finally:
        for cluster, _ in clusters:
            await cluster.down()
    _check_errors(clusters)


@pytest.fixture
async def memory_cluster_factory(tmp_path):
    """`cluster = await memory_cluster_factory(config_or_path, expect_errors=(), **node_options)`."""
    import trio

    from .cluster.memory import open_memory_cluster

    clusters = []

    async def serve(config, data_dir, node_options, *, task_status):
        async with open_memory_cluster(config, data_dir=data_dir, **node_options) as cluster:
            task_status.started(cluster)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        async def factory(config, *, expect_errors=(), **node_options):
            data_dir = tmp_path / f"mem{len(clusters)}"
            cluster = await nursery.start(serve, _as_config(config), data_dir, node_options)
            clusters.append((cluster, list(expect_errors)))
            return cluster

        yield factory
        nursery.cancel_scope.cancel()
    _check_errors(clusters)
