"""Monte Carlo over several devices (and hosts) with `jax.sharding`: a mesh over the sample axis.

Every sampler of the package (the explicit network, the exact law chain, the covariance SDE)
draws independent samples, so the work splits over devices along the sample axis with no
communication. The functions here:

1. split `key` into `num_samples` keys on the host, `keys = jr.split(key, num_samples)`;
2. pad the keys to a multiple of the device count (copies of the first key) and place them on a
   one-axis `Mesh` named "samples" (`NamedSharding(mesh, PartitionSpec("samples"))`);
3. run, under `jax.shard_map`, each device's keys through the single-sample sampler, `batch_size`
   samples at a time (`lax.map`), and trim the padding.

Sample i is always `sampler(..., num_samples=1, key=keys[i])[0]`, whatever the number of
devices: the result for a given key does not depend on the device count (the tests check 1, 2
and 4 devices against each other and against the unsharded call). It is *not* the same array as
the unsharded `law_covariance_paths(..., num_samples, key=key)`, which derives its per-sample keys
differently; both are exact samples of the same law.

Multi-host: call `initialize_multihost(...)` (`jax.distributed.initialize`) in every process
before anything else touches JAX; the mesh then spans every process's devices
(`jax.devices()`), every process computes the same global keys and passes the same arguments,
and each computes only its own shards. Results are global `jax.Array`s; `gather` brings one to
every host as NumPy. See `examples/multihost.py` and `docs/scaling.md`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._convention import check_sampler_sizes, follows_convention
from .config import ShapedConfig, check_covariance, check_width
from .finite import METHODS, default_sampler_batch, sample_covariance_paths
from .sde import SDESolution, solve_sde

AXIS = "samples"
"""Name of the mesh axis the samples are sharded over."""


def sample_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named "samples" over `devices`.

    `devices`: None (all devices of all processes, `jax.devices()`), an int k (the first k), or
    a sequence of devices.
    """
    available = jax.devices()
    if devices is None:
        chosen = list(available)
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices={devices} is invalid: {len(available)} device(s) are visible "
                f"({available[0].platform}); pass 1..{len(available)} or None for all (on CPU, "
                "XLA_FLAGS=--xla_force_host_platform_device_count=K makes K devices)"
            )
        chosen = list(available[:devices])
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices=[] is invalid: pass at least one device")
    return Mesh(np.array(chosen), (AXIS,))


def initialize_multihost(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs,
) -> bool:
    """Join a multi-process JAX run (`jax.distributed.initialize`); single-process without one.

    With `coordinator_address` ("host:port" of process 0) every process calls this with the same
    address and `num_processes`, and its own `process_id`, before any other JAX call. Without it
    (and without the cluster environment variables that `jax.distributed.initialize` detects on
    its own, such as SLURM's) nothing happens and the run is single-process. Returns True when
    the distributed runtime was started. Extra keyword arguments go to
    `jax.distributed.initialize` (e.g. `local_device_ids`).
    """
    if coordinator_address is None:
        return False
    if num_processes is None or process_id is None:
        raise ValueError(
            "initialize_multihost: with a coordinator_address, pass num_processes and this "
            "process's process_id (0 .. num_processes - 1)"
        )
    num_processes = check_width(num_processes, name="num_processes")
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(
            f"initialize_multihost: process_id={process_id!r} is invalid; pass 0 .. "
            f"{num_processes - 1}"
        )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    return True


