"""ReleaseProcessGroupAtExit and release_process_group: the default process group is gone when a worker exits."""
import subprocess
import sys
import textwrap

import torch.distributed as dist

from otlearn.comm import release_process_group

# One process, a one-rank gloo group; ``probe`` is registered with atexit *before* the callback's setup, so it runs
# *after* the callback's handler (atexit is last in, first out) and reports whether the group is still alive.
_EXIT_SCRIPT = textwrap.dedent("""
    import atexit, sys, tempfile
    import torch.distributed as dist
    from otlearn.teardown import ReleaseProcessGroupAtExit

    with_group = sys.argv[1] == "group"
    if with_group:
        dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)

    def probe():
        print("alive at exit:", dist.is_initialized(), flush=True)

    atexit.register(probe)
    before = atexit._ncallbacks()
    callback = ReleaseProcessGroupAtExit()
    for _ in range(3):  # several trainers in one process register one handler
        callback.setup(trainer=None, pl_module=None, stage="fit")
    ReleaseProcessGroupAtExit().setup(trainer=None, pl_module=None, stage="test")
    print("handlers added:", atexit._ncallbacks() - before, flush=True)
""")


def _run(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_group_is_destroyed_at_exit_by_one_handler_however_many_setups():
    out = _run("group")
    assert "handlers added: 1" in out, out
    assert "alive at exit: False" in out, out


def test_a_process_without_a_group_registers_nothing():
    out = _run("none")
    assert "handlers added: 0" in out, out
    assert "alive at exit: False" in out, out


def test_release_without_a_group_is_a_no_op():
    assert not dist.is_initialized()
    release_process_group()
    release_process_group()
    assert not dist.is_initialized()
