"""Sharded Monte Carlo: the same samples for a given key on 1 or 4 devices, padding, errors.

The equality check runs in one subprocess with 4 fake CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4 must be set before JAX starts), which also
recomputes the samples on one device and runs the multi-host
example single-process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

from sdeformer import ShapedConfig
from sdeformer.sharding import (
    initialize_multihost,
    sample_mesh,
    sharded_covariance_paths,
    sharded_solve_sde,
)

ROOT = Path(__file__).parents[1]

SCRIPT = r"""
import json, sys
import jax, jax.random as jr, numpy as np
from sdeformer import ShapedConfig, law_covariance_paths
from sdeformer.rank_collapse import equicorrelated
from sdeformer.sharding import sharded_covariance_paths, sharded_solve_sde

out = {"devices": jax.device_count()}
config = ShapedConfig(gamma=0.4)
v0 = equicorrelated(2, 0.3)
key = jr.key(7)
# 7 samples on 4 devices: padded to 8, trimmed back to 7.
paths = sharded_covariance_paths(config, v0, width=8, depth=4, num_samples=7, key=key, devices=4)
out["law_shape"] = list(paths.shape)
out["law_devices"] = len(paths.sharding.device_set)
ref = np.stack([np.asarray(law_covariance_paths(config, v0, width=8, depth=4, num_samples=1,
                                                key=k)[0]) for k in jr.split(key, 7)])
out["law_max_diff"] = float(np.abs(np.asarray(paths) - ref).max())
out["law_distinct"] = int(len({float(x) for x in np.asarray(paths)[:, -1, 0, 1]}))
# 6 paths on 4 devices, again with padding.
options = dict(num_steps=20, save_times=3, bound=50.0)
sol = sharded_solve_sde(config, v0, T=0.5, num_samples=6, key=key, devices=4, **options)
one = sharded_solve_sde(config, v0, T=0.5, num_samples=6, key=key, devices=1, **options)
out["sde_shape"] = list(sol.vs.shape)
out["sde_ts"] = np.asarray(sol.ts).tolist()
out["sde_reasons"] = np.asarray(sol.exit_reason).tolist()
diff = 0.0
for name in ("vs", "alive", "exit_time", "exit_reason"):
    a, b = np.asarray(getattr(sol, name)), np.asarray(getattr(one, name))
    diff = max(diff, 0.0 if np.array_equal(a, b) else float(np.nanmax(np.abs(a * 1.0 - b))))
out["sde_max_diff"] = diff
# The multi-host example, single-process (no coordinator): same config and shapes as above.
sys.path.insert(0, "examples")
import multihost
out["example"] = multihost.main(["--samples", "7", "--width", "8", "--T", "0.5", "--seed", "7"])
final = ref[:, -1]
out["example_rho_mean"] = float(np.mean(final[:, 0, 1] / np.sqrt(final[:, 0, 0] * final[:, 1, 1])))
# rank-collapse --devices: the same numbers on 4 devices as on 1 (10 networks: 2 chunks, padded).
import tempfile
from sdeformer.cli import main
tiny = ["--width", "8", "--depth", "3", "--tokens", "3", "--samples", "10", "--kinds", "shaped",
        "--no-progress"]
curves = {}
for devices in (1, 4):
    with tempfile.TemporaryDirectory() as tmp:
        assert main(["rank-collapse", *tiny, "--devices", str(devices), "--out", tmp]) == 0
        curves[devices] = json.load(open(tmp + "/rank_collapse.json"))["curves"]
out["cli_devices_equal"] = curves[1] == curves[4]
out["cli_se"] = curves[4]["shaped"]["mean_correlation_se"][-1]
# compare and sweep-width --devices: the finite sources (law chain, explicit networks) on 4
# devices equal those on 1 (10 samples: padded to 12); the SDE runs on one device either way.
small = ["--tokens", "2", "--T", "0.5", "--steps", "50", "--no-progress", "--json"]
runs = {
    "compare": ["compare", "--width", "8", "--samples", "10", "--explicit-samples", "6",
                "--moment-samples", "0", *small],
    "sweep-width": ["sweep-width", "--widths", "4,8", "--samples", "10", *small],
}
files = {"compare": "compare.json", "sweep-width": "sweep_width.json"}
for name, argv in runs.items():
    reports = {}
    for devices in (1, 4):
        with tempfile.TemporaryDirectory() as tmp:
            assert main([*argv, "--devices", str(devices), "--out", tmp]) == 0
            reports[devices] = json.load(open(tmp + "/" + files[name]))
    keep = "comparisons" if name == "compare" else "rows"
    out[name] = {d: r[keep] for d, r in reports.items()}
print("RESULT", json.dumps(out))
"""

WORKER = r"""
import json, sys
process_id, port = int(sys.argv[1]), sys.argv[2]
from sdeformer.sharding import initialize_multihost
initialize_multihost(f"127.0.0.1:{port}", 2, process_id)
import jax, jax.random as jr, numpy as np
from sdeformer import ShapedConfig
from sdeformer.rank_collapse import equicorrelated
from sdeformer.sharding import gather, sharded_covariance_paths
paths = sharded_covariance_paths(
    ShapedConfig(gamma=0.4), equicorrelated(2, 0.3), width=8, depth=4, num_samples=7,
    key=jr.key(7)
)
out = {"devices": jax.device_count(), "processes": jax.process_count(),
       "local": len(paths.addressable_shards), "paths": np.asarray(gather(paths)).tolist()}
