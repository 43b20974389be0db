"""The pytest plugin fails a test whose nodes logged errors it did not declare."""

INNER = '''
from p2p_l2 import events as ev
from p2p_l2.config import make_config

async def test_undeclared_error(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(2))
    cluster.nodes["n1"].log.error(ev.NODE_ERROR, error="boom")

async def test_declared_error(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(2), expect_errors=["node.*"])
    cluster.nodes["n1"].log.error(ev.NODE_ERROR, error="boom")

async def test_no_error(autojump_clock, memory_cluster_factory):
    cluster = await memory_cluster_factory(make_config(2))
    assert (await cluster["n0"].call("status"))["peers"] == ["n1"]
'''


def test_teardown_fails_on_undeclared_errors(pytester):
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)  # pytest-trio reports teardown as the test
    result.stdout.fnmatch_lines(["*FAILED*test_undeclared_error*nodes logged unexpected errors*"])
