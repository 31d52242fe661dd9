"""Progress when stderr is not a terminal: few plain lines with units, and a heartbeat."""

import io
import time

from sdeformer._progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _progress(clock, out, **options):
    options = {"every_s": 5.0, "heartbeat_s": 0, "terminal": False, **options}
    return Progress("SDE paths", 1000, "paths", file=out, clock=clock, **options)


def test_plain_lines_at_most_every_few_seconds_with_units():
    clock, out = Clock(), io.StringIO()
    with _progress(clock, out) as bar:
        for _ in range(100):  # 100 updates over 20 s
            clock.now += 0.2
            bar.update(10)
    lines = out.getvalue().splitlines()
    assert 3 <= len(lines) <= 5  # every 5 s, and the last one at 1000/1000
    assert "\r" not in out.getvalue()
    assert lines[-1] == "SDE paths: 1000/1000 paths, 50 paths/s, 20 s"
    assert all("paths/s" in line and "%" not in line for line in lines)


def test_fraction_inside_a_call_counts_items_and_resumed_items_are_not_in_the_rate():
    clock, out = Clock(), io.StringIO()
    with _progress(clock, out, every_s=0.0, start=400) as bar:
        with bar.inside("SDE batch 1/2", 300):
            clock.now = 10.0
            bar.fraction(0.5)  # what diffrax's meter reports: half of [0, T]
        clock.now = 20.0
        bar.fraction(0.9)  # outside a call: ignored
    first, last = out.getvalue().splitlines()
    assert first == "SDE paths: 550/1000 paths, 15 paths/s, 10 s"
    assert last == "SDE paths: 700/1000 paths, 30 paths/s, 10 s"  # the call ended: 300 more


def test_heartbeat_tells_a_stuck_call_from_a_slow_one():
    clock, out = Clock(), io.StringIO()
    bar = _progress(clock, out, heartbeat_s=10.0)
    with bar.inside("SDE batch 1/4 (250 paths)", 250):
        clock.now = 9.0
        assert bar.heartbeat(clock()) is None  # not yet
        clock.now = 12.0
        assert bar.heartbeat(clock()) == (
            "still in SDE batch 1/4 (250 paths), 12 s, last progress 12 s ago (0/1000 paths)"
        )
        bar.fraction(0.4)  # slow but moving: progress resets the heartbeat
        assert bar.heartbeat(clock()) is None
        clock.now = 40.0
        assert "last progress 28 s ago (100/1000 paths)" in bar.heartbeat(clock())


def test_heartbeat_thread_writes_while_the_main_thread_waits():
    out = io.StringIO()
    with Progress("law chain", 10, "layers", file=out, terminal=False, heartbeat_s=0.2) as bar:
        with bar.inside("one compiled call"):
            deadline = time.monotonic() + 10
            while "still in" not in out.getvalue() and time.monotonic() < deadline:
                time.sleep(0.05)
    assert "still in one compiled call" in out.getvalue()
    assert "layers" in out.getvalue()


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    with Progress("x", 3, "steps", enabled=False, file=out, heartbeat_s=0.01) as bar:
        bar.update(3)
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_solve_sde_reports_paths_when_stderr_is_a_file(capsys):
    import jax.numpy as jnp
    import jax.random as jr

    from sdeformer import ShapedConfig
    from sdeformer.sde import solve_sde

    v0 = 0.5 * jnp.eye(3) + 0.5
    kw = dict(T=0.5, num_samples=6, key=jr.key(0), num_steps=20, batch_size=3)
    quiet = solve_sde(ShapedConfig(), v0, **kw)
    loud = solve_sde(ShapedConfig(), v0, **kw, progress=True)
    assert jnp.array_equal(quiet.vs, loud.vs)  # progress does not change the paths
    err = capsys.readouterr().err
    assert "SDE paths: 6/6 paths" in err and "paths/s" in err
    assert "\r" not in err and "%" not in err


def test_law_chain_reports_layers_when_stderr_is_a_file(capsys):
    import jax.numpy as jnp
    import jax.random as jr

    from sdeformer import ShapedConfig
    from sdeformer.compare import finite_source

    v0 = 0.5 * jnp.eye(3) + 0.5
    finite_source(ShapedConfig(), v0, width=8, T=1.0, num_samples=5, key=jr.key(0), progress=True)
    err = capsys.readouterr().err
    assert "law n=8 (law chain): 40/40 layers" in err and "layers/s" in err
