"""The `sdeformer` command line: `sdeformer --help` lists the commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from .config import BLOCK_NAMES, ShapedConfig
from .results import ResultsError

CONFIG_HELP = {
    "tau0": "attention temperature factor tau0 (logits divided by tau0 sqrt(n n_k))",
    "gamma": "residual branch weight gamma in (0, 1); the skip weight is sqrt(1 - gamma^2)",
    "c_plus": "shaped ReLU: slope 1 + c_plus/sqrt(n) for positive inputs",
    "c_minus": "shaped ReLU: slope 1 + c_minus/sqrt(n) for negative inputs",
    "heads": "number of attention heads",
    "key_width": "key/query width n_k (absolute; default n_k = n)",
    "key_ratio": "key/query width as a ratio n_k / n",
    "mlp_ratio": "MLP hidden width ratio r = n_h / n",
    "out_proj": "use an output projection Wo after concatenating the heads",
    "causal": "causal attention (token i sees tokens j <= i)",
    "blocks": f"comma-separated block pattern of one layer, from {','.join(BLOCK_NAMES)}",
}


def add_config_arguments(parser: argparse.ArgumentParser, defaults: ShapedConfig) -> None:
    """One option per ShapedConfig field (--tau0, --gamma, ..., --blocks attention,mlp)."""
    group = parser.add_argument_group("model configuration (ShapedConfig)")
    for field in dataclasses.fields(ShapedConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = f"{CONFIG_HELP[field.name]} (default: {default})"
        if field.name in ("out_proj", "causal"):
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif field.name == "blocks":
            group.add_argument(flag, default=",".join(default), help=help_text)
        elif field.name in ("heads", "key_width"):
            group.add_argument(flag, type=int, default=default, help=help_text)
        else:
            group.add_argument(flag, type=float, default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> ShapedConfig:
    """The validated ShapedConfig of the parsed options (ValueError names a bad value)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ShapedConfig)}
    values["blocks"] = tuple(b.strip() for b in values["blocks"].split(",") if b.strip())
    return ShapedConfig(**values)