print("RESULT", json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_four_devices_equal_one_device(four_devices):
    """The 4-device law chain equals the unsharded sampler called key by key, bit for bit.

    Sample counts are not divisible by 4 (padding). The 4-device SDE paths equal the 1-device
    sharded run (see docs/scaling.md on why not the unbatched solve_sde call).
    """
    out = four_devices
    assert out["devices"] == 4
    assert out["law_shape"] == [7, 5, 2, 2]
    assert out["law_devices"] == 4
    # Same keys, same program: `_linalg.cov_factor` merges every vmap axis into one stack (one
    # `lax.cond` for the fallback), so a sample factored alone or in a device's vmapped batch
    # runs the same computation. (A batched rule that let the outer vmap batch its `lax.cond`
    # turned it into a select, recompiled the step around an always-run eigendecomposition and
    # moved the paths by a few float32 ulps.) Depth 4 keeps the layer scan a loop in both
    # programs; a loop of one iteration is inlined by XLA and fused with its surroundings,
    # which can move a result by one ulp whatever the factorisation (docs/scaling.md).
    assert out["law_max_diff"] == 0.0
    assert out["law_distinct"] == 7  # the padding did not duplicate samples
    assert out["sde_shape"] == [6, 3, 2, 2]
    assert out["sde_ts"] == [0.0, 0.25, 0.5]
    assert out["sde_max_diff"] == 0.0
    assert out["sde_reasons"] == [0] * 6  # all paths ran to T (a stop would hide a difference)


def test_rank_collapse_devices_do_not_change_the_numbers(four_devices):
    assert four_devices["cli_devices_equal"] is True
    assert four_devices["cli_se"] > 0  # power: the 10 networks differ, so equality means something


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    """jax.distributed over CPU: two local processes (one device each, coordinator on
    127.0.0.1) shard 7 samples between them and gather the same array, bit for bit, as one
    process computes (sample i uses jr.split(key, 7)[i] whatever the process count)."""
    import numpy as np

    from sdeformer.rank_collapse import equicorrelated

    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(pid), port],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=240)
            assert proc.returncode == 0, stderr[-3000:]
            line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
            results.append(json.loads(line[len("RESULT ") :]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    single = np.asarray(
        sharded_covariance_paths(
            ShapedConfig(gamma=0.4),
            equicorrelated(2, 0.3),
            width=8,
            depth=4,
            num_samples=7,
            key=jr.key(7),
            devices=1,
        )
    )
    for out in results:
        assert out["devices"] == 2 and out["processes"] == 2 and out["local"] == 1
        np.testing.assert_array_equal(np.asarray(out["paths"], dtype=np.float32), single)
    assert len({float(x) for x in single[:, -1, 0, 1]}) == 7  # seven distinct samples


def test_multihost_example_runs_single_process(four_devices):
    example = four_devices["example"]
    assert example["devices"] == "4 cpu device(s) over 1 process(es)"
    assert example["samples"] == 7 and example["depth"] == 4
    # Same seed, config and sizes as the law check: the example's statistic is that sample's.
    assert example["rho_mean"] == pytest.approx(four_devices["example_rho_mean"], rel=1e-6)


def test_bad_arguments():
    config = ShapedConfig()
    v0 = jnp.eye(2)
    with pytest.raises(ValueError, match=f"devices={jax.device_count() + 1} is invalid"):
        sample_mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="devices=\\[\\] is invalid"):
        sample_mesh([])
    with pytest.raises(ValueError, match="method='bogus'"):
        sharded_covariance_paths(
            config, v0, width=8, depth=2, num_samples=4, key=jr.key(0), method="bogus"
        )
    with pytest.raises(ValueError, match="num_samples=0"):
        sharded_covariance_paths(config, v0, width=8, depth=2, num_samples=0, key=jr.key(0))
    with pytest.raises(ValueError, match="n=2, m=3"):
        sharded_covariance_paths(config, jnp.eye(3), width=2, depth=2, num_samples=4, key=jr.key(0))
    with pytest.raises(ValueError, match="not symmetric"):
        sharded_covariance_paths(
            config,
            jnp.array([[1.0, 0.5], [0.0, 1.0]]),
            width=8,
            depth=2,
            num_samples=4,
            key=jr.key(0),
        )
    with pytest.raises(ValueError, match="solver"):
        sharded_solve_sde(config, v0, T=1.0, num_samples=4, key=jr.key(0), solver="rk4")
    with pytest.raises(ValueError, match="bound"):
        sharded_solve_sde(config, v0, T=1.0, num_samples=4, key=jr.key(0), bound=float("nan"))
    mesh = jax.sharding.Mesh(jax.devices()[:1], ("batch",))
    with pytest.raises(ValueError, match="one-axis mesh"):
        sharded_covariance_paths(
            config, v0, width=8, depth=2, num_samples=4, key=jr.key(0), devices=mesh
        )


def test_multihost_entry_without_coordinator_is_single_process():
    assert initialize_multihost() is False
    with pytest.raises(ValueError, match="num_processes"):
        initialize_multihost("localhost:1234")
    with pytest.raises(ValueError, match="process_id=2 is invalid"):
        initialize_multihost("localhost:1234", 2, 2)


def test_compare_and_sweep_width_devices_do_not_change_the_numbers(four_devices):
    """`--devices 4` and `--devices 1` give equal JSON numbers for compare and sweep-width.

    One key per finite sample, split on the host whatever the device count (10 samples, padded
    to 12 on 4 devices).
    """
    compare, sweep = four_devices["compare"], four_devices["sweep-width"]
    assert compare["1"] == compare["4"]
    assert sweep["1"] == sweep["4"]
    # Not vacuous: both finite sources ran with their sample counts and differ from each other.
    law, explicit = compare["4"]["law"]["rows"][0], compare["4"]["explicit"]["rows"][0]
    assert (law["size_a"], explicit["size_a"]) == (10, 6)
    assert law["mean_a"] != explicit["mean_a"]
    assert [r["size_finite"] for r in sweep["4"]] == [10, 10]
