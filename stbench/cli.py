"""The ``stbench`` command: run, list, show, report, prepare.

Every user error (unknown name, impossible budget, missing or corrupt data) is printed as one line
``stbench: error: ...`` with exit code 2; results already written stay in the store.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys

from stbench import StoreError, UserError
from stbench.registry import UnknownName


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2 (argparse would print the whole usage)
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _pairs(items: list[str] | None, what: str) -> dict:
    out = {}
    for item in items or []:
        for part in filter(None, item.split(",")):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise UserError(f"{what} {part!r} must read KEY=VALUE")
            out[key.strip()] = _value(value.strip())
    return out


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UserError(f"{what} {text!r} must be comma-separated integers, e.g. 0,1,2") from None


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UserError(f"{what} {text!r} must be comma-separated numbers, e.g. 1e-2,1e-3,1e-4") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run methods on a dataset and store one record per cell")
    run.add_argument("--methods", default="full,random", help="'all', a family, or names (comma-separated)")
    run.add_argument("--dataset", default="synthetic-weather")
    run.add_argument("--budgets", default="0.005", help="compression ratios, e.g. 0.005,0.01 or 0.005=0.1x0.05")
    run.add_argument("--retention", default="0.3", help="retention ratios for pruners, e.g. 0.1,0.3,0.5,0.7")
    run.add_argument("--retention-basis", default="total", choices=["total", "pruned"],
                     help="total: r of the visits over all epochs, for every pruner (default); pruned: r over "
                          "the pruned epochs only, the papers' protocol")
    run.add_argument("--seeds", default="0", help="comma-separated seeds (of condensation, with --eval-seeds)")
    run.add_argument("--eval-seeds", default=None,
                     help="comma-separated evaluation seeds: each set (condensed once per --seeds seed) is "
                          "evaluated with each; pruners and full run once per eval seed (default: each "
                          "cell's own seed)")
    run.add_argument("--eval-lr-grid", default=None, metavar="LRS",
                     help="evaluation learning rates, e.g. 1e-2,1e-3,1e-4: one model per rate, the rate "
                          "with the lowest validation score is tested (every method alike)")
    run.add_argument("--targets", default="as-condensed", choices=["as-condensed", "hard"],
                     help="hard: train on the real targets of the set's inputs (coresets: unchanged; "
                          "learned inputs: recorded incompatible)")
    run.add_argument("--model", default="auto", help="evaluation model; auto: mtgnn, or mtgnn-le for "
                                                     "bi-dimensional sets")
    run.add_argument("--preset", default="smoke", help="smoke | quick | paper | stprune")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda")
    run.add_argument("--data-dir", default=None, help="prepared datasets (default $STBENCH_DATA or ./stbench-data)")
    run.add_argument("--results", default="results", help="results store folder")
    run.add_argument("--set", action="append", metavar="PARAM=VALUE",
                     help="method parameter, for all methods that have it or as METHOD.PARAM=VALUE")
    run.add_argument("--size", action="append", metavar="KNOB=VALUE", help="size knobs of built-in datasets")
    run.add_argument("--epochs", type=int, default=None, help="override the preset's evaluation epochs")
    run.add_argument("--select-metric", default=None, choices=["rel_rmse", "rel_mae", "rmse", "mae"],
                     help="validation metric that selects the tested checkpoint (default rel_rmse)")
    run.add_argument("--optimizer", default=None, choices=["sgd", "adam", "muon"],
                     help="override the preset's evaluation-model optimizer (muon: Muon on weight matrices, "
                          "Adam on the rest)")
    run.add_argument("--amp", default=None, choices=["off", "bf16"],
                     help="evaluation-model training forward in bfloat16 autocast (default off, as in the "
                          "papers); validation and test passes stay float32")
    run.add_argument("--eval-memory", type=float, default=None, metavar="MB",
                     help="size validation/test batches to this many MiB of forward activations, measured "
                          "(default: the preset's fixed evaluation batch)")
    run.add_argument("--input-len", type=int, default=12)
    run.add_argument("--output-len", type=int, default=12)
    run.add_argument("--executor", default="serial", help="serial | process | ray: where cells run")
    run.add_argument("--workers", type=int, default=None, help="process: worker processes (default: one per "
                     "GPU, or 2); ray: cores are split into this many cells at a time")
    run.add_argument("--gpus", default=None, help="process: GPU ids, one per worker in turn, e.g. 0,1,2,3")
    run.add_argument("--ray-address", default=None, help="ray: auto or HOST:PORT of a running cluster "
                     "(default: start a local Ray instance)")
    run.add_argument("--cell-timeout", type=float, default=None, help="seconds; a cell past it is stopped "
                     "and recorded `timeout`")
    run.add_argument("--retry", default="", help="finished statuses to run again, e.g. oom")
    run.add_argument("--quiet", action="store_true", help="no progress lines")

    lst = sub.add_parser("list", help="list registered methods, datasets or models")
    lst.add_argument("what", choices=["methods", "datasets", "models"])
    lst.add_argument("--json", action="store_true")
    lst.add_argument("--data-dir", default=None, help="datasets: also list the prepared folders found here "
                                                      "(default $STBENCH_DATA or ./stbench-data)")

    show = sub.add_parser("show", help="print the results store as a table")
    show.add_argument("--results", default="results")
    show.add_argument("--runs", action="store_true", help="one row per run instead of mean +- std over seeds")

    report = sub.add_parser("report", help="write LaTeX/Markdown/CSV tables and figures from the results store")
    report.add_argument("--results", default="results")
    report.add_argument("--out", default=None, help="output folder (default RESULTS/report)")
    report.add_argument("--tables", default="all",
                        help="'all', 'none' or main,cross-model,sweeps,pruning,time,scores,cost,seeds,control,reference")
    report.add_argument("--plots", default="all", help="'all', 'none' or train-cost,condense-time,scalability,"
                                                      "error-vs-condense,prune-tradeoff,error-vs-visits,pareto")
    report.add_argument("--reference", default=None, help="folder of published numbers (default results/reference "
                                                          "of the stbench checkout)")

    prep = sub.add_parser("prepare", help="convert a real dataset into the canonical folder format")
    prep.add_argument("name")
    what = prep.add_mutually_exclusive_group(required=True)
    what.add_argument("--source", help="file or folder with the original data of a registered dataset")
    what.add_argument("--from", dest="from_files", metavar="FILES",
                      help="any values file(s) .npy/.npz/.csv/.nc (comma-separated: stacked as channels) "
                           "into a new dataset NAME")
    what.add_argument("--synthetic", metavar="BUILTIN", help="write a built-in generator's data to disk as "
                      "dataset NAME, chunk by chunk (with --size KNOB=VALUE)")
    prep.add_argument("--data-dir", default=None)
    grid = prep.add_argument_group("era5 / cams (GRIB, NetCDF)")
    grid.add_argument("--variables", help="comma-separated variables (default: the paper's six)")
    grid.add_argument("--target", help="target variable or channel(s), names or indices")
    grid.add_argument("--bbox", help="lat0,lat1,lon0,lon1 in degrees")
    grid.add_argument("--stride", help="keep every k-th grid point along latitude and longitude")
    grid.add_argument("--graph", help="grid (4-neighbour, default) or kernel (Gaussian of distances)")
    grid.add_argument("--freq", help="LargeST: 5min or 15min (means of 3 steps); --from: the step length")
    frm = prep.add_argument_group("--from")
    frm.add_argument("--adj", help="(N, N) adjacency, .npy or .csv")
    frm.add_argument("--coords", help="(N, 2) latitude, longitude in degrees, .npy or .csv")
    frm.add_argument("--timestamps", help="one time per step, .npy or .csv/.txt")
    frm.add_argument("--mask-zeros", help="yes: a 0 target reading means missing; no: 0 is a real value")
    prep.add_argument("--size", action="append", metavar="KNOB=VALUE", help="--synthetic: size knobs")
    return parser


def cmd_run(args) -> int:
    from stbench.budgets import parse_compressions, parse_retentions
    from stbench.data.windows import WindowSpec
    from stbench.executors import make_executor
    from stbench.data.catalog import use_data_dir
    from stbench.runner import Grid, Runner
    from stbench.summary import aggregate_table

    use_data_dir(args.data_dir)   # prepared folders there are found by name, also in worker processes
    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if min(args.input_len, args.output_len) < 1:
        raise UserError("--input-len and --output-len must be at least 1")
    if args.eval_memory is not None and not args.eval_memory > 0:
        raise UserError(f"--eval-memory must be a positive number of MiB (got {args.eval_memory})")
    grid = Grid(
        methods=args.methods, dataset=args.dataset, budgets=parse_compressions(args.budgets),
        retentions=parse_retentions(args.retention, args.retention_basis), seeds=_ints(args.seeds, "--seeds"), model=args.model,
        preset=args.preset, device=args.device, data_dir=args.data_dir, results=args.results,
        params=_pairs(args.set, "--set"), dataset_options=_pairs(args.size, "--size"),
        train_overrides={k: v for k, v in (("epochs", args.epochs), ("select_metric", args.select_metric),
                                           ("optimizer", args.optimizer), ("amp", args.amp),
                                           ("eval_memory_mb", args.eval_memory)) if v is not None},
        window=WindowSpec(args.input_len, args.output_len),
        retry=tuple(filter(None, (p.strip() for p in args.retry.split(",")))),
        eval_seeds=None if args.eval_seeds is None else _ints(args.eval_seeds, "--eval-seeds"),
        eval_lr_grid=None if args.eval_lr_grid is None else _floats(args.eval_lr_grid, "--eval-lr-grid"),
        targets=args.targets,
    )
    say = None if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    executor = make_executor(args.executor, args.workers, gpus, args.ray_address, args.cell_timeout, say)
    runner = Runner(grid, progress=say)
    try:
        records = runner.run(executor)
    finally:
        if runner.counts:
            print(runner.summary(), file=sys.stderr, flush=True)
    print(aggregate_table(records))
    return 1 if any(runner.counts.get(s) for s in ("failed", "crashed", "timeout")) else 0


def cmd_list(args) -> int:
    from tabulate import tabulate

    from stbench.plugins import load_builtin
    from stbench.registry import DATASETS, METHODS, MODELS

    load_builtin()
    if args.what == "datasets":
        from stbench.data.catalog import discover_datasets
        discover_datasets(args.data_dir)
    registry = {"methods": METHODS, "datasets": DATASETS, "models": MODELS}[args.what]
    rows = []
    for entry in registry.entries():
        row = {"name": entry.name, "family": entry.family, "description": entry.info.get("description", "")}
        if args.what == "methods":
            row["kind"] = entry.obj.kind
            row["params"] = {f.name: f.default for f in dataclasses.fields(entry.obj.Params)}
        elif args.what == "datasets":
            spec = entry.obj
            row["kind"] = ("built-in" if spec.builtin else "prepared folder" if spec.discovered
                           else "prepare: " + spec.prepare_command())
        else:
            row["inductive"] = entry.obj.inductive
        rows.append(row)
    print(json.dumps(rows, indent=2, default=str) if args.json else tabulate(rows, headers="keys"))
    return 0


def cmd_show(args) -> int:
    from stbench.results import ResultStore
    from stbench.summary import aggregate_table, runs_table

    records = ResultStore(args.results).require_records()
    print(runs_table(records) if args.runs else aggregate_table(records))
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from stbench.report import PLOTS, TABLES, choose, write_report
    from stbench.results import writable_dir

    writable_dir(args.out or Path(args.results) / "report", "--out")
    write_report(args.results, args.out, choose(args.tables, TABLES, "table"), choose(args.plots, PLOTS, "plot"),
                 args.reference)
    return 0


def cmd_prepare(args) -> int:
    from stbench.data.catalog import data_dir, prepare_dataset, prepare_from
    from stbench.plugins import load_builtin
    from stbench.results import writable_dir

    load_builtin()
    writable_dir(data_dir(args.data_dir), "--data-dir")
    grid = {"variables": args.variables, "target": args.target, "bbox": args.bbox, "stride": args.stride,
            "graph": args.graph, "freq": args.freq}
    files = {"adj": args.adj, "coords": args.coords, "timestamps": args.timestamps, "mask_zeros": args.mask_zeros}
    if args.from_files is None and any(v is not None for v in files.values()):
        given = ", ".join("--" + k.replace("_", "-") for k, v in files.items() if v is not None)
        raise UserError(f"{given} apply to --from only (a registered dataset states its own graph, "
                        "timestamps and mask_zeros)")
    if args.size and args.synthetic is None:
        raise UserError("--size applies to --synthetic only")
    if args.from_files is not None:
        for key in ("bbox", "stride", "graph"):
            if grid[key] is not None:
                raise UserError(f"--{key} applies to era5/cams --source files, not to --from")
        folder = prepare_from(args.name, args.from_files, args.data_dir, variables=args.variables,
                              target=args.target, freq=args.freq, **files)
    elif args.synthetic is not None:
        from stbench.data.synthetic import write_synthetic
        if any(v is not None for v in grid.values()):
            raise UserError("--synthetic takes only --size KNOB=VALUE (and --data-dir)")
        folder = write_synthetic(args.synthetic, args.name, args.data_dir, **_pairs(args.size, "--size"))
    else:
        folder = prepare_dataset(args.name, args.source, args.data_dir, **grid)
    print(f"prepared {args.name} in {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        commands = {"run": cmd_run, "list": cmd_list, "show": cmd_show, "report": cmd_report, "prepare": cmd_prepare}
        return commands[args.command](args)
    except (UserError, UnknownName) as err:
        print(f"stbench: error: {err}", file=sys.stderr)
        return 2
    except StoreError as err:
        print(f"stbench: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stbench: interrupted; finished cells are in the results store", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