def add_run_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """Options every long-running command shares."""
    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    group.add_argument("--out", default=out, help=f"output directory (default: {out})")
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="discard results already in --out instead of resuming from them",
    )
    group.add_argument(
        "--json", action="store_true", help="print the JSON report to stdout instead of a table"
    )
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    group.add_argument(
        "--float64", action="store_true", help="compute in float64 (enables jax_enable_x64)"
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _progress(total: int, desc: str, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, leave=False)


def _setup_precision(args: argparse.Namespace):
    import jax
    import jax.numpy as jnp

    if args.float64:
        jax.config.update("jax_enable_x64", True)
        return jnp.float64
    return jnp.float32


def _markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- rank-collapse


def _add_rank_collapse(sub) -> None:
    parser = sub.add_parser(
        "rank-collapse",
        help="token correlations with depth: shaped vs unshaped attention vs Pre-LN at init",
        description=(
            "Monte Carlo over freshly initialised explicit networks of the mean token "
            "correlation, stable rank and smallest correlation eigenvalue per layer, for the "
            "shaped Transformer, the same network with unshaped Softmax attention, and a "
            "standard Pre-LN Transformer. "
            "Writes a JSON report and a PNG figure; resumes model kinds already computed."
        ),
    )
    add_config_arguments(parser, ShapedConfig())
    group = parser.add_argument_group("experiment")
    group.add_argument("--n", type=positive_int, default=128, help="width n (default: 128)")
    group.add_argument("--depth", type=positive_int, default=256, help="depth d (default: 256)")
    group.add_argument("--tokens", type=positive_int, default=8, help="tokens m (default: 8)")
    group.add_argument(
        "--rho0", type=float, default=0.3, help="input token correlation (default: 0.3)"
    )
    group.add_argument(
        "--samples", type=positive_int, default=32, help="networks per model kind (default: 32)"
    )
    group.add_argument(
        "--kinds",
        default="shaped,unshaped,preln",
        help="comma-separated model kinds from shaped,unshaped,preln (default: all three)",
    )
    add_run_arguments(parser, "results/rank_collapse")
    parser.set_defaults(func=rank_collapse_command)


def rank_collapse_command(args: argparse.Namespace) -> int:
    import jax.random as jr
    import numpy as np

    from . import plot
    from .model import explicit_covariance_paths
    from .rank_collapse import MODEL_KINDS, collapse_summary, equicorrelated, kind_config
    from .results import ResultStore, write_json

    dtype = _setup_precision(args)
    base = config_from_args(args)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for kind in kinds:
        if kind not in MODEL_KINDS:
            raise ValueError(
                f"--kinds: unknown model kind {kind!r}; choose from {list(MODEL_KINDS)}"
            )
    if args.tokens < 2:
        raise ValueError(f"--tokens {args.tokens}: need at least 2 tokens")
    v0 = equicorrelated(args.tokens, args.rho0, dtype)
    settings = {
        "config": base.to_dict(),
        "n": args.n,
        "depth": args.depth,
        "tokens": args.tokens,
        "rho0": args.rho0,
        "samples": args.samples,
        "seed": args.seed,
        "float64": args.float64,
    }
    out = Path(args.out)
    store = ResultStore(out, "rank-collapse", settings, overwrite=args.overwrite)
    chunk = min(args.samples, 8)
    chunks = -(-args.samples // chunk)
    started = time.perf_counter()
    curves = {}
    with _progress(len(kinds) * chunks, "rank-collapse", args.no_progress) as bar:
        for index, kind in enumerate(kinds):
            if store.has(kind):
                curves[kind] = store.load(kind)
                bar.update(chunks)
                continue
            cfg = kind_config(base, kind)
            kind_key = jr.fold_in(jr.key(args.seed), index)
            parts = []
            for c in range(chunks):
                size = min(chunk, args.samples - c * chunk)
                paths = explicit_covariance_paths(
                    cfg, args.n, args.depth, v0, size, key=jr.fold_in(kind_key, c)
                )
                parts.append(np.asarray(paths))
                bar.update(1)
            summary = collapse_summary(np.concatenate(parts))
            curves[kind] = {k: v.tolist() for k, v in summary.items()}
            store.save(kind, curves[kind])
    elapsed = time.perf_counter() - started
    figure = plot.save_figure(
        plot.rank_collapse_figure(curves, n=args.n), out / "rank_collapse.png"
    )
    marks = sorted({0, args.depth // 4, args.depth // 2, args.depth})
    report = {
        "command": "rank-collapse",
        "settings": settings,
        "seconds": elapsed,
        "layers_reported": marks,
        "curves": curves,
        "figure": str(figure),
    }
    report_path = write_json(out / "rank_collapse.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    rows = []
    for kind, curve in curves.items():
        for layer in marks:
            rows.append(
                [
                    kind,
                    layer,
                    layer / args.n,
                    curve["mean_correlation_mean"][layer],
                    curve["mean_correlation_se"][layer],
                    curve["stable_rank_mean"][layer],
                    curve["min_eigenvalue_mean"][layer],
                ]
            )
    print(
        _markdown_table(
            ["model", "layer", "t", "mean rho", "+-se", "stable rank", "min eig(rho)"], rows
        )
    )
    print(f"\n{args.samples} networks per model, n={args.n}, depth={args.depth}: {elapsed:.1f} s")
    print(f"results written to {report_path} and {figure}")
    return 0


# ------------------------------------------------------------------------------------------- ntk


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_ntk(sub) -> None:
    parser = sub.add_parser(
        "ntk",
        help="NTK and GD convergence of the shallow encoder (Wu, Liu, Chrysos, Cevher 2023)",
        description=(
            "For each width, logit scaling and initialisation: the empirical NTK at "
            "initialisation (smallest eigenvalue; distance to the uniform-attention kernel over "
            "several initialisations), then full-batch gradient descent on the squared loss "
            "(loss curve, fitted linear rate, weight and NTK movement). Prints a table, writes a "
            "JSON report and three PNG figures; resumes the (width, scaling, init) units already "
            "computed."
        ),
    )
    group = parser.add_argument_group("experiment")
    group.add_argument("--widths", default="32,64,128,256,512", help="comma-separated widths d_m")
    group.add_argument(
        "--scalings",
        default="sqrt,linear",
        help="comma-separated logit scalings: sqrt (tau0 = d_m^-1/2), linear (tau0 = d_m^-1) "
        "or a number (tau0 itself) (default: sqrt,linear)",
    )
    group.add_argument(
        "--inits", default="lecun,he,ntk", help="comma-separated inits from lecun,he,ntk"
    )
    group.add_argument(
        "--data", default="digits", help="digits (scikit-learn, 8 tokens x 8) or synthetic"
    )
    group.add_argument("--samples", type=positive_int, default=48, help="inputs N (default: 48)")
    group.add_argument(
        "--seeds",
        type=positive_int,
        default=4,
        help="initialisations per unit for the kernel comparison (default: 4)",
    )
    group.add_argument("--steps", type=positive_int, default=200, help="GD steps (default: 200)")
    group.add_argument(
        "--lr-factor",
        type=float,
        default=1.0,
        help="step size lr = lr_factor * N / lambda_max(K_0), in (0, 2) (default: 1)",
    )
    group.add_argument(
        "--checkpoints",
        type=positive_int,
        default=4,
        help="times during training at which the NTK is recomputed (default: 4)",
    )
    group.add_argument(
        "--strategy",
        default="auto",
        help="empirical NTK strategy: auto, jacobian, blocked, implicit (default: auto)",
    )
    add_run_arguments(parser, "results/ntk")
    parser.set_defaults(func=ntk_command)


def ntk_command(args: argparse.Namespace) -> int:
    import jax.random as jr

    from . import plot
    from .ntk import INITS, SCALINGS, STRATEGIES, fit_loglog, load_data, run_unit
    from .results import ResultStore, write_json

    dtype = _setup_precision(args)
    try:
        widths = [int(w) for w in _csv(args.widths)]
    except ValueError as err:
        raise ValueError(f"--widths {args.widths!r}: pass integers like 32,64,128") from err
    if not widths or min(widths) < 1:
        raise ValueError(f"--widths {args.widths!r}: pass at least one integer >= 1")
    scalings: list[str | float] = []
    for text in _csv(args.scalings):
        try:
            scalings.append(text if text in SCALINGS else float(text))
        except ValueError as err:
            raise ValueError(
                f"--scalings: {text!r} is neither {' nor '.join(SCALINGS)} nor a number"
            ) from err
    inits = _csv(args.inits)
    for init in inits:
        if init not in INITS:
            raise ValueError(f"--inits: unknown init {init!r}; choose from {list(INITS)}")
    if args.strategy not in STRATEGIES:
        raise ValueError(f"--strategy {args.strategy!r}: choose from {list(STRATEGIES)}")
    if not 0 < args.lr_factor < 2:
        raise ValueError(f"--lr-factor {args.lr_factor}: must lie in (0, 2) for stable GD")
    if args.checkpoints > args.steps:
        raise ValueError(f"--checkpoints {args.checkpoints}: must not exceed --steps")
    settings = {
        "widths": widths,
        "scalings": scalings,
        "inits": inits,
        "data": args.data,
        "samples": args.samples,
        "seeds": args.seeds,
        "steps": args.steps,
        "lr_factor": args.lr_factor,
        "checkpoints": args.checkpoints,
        "strategy": args.strategy,
        "seed": args.seed,
        "float64": args.float64,
    }
    root = jr.key(args.seed)
    xs, ys = load_data(args.data, args.samples, key=jr.fold_in(root, 0), dtype=dtype)
    out = Path(args.out)
    store = ResultStore(out, "ntk", settings, overwrite=args.overwrite)
    plan = [(w, s, i) for w in widths for s in scalings for i in inits]
    started = time.perf_counter()
    units = []
    with _progress(len(plan), "ntk", args.no_progress) as bar:
        for width, scaling, init in plan:
            name = f"w{width}_{scaling}_{init}"
            if not store.has(name):
                # One key per width: every scaling and init starts from the same normals.
                unit = run_unit(
                    xs,
                    ys,
                    width,
                    scaling=scaling,
                    init=init,
                    key=jr.fold_in(jr.fold_in(root, 1), width),
                    seeds=args.seeds,
                    steps=args.steps,
                    lr_factor=args.lr_factor,
                    checkpoints=args.checkpoints,
                    strategy=args.strategy,
                )
                store.save(name, unit)
            units.append(store.load(name))
            bar.update(1)
    elapsed = time.perf_counter() - started
    fits = {}
    for scaling in scalings:
        for init in inits:
            group = sorted(
                (u for u in units if u["scaling"] == scaling and u["init"] == init),
                key=lambda u: u["width"],
            )
            fits[f"{scaling}/{init}"] = fit_loglog(
                [u["width"] for u in group], [u["kernel_errors"] for u in group]
            )
    figures = {
        "eigenvalues": plot.save_figure(plot.ntk_eigenvalue_figure(units), out / "ntk_eig.png"),
        "losses": plot.save_figure(plot.ntk_loss_figure(units), out / "ntk_loss.png"),
        "kernel_error": plot.save_figure(
            plot.ntk_kernel_error_figure(units, fits), out / "ntk_kernel_error.png"
        ),
    }
    headers = [
        "scaling",
        "init",
        "d_m",
        "lam_min",
        "lam_min/scale",
        "K err",
        "lr",
        "rate",
        "+-",
        "pred. rate",
        "loss_T",
        "dW",
        "dK",
    ]
    rows = []
    for u in units:
        fit = u["rate_fit"]
        rows.append(
            [
                str(u["scaling"]),
                u["init"],
                u["width"],
                u["lambda_min"],
                u["lambda_min_normalised"],
                sum(u["kernel_errors"]) / len(u["kernel_errors"]),
                u["lr"],
                fit["rate"] if fit["rate"] is not None else "-",
                fit["slope_se"] if fit["slope_se"] is not None else "-",
                u["predicted_rate"],
                u["losses"][-1],
                u["weight_change"],
                u["ntk_change"][-1],
            ]
        )
    report = {
        "command": "ntk",
        "settings": settings,
        "seconds": elapsed,
        "kernel_error_fits": fits,
        "table": {"headers": headers, "rows": rows},
        "units": units,
        "figures": {k: str(v) for k, v in figures.items()},
    }
    report_path = write_json(out / "ntk.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    print(_markdown_table(headers, rows))
    print("\nkernel error ||K - Kbar||_F/||Kbar||_F ~ d_m^slope (Kbar: uniform attention):")
    for name, fit in fits.items():
        if fit["slope"] is not None:
            print(f"  {name}: slope {fit['slope']:.3f} +- {fit['slope_se']:.3f}")
    print(f"\n{len(plan)} units, N={args.samples} {args.data} inputs: {elapsed:.1f} s")
    print(f"results written to {report_path} and {out}/ntk_*.png")


# --------------------------------------------------------------------------- train, train-sweep

_TRAIN_CONFIG_FIELDS = (
    "tau0", "gamma", "c_plus", "c_minus", "heads", "key_width", "key_ratio", "mlp_ratio",
    "out_proj",
)  # fmt: skip


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Data, model and optimiser options shared by `train` and `train-sweep`."""
    from .train.data import DATASETS
    from .train.lm import POSITIONS
    from .train.loop import LR_SCHEDULES, OPTIMIZERS

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        choices=DATASETS,
        default="stdlib",
        help="stdlib: the Python standard library's sources as bytes (split by file); file: "
        "--text-file; copy, recall: synthetic tasks (default: stdlib)",
    )
    data.add_argument("--text-file", default=None, help="text file for --data file")
    data.add_argument(
        "--max-bytes",
        type=positive_int,
        default=2_000_000,
        help="size cap of the byte corpus (default: 2000000)",
    )
    data.add_argument(
        "--val-fraction", type=float, default=0.1, help="validation share (default: 0.1)"
    )
    data.add_argument(
        "--vocab", type=positive_int, default=None, help="vocabulary of the synthetic tasks"
    )
    model = parser.add_argument_group("language model")
    model.add_argument("--width", type=positive_int, default=64, help="width n (default: 64)")
    model.add_argument("--depth", type=positive_int, default=4, help="layers (default: 4)")
    model.add_argument(
        "--seq-len", type=positive_int, default=64, help="tokens per sequence (default: 64)"
    )
    model.add_argument(
        "--positions", choices=POSITIONS, default="sinusoidal", help="(default: sinusoidal)"
    )
    model.add_argument(
        "--recover-start",
        type=float,
        default=0.0,
        help="shaped-recover: fraction of the run where the annealing starts (default: 0)",
    )
    model.add_argument(
        "--recover-end",
        type=float,
        default=0.5,
        help="shaped-recover: fraction of the run where the model is standard (default: 0.5)",
    )
    defaults = ShapedConfig()
    for name in _TRAIN_CONFIG_FIELDS:
        flag = "--" + name.replace("_", "-")
        help_text = f"shaped model: {CONFIG_HELP[name]} (default: {getattr(defaults, name)})"
        if name == "out_proj":
            model.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif name in ("heads", "key_width"):
            model.add_argument(flag, type=int, default=getattr(defaults, name), help=help_text)
        else:
            model.add_argument(flag, type=float, default=getattr(defaults, name), help=help_text)
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=positive_int, default=250, help="(default: 250)")
    opt.add_argument("--batch-size", type=positive_int, default=16, help="(default: 16)")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="(default: adamw)")
    opt.add_argument("--schedule", choices=LR_SCHEDULES, default="cosine", help="(default: cosine)")
    opt.add_argument("--warmup", type=int, default=25, help="warm-up steps (default: 25)")
    opt.add_argument(
        "--clip", type=float, default=1.0, help="global gradient-norm clip, 0: none (default: 1)"
    )
    opt.add_argument("--weight-decay", type=float, default=0.0, help="(default: 0)")
    opt.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    opt.add_argument(
        "--eval-every", type=positive_int, default=50, help="steps between evaluations"
    )
    opt.add_argument(
        "--eval-batch-size", type=positive_int, default=64, help="validation sequences"
    )


def _train_setup(args: argparse.Namespace):
    """(ModelSpec, TrainConfig, train task, val task, data summary) of the parsed options."""
    from .train.data import make_tasks
    from .train.loop import TrainConfig
    from .train.sweep import ModelSpec

    if args.float64:
        raise ValueError("--float64: training runs in float32 only; drop --float64")
    values = {name: getattr(args, name) for name in _TRAIN_CONFIG_FIELDS}
    if values["out_proj"] is None:
        values["out_proj"] = False
    config = ShapedConfig(**values)
    train_task, val_task, info = make_tasks(
        args.data,
        args.seq_len,
        max_bytes=args.max_bytes,
        val_fraction=args.val_fraction,
        path=args.text_file,
        vocab=args.vocab,
    )
    spec = ModelSpec(
        width=args.width,
        depth=args.depth,
        vocab=train_task.vocab,
        seq_len=args.seq_len,
        positions=args.positions,
        config=config,
        recover_start=args.recover_start,
        recover_end=args.recover_end,
    )
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=getattr(args, "lr", 1e-2),
        schedule=args.schedule,
        warmup=args.warmup,
        clip=args.clip or None,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        eval_every=args.eval_every,
        eval_batch_size=args.eval_batch_size,
    )
    return spec, cfg, train_task, val_task, info


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: pass comma-separated numbers") from err
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: pass positive learning rates")
    return values


def _kind_list(text: str) -> list[str]:
    from .train.loop import MODEL_KINDS

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for kind in kinds:
        if kind not in MODEL_KINDS:
            raise argparse.ArgumentTypeError(
                f"unknown model kind {kind!r}; choose from {','.join(MODEL_KINDS)}"
            )
    return kinds


def _add_train(sub) -> None:
    from .train.loop import MODEL_KINDS

    parser = sub.add_parser(
        "train",
        help="train one causal language model (shaped or Pre-LN) and report its losses",
        description=(
            "Train one causal language model with optax and log the training loss, gradient "
            "norm, validation loss and the last layer's token correlation. Model kinds: "
            + ", ".join(MODEL_KINDS)
            + " (shaped-recover anneals the shaping away, shaped-learn trains it; see "
            "docs/training.md). A run whose loss turns NaN/Inf stops and is reported as diverged."
        ),
    )
    parser.add_argument("--kind", choices=tuple(MODEL_KINDS), default="shaped")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (default: 0.01)")
    _add_train_arguments(parser)
    add_run_arguments(parser, "results/train")
    parser.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    from .results import ResultStore, write_json
    from .train.sweep import run_one

    spec, cfg, train_task, val_task, info = _train_setup(args)
    settings = {
        "kind": args.kind,
        "model": spec.to_dict(),
        "train": cfg.to_dict(),
        "data": info,
        "seed": args.seed,
    }
    out = Path(args.out)
    store = ResultStore(out, "train", settings, overwrite=args.overwrite)
    if store.has("run"):
        result = store.load("run")
    else:
        with _progress(1, f"train {args.kind}", args.no_progress) as bar:
            result = run_one(spec, args.kind, cfg, train_task, val_task, args.seed)
            bar.update(1)
        store.save("run", result)
    report = {"command": "train", "settings": settings, "result": result}
    report_path = write_json(out / "train.json", report)
    if args.json:
        print(json.dumps(report))
        return 0
    evals = {e["step"]: e for e in result["evals"]}
    rows = []
    for record in result["history"]:
        e = evals.get(record["step"], {})
        rows.append(
            [
                record["step"],
                record["loss"],
                record["grad_norm"],
                record["lr"],
                e.get("val_loss", ""),
                e.get("token_correlation", ""),
            ]
        )
    for step, e in evals.items():
        if step >= result["steps_done"]:
            rows.append([step, "", "", "", e["val_loss"], e["token_correlation"]])
    print(
        _markdown_table(
            ["step", "train loss", "grad norm", "lr", "val loss", "token corr (last layer)"], rows
        )
    )
    status = f"DIVERGED at step {result['diverged_at']}" if result["diverged"] else "finished"
    print(
        f"\n{args.kind}, lr={cfg.lr:g}: {status}; final val loss {result['final_val_loss']}; "
        f"{result['tokens_per_second']:.0f} tokens/s; data {info['source']}"
    )
    print(f"results written to {report_path}")
    return 0


def _add_train_sweep(sub) -> None:
    from .train.loop import MODEL_KINDS

    parser = sub.add_parser(
        "train-sweep",
        help="learning-rate sweep: final validation loss of shaped vs Pre-LN Transformers",
        description=(
            "Train every (model kind, learning rate, seed) and compare the final validation "
            "losses; each finished run is saved at once, so an interrupted sweep resumes. "
            "Writes a JSON report and a figure of validation loss against learning rate."
        ),
    )
    parser.add_argument(
        "--kinds",
        type=_kind_list,
        default=list(MODEL_KINDS),
        help=f"comma-separated model kinds (default: {','.join(MODEL_KINDS)})",
    )
    parser.add_argument(
        "--lrs",
        type=_float_list,
        default=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        help="comma-separated peak learning rates (default: 0.003,0.01,0.03,0.1,0.3,1)",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=1, help="seeds per setting: 0..k-1 (default: 1)"
    )
    _add_train_arguments(parser)
    add_run_arguments(parser, "results/train_sweep")
    parser.set_defaults(func=train_sweep_command)


def train_sweep_command(args: argparse.Namespace) -> int:
    from . import plot
    from .results import ResultStore, write_json
    from .train.sweep import best_lr, run_sweep, summarise

    spec, cfg, train_task, val_task, info = _train_setup(args)
    seeds = [args.seed + i for i in range(args.seeds)]
    settings = {
        "kinds": args.kinds,
        "lrs": args.lrs,
        "seeds": seeds,
        "model": spec.to_dict(),
        "train": cfg.to_dict(),
        "data": info,
    }
    out = Path(args.out)
    store = ResultStore(out, "train-sweep", settings, overwrite=args.overwrite)
    total = len(args.kinds) * len(args.lrs) * len(seeds)
    started = time.perf_counter()
    with _progress(total, "train-sweep", args.no_progress) as bar:

        def on_run(name, result, cached):
            bar.set_postfix_str(name)
            bar.update(1)

        results = run_sweep(
            spec,
            cfg,
            train_task,
            val_task,
            kinds=args.kinds,
            lrs=args.lrs,
            seeds=seeds,
            store=store,
            on_run=on_run,
        )
    elapsed = time.perf_counter() - started
    rows = summarise(results)
    figure = plot.save_figure(plot.train_sweep_figure(rows), out / "train_sweep.png")
    best = best_lr(rows)
    report = {
        "command": "train-sweep",
        "settings": settings,
        "seconds": elapsed,
        "rows": rows,
        "best_lr": best,
        "figure": str(figure),
    }
    report_path = write_json(out / "train_sweep.json", report)
    if args.json:
        print(json.dumps(report))
        return 0

    def show(value):
        return "diverged" if value is None else value

    table = [
        [
            r["kind"],
            r["lr"],
            show(r["val_loss_mean"]),
            show(r["val_loss_min"]),
            show(r["val_loss_max"]),
            f"{r['diverged']}/{r['seeds']}",
            show(r["token_correlation"]),
        ]
        for r in rows
    ]
    print(
        _markdown_table(["model", "lr", "val loss", "min", "max", "diverged", "token corr"], table)
    )
    for kind, value in best.items():
        print(
            f"best lr for {kind}: "
            + (
                "none (all diverged)"
                if value is None
                else f"{value[0]:g} (val loss {value[1]:.4g})"
            )
        )
    print(f"\n{total} runs ({info['source']}, {cfg.steps} steps each): {elapsed:.1f} s")
    print(f"results written to {report_path} and {figure}")
    return 0


# ------------------------------------------------------------------------------------- main


def _add_run(sub) -> None:
    parser = sub.add_parser(
        "run",
        help="the main job with its defaults (what `make run` does)",
        description="Run the main job (currently: rank-collapse) with its default settings.",
    )
    parser.add_argument("--out", default="results/rank_collapse", help="output directory")
    parser.set_defaults(func=_run_main_job)


def _run_main_job(args: argparse.Namespace) -> int:
    return main(["rank-collapse", "--out", args.out])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdeformer",
        description=(
            "Shaped Transformers, their covariance SDE limit and exact finite-width laws. "
            "Each command prints a table, writes JSON and figures, and resumes interrupted runs."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_rank_collapse(sub)
    _add_ntk(sub)
    _add_train(sub)
    _add_train_sweep(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, ResultsError) as err:
        print(f"sdeformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"sdeformer {args.command}: interrupted; finished units are saved, rerun to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
