"""Sharded Monte Carlo of a shaped Transformer's covariance paths, on one host or many.

Single process (uses every local device; on CPU fake K devices with
XLA_FLAGS=--xla_force_host_platform_device_count=K):

    python examples/multihost.py --samples 100000 --width 256

Several processes (one per host, or several on one machine to try it; process 0 is the
coordinator, every process runs the same command with its own --process-id):

    python examples/multihost.py --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
    python examples/multihost.py --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 1

Every process computes the same global keys, each computes only its own devices' samples, and
the mean final correlation is gathered to every process (process 0 prints it). The result for a
given --seed does not depend on the number of devices or processes
(`tests/test_sharding.py::test_two_processes_equal_one_process` checks this with two local
processes over CPU on every test run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coordinator", default=None, help="host:port of process 0 (multi-host)")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    parser.add_argument("--width", dest="n", type=int, default=64, help="width n (default: 64)")
    parser.add_argument("--n", dest="n", type=int, help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--T", type=float, default=0.5, help="depth-to-width ratio (default: 0.5)")
    parser.add_argument("--samples", type=int, default=4096, help="networks (default: 4096)")
    parser.add_argument("--method", choices=("law", "explicit"), default="law")
    parser.add_argument("--rho0", type=float, default=0.3, help="input correlation (default: 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    # Before any other JAX call: join the multi-process run (nothing happens without a coordinator).
    from sdeformer.sharding import initialize_multihost

    initialize_multihost(args.coordinator, args.num_processes, args.process_id)

    import jax
    import jax.random as jr
    import numpy as np

    from sdeformer import ShapedConfig
    from sdeformer.rank_collapse import equicorrelated
    from sdeformer.sharding import device_count_note, gather, sharded_covariance_paths

    config = ShapedConfig(gamma=0.4)
    depth = max(1, round(args.T * args.n))
    v0 = equicorrelated(2, args.rho0)
    started = time.perf_counter()
    paths = sharded_covariance_paths(
        config,
        v0,
        width=args.n,
        depth=depth,
        num_samples=args.samples,
        key=jr.key(args.seed),
        method=args.method,
    )
    final = gather(paths[:, -1])  # (samples, m, m) on every process
    seconds = time.perf_counter() - started
    rho = final[:, 0, 1] / np.sqrt(final[:, 0, 0] * final[:, 1, 1])
    report = {
        "devices": device_count_note(),
        "process": jax.process_index(),
        "samples": args.samples,
        "n": args.n,
        "depth": depth,
        "method": args.method,
        "rho_mean": float(rho.mean()),
        "rho_se": float(rho.std(ddof=1) / np.sqrt(rho.size)),
        "seconds": seconds,
    }
    if jax.process_index() == 0:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