def gather(x) -> np.ndarray | object:
    """A (possibly multi-host) sharded result as host NumPy, the whole of it on every process.

    Works on arrays and on pytrees of arrays (e.g. an `SDESolution`).
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return jax.tree_util.tree_map(
            lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), x
        )
    return jax.tree_util.tree_map(np.asarray, x)


def _global_keys(key: PRNGKeyArray, num_samples: int, mesh: Mesh):
    """Split `key` into num_samples keys, pad to a multiple of the mesh size, shard them."""
    size = mesh.devices.size
    padded = math.ceil(num_samples / size) * size
    keys = jr.split(key, num_samples)
    data = np.asarray(jr.key_data(keys))
    if padded > num_samples:  # padding: copies of key 0, computed and thrown away
        data = np.concatenate([data, np.repeat(data[:1], padded - num_samples, axis=0)])
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    # Every process holds the same host array and contributes its addressable shards.
    global_data = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
    return global_data, jr.key_impl(keys), padded


def _shard_run(one_sample, args, key_data, mesh, impl, batch, num_samples):
    """Traceable body: shard the key data over the mesh, lax.map each device's keys."""

    def shard(key_data, args):
        keys = jr.wrap_key_data(key_data, impl=impl)
        return jax.lax.map(lambda k: one_sample(k, *args), keys, batch_size=batch)

    spec = PartitionSpec(AXIS)
    out = jax.shard_map(
        shard, mesh=mesh, in_specs=(spec, PartitionSpec()), out_specs=spec, check_vma=False
    )(key_data, args)
    return jax.tree_util.tree_map(lambda a: a[:num_samples], out)


_shard_run_jit = jax.jit(
    _shard_run, static_argnames=("one_sample", "mesh", "impl", "batch", "num_samples")
)


def _layout(num_samples, key, devices, batch_size):
    num_samples = check_width(num_samples, name="num_samples")
    mesh = devices if isinstance(devices, Mesh) else sample_mesh(devices)
    if mesh.axis_names != (AXIS,):
        raise ValueError(f"the mesh has axes {mesh.axis_names}; pass a one-axis mesh ({AXIS!r},)")
    data, impl, padded = _global_keys(key, num_samples, mesh)
    local = padded // mesh.devices.size
    batch = local if batch_size is None else min(check_width(batch_size, name="batch_size"), local)
    return num_samples, mesh, data, impl, batch


def map_over_samples(
    one_sample: Callable,
    num_samples: int,
    *,
    key: PRNGKeyArray,
    args: tuple = (),
    devices: int | Sequence[jax.Device] | Mesh | None = None,
    batch_size: int | None = None,
):
    """Run `one_sample(key_i, *args)` for i < num_samples, sharded over the devices.

    `keys = jr.split(key, num_samples)`; output leaves have shape (num_samples, ...), leading
    axis split over the "samples" axis of the mesh. `args` (a pytree of arrays) is replicated on
    every device. Each device runs its keys `batch_size` at a time (`lax.map`; default: all at
    once under vmap). `one_sample` must be jit-able and hashable: a module-level function (or
    another stable callable) is compiled once per shape, a fresh lambda every call.
    """
    num_samples, mesh, data, impl, batch = _layout(num_samples, key, devices, batch_size)
    return _shard_run_jit(one_sample, args, data, mesh, impl, batch, num_samples)


class _PathSampler(eqx.Module):
    """One covariance path of `sample_covariance_paths` (hashable: a static jit argument)."""

    config: ShapedConfig = eqx.field(static=True)
    n: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    method: str = eqx.field(static=True)

    def __call__(self, sample_key, v0):
        return sample_covariance_paths(
            self.config,
            v0,
            width=self.n,
            depth=self.depth,
            num_samples=1,
            key=sample_key,
            method=self.method,
        )[0]


class _SDEPath(eqx.Module):
    """One path of `solve_sde` (hashable: options are a sorted tuple, arrays as tuples)."""

    config: ShapedConfig = eqx.field(static=True)
    T: float = eqx.field(static=True)
    options: tuple = eqx.field(static=True)

    def __call__(self, path_key, v0):
        options = dict(self.options)
        if isinstance(options.get("save_times"), tuple):
            options["save_times"] = np.asarray(options["save_times"])
        sol = solve_sde(self.config, v0, T=self.T, num_samples=1, key=path_key, **options)
        return sol.ts, sol.vs[0], sol.alive[0], sol.exit_time[0], sol.exit_reason[0]


