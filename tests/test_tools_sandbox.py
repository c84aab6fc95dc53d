"""The tool sandbox against tools that misbehave and arguments that attack: nothing escapes, the batch goes on."""

import os
import resource
from pathlib import Path

import pytest

from pipelines.core.errors import ConfigError
from pipelines.tools import library_files
from pipelines.tools.sandbox import Limits, Sandbox, can_unshare
from pipelines.tools.validate import CallError, check_arguments, find_tool

DATA = Path(__file__).parent / "data"
HOSTILE = DATA / "tools_hostile.py"


@pytest.fixture(scope="module")
def box():
    with Sandbox(HOSTILE, Limits(timeout=2.0, memory_mb=512)) as sandbox:
        yield sandbox


def one(box, name, arguments=None):
    return box.run([(name, arguments or {})])[0]


def test_describe_reads_the_tools_inside_the_sandbox(box):
    names = [t["function"]["name"] for t in box.describe()]
    assert "spin" in names and "weather" in names
    assert "weather" not in box.implemented  # simulated: no function


def test_an_endless_loop_times_out_and_the_batch_goes_on(box):
    started = box.started
    outcomes = box.run([("spin", {}), ("echo", {"a": 1})])
    assert [o.status for o in outcomes] == ["timeout", "ok"]
    assert outcomes[1].result == {"a": 1}
    assert box.started == started + 1  # a fresh worker after the kill


def test_ten_gigabytes_is_a_memory_error_not_a_dead_machine(box):
    outcome = one(box, "allocate")
    assert outcome.status == "execution_error" and "MemoryError" in outcome.error


def test_writes_outside_the_working_dir_are_refused(box, tmp_path):
    target = tmp_path / "escaped.txt"
    outcome = one(box, "write_outside", {"path": str(target)})
    assert outcome.status == "execution_error" and "refuses writing" in outcome.error
    assert not target.exists()
    inside = one(box, "write_inside")
    assert inside.ok and inside.result == "fine"


def test_no_network(box):
    outcome = one(box, "connect")
    assert outcome.status == "execution_error" and "socket" in outcome.error


@pytest.mark.parametrize("name", ["shell", "run_process", "fork"])
def test_no_processes(box, name):
    outcome = one(box, name)
    assert outcome.status == "execution_error" and "refuses" in outcome.error
    assert not Path("/tmp/pwned-by-a-tool").exists()


def test_reads_outside_the_allowed_roots_are_refused(box):
    outcome = one(box, "read_secret", {"path": "../../../../etc/passwd"})
    assert outcome.status == "execution_error" and "refuses reading" in outcome.error


def test_a_flood_of_output_cannot_corrupt_the_protocol(box):
    printed = one(box, "print_flood")
    assert printed.ok and printed.result == "printed"
    written = one(box, "write_fd_flood")
    assert written.ok and written.result == "wrote"
    big = one(box, "huge_result")
    assert big.status == "output_too_large" and "10,000,002" in big.error


def test_recursion_and_a_crash(box):
    assert "RecursionError" in one(box, "recurse").error
    assert one(box, "crash").status == "killed"
    assert one(box, "echo", {"x": [1]}).result == {"x": [1]}


def test_a_per_turn_call_cap(box):
    outcomes = Sandbox.run(box, [("echo", {"i": i}) for i in range(box.limits.max_calls + 936)])
    assert sum(o.ok for o in outcomes) == box.limits.max_calls
    assert {o.status for o in outcomes[box.limits.max_calls:]} == {"over_call_cap"}


def test_many_calls_do_not_leak(tmp_path):
    """1,000 calls through one worker: its memory does not grow with them, and no process is left behind."""
    with Sandbox(library_files()["math_units"], Limits(max_calls=2000)) as sandbox:
        outcomes = sandbox.run([("calculate", {"expression": f"{i} * 3"}) for i in range(1000)])
        assert [o.result["result"] for o in outcomes] == [i * 3 for i in range(1000)]
        pid = sandbox.process.pid
        rss = int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])
        assert rss < 100_000  # kB
        sandbox.run([("calculate", {"expression": "1"})] * 1000)
        grown = int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])
        assert grown - rss < 5_000
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not sandbox.workdir.exists()


def test_a_tools_file_that_fails_to_import_is_one_line():
    with pytest.raises(ConfigError) as error:
        Sandbox(DATA / "tools_broken.py").describe()
    message = str(error.value)
    assert "tools_broken.py failed to import" in message and "a_module_that_does_not_exist" in message
    assert "\n" not in message


def test_the_worker_has_no_network_namespace_when_the_kernel_allows():
    if not can_unshare():
        pytest.skip("user namespaces are not allowed here; the audit hook still refuses sockets")
    with Sandbox(HOSTILE) as sandbox:
        sandbox.describe()
        assert os.readlink(f"/proc/{sandbox.process.pid}/ns/net") != os.readlink("/proc/self/ns/net")


TOOL = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"n": {"type": "integer"}, "path": {"type": "string", "maxLength": 100}},
    "required": ["n"], "additionalProperties": False}}}


@pytest.mark.parametrize("arguments, named", [
    ('{"n": "__import__(\'os\').system(\'id\')"}', "n: "),
    ('{"n": 1, "path": "' + "../" * 50 + 'etc/passwd"}', "path: "),
    ('{"n": NaN}', "NaN is not a JSON number"),
    ('{"n": 1, "x": 2}', "Additional properties"),
    ("[1, 2]", "not an object"),
    ('{"n": 1', "not JSON"),
    ('{"n": 1, "path": "' + "a" * 10_000_000 + '"}', "the limit is 65,536"),
    ('{"n": 1, "d": ' + "[" * 5000 + "]" * 5000 + "}", ""),
    ("{}", "'n' is a required property"),
])
def test_hostile_arguments_are_refused_as_data(arguments, named):
    with pytest.raises(CallError) as error:
        check_arguments(TOOL, arguments)
    assert error.value.reason == "bad_arguments" and named in error.value.detail


def test_good_arguments_and_unknown_tools():
    assert check_arguments(TOOL, '{"n": 3}') == {"n": 3}
    assert check_arguments(TOOL, {"n": 3, "path": "a"}) == {"n": 3, "path": "a"}
    with pytest.raises(CallError) as error:
        find_tool([TOOL], "rm_rf")
    assert error.value.reason == "unknown_tool" and "(f)" in error.value.detail


def test_memory_limit_applies_to_the_worker_only():
    before = resource.getrlimit(resource.RLIMIT_AS)
    with Sandbox(HOSTILE, Limits(memory_mb=256)) as sandbox:
        sandbox.describe()
        limits = Path(f"/proc/{sandbox.process.pid}/limits").read_text()
        assert str(256 * 2**20) in limits
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # this process keeps its own