@follows_convention
def sharded_covariance_paths(
    config: ShapedConfig,
    v0: ArrayLike,
    *,
    width: int,
    depth: int | None = None,
    T: float | None = None,
    num_samples: int,
    key: PRNGKeyArray,
    method: str = "law",
    devices: int | Sequence[jax.Device] | Mesh | None = None,
    batch_size: int | None = None,
) -> Float[Array, "samples layers m m"]:
    """`sample_covariance_paths` sharded over devices: (num_samples, depth + 1, m, m).

    Same arguments as `sdeformer.sample_covariance_paths` (`method` "law" or "explicit") plus
    `devices` (None: all devices of all processes; an int k: the first k; a list of devices; or
    a `Mesh` with one axis named "samples"). Sample i equals
    `sample_covariance_paths(config, v0, width=width, depth=depth, num_samples=1,
    key=jr.split(key, num_samples)[i], method=method)[0]` for any number of devices.
    `batch_size` samples run at once per device (default: as many as fit 256 MiB, as for the
    unsharded samplers). num_samples need not be a
    multiple of the device count (the keys are padded and the padding is dropped).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is invalid; choose one of {METHODS}")
    n, depth, num_samples, v0 = check_sampler_sizes(width, depth, T, num_samples, v0)
    # The full host-side validation (width vs tokens, missing law faces, ...), abstractly.
    jax.eval_shape(
        lambda k: sample_covariance_paths(
            config, v0, width=n, depth=depth, num_samples=1, key=k, method=method
        ),
        key,
    )
    if batch_size is None:
        batch_size = default_sampler_batch(method, config, n, v0.shape[-1])
    return map_over_samples(
        _PathSampler(config, n, depth, method),
        num_samples,
        key=key,
        args=(v0,),
        devices=devices,
        batch_size=batch_size,
    )


@follows_convention
def sharded_solve_sde(
    config: ShapedConfig,
    v0: ArrayLike,
    *,
    T: float,
    num_samples: int,
    key: PRNGKeyArray,
    devices: int | Sequence[jax.Device] | Mesh | None = None,
    batch_size: int | None = None,
    **solver_options,
) -> SDESolution:
    """`solve_sde` sharded over devices: the same `SDESolution`, paths split over the mesh.

    `solver_options` are those of `sdeformer.solve_sde` (save_times, num_steps, dt0, solver,
    bound, width, ...). Path i equals path 0 of
    `solve_sde(config, v0, T=T, num_samples=1, key=jr.split(key, num_samples)[i], ...)` for
    any number of devices. `batch_size` paths run at once per device (default: all of a
    device's paths).
    """
    v0 = check_covariance(v0)
    # Validate the options on the host once (abstractly), so errors come before any sharding.
    jax.eval_shape(
        lambda k: solve_sde(config, v0, T=T, num_samples=1, key=k, **solver_options), key
    )
    options = dict(solver_options)
    if options.get("save_times") is not None and not isinstance(options["save_times"], int):
        options["save_times"] = tuple(float(t) for t in np.asarray(options["save_times"]).ravel())
    if options.get("dtype") is not None:
        options["dtype"] = np.dtype(options["dtype"]).name
    ts, vs, alive, exit_time, reason = map_over_samples(
        _SDEPath(config, float(T), tuple(sorted(options.items()))),
        num_samples,
        key=key,
        args=(v0,),
        devices=devices,
        batch_size=batch_size,
    )
    return SDESolution(ts=ts[0], vs=vs, alive=alive, exit_time=exit_time, exit_reason=reason)


def device_count_note() -> str:
    """One line on the devices JAX sees (for logs and reports)."""
    devices = jax.devices()
    return f"{len(devices)} {devices[0].platform} device(s) over {jax.process_count()} process(es)"
