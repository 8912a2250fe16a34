"""Command line: ``python -m metasp COMMAND`` (also installed as ``metasp``)."""

from __future__ import annotations

import argparse


def _add_experiment_command(commands):
    parser = commands.add_parser(
        "experiment", help="run one of the paper's experiments; writes a CSV and a PNG")
    parser.add_argument("name", nargs="?", help="experiment name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--seeds", type=int, default=None, help="repeats per setting")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    parser.set_defaults(run=_run_experiment)


def _run_experiment(args, parser):
    from . import experiments

    if args.list:
        for name, description in experiments.EXPERIMENTS.items():
            print(f"{name:<24} {description}")
        return 0
    if args.name is None:
        parser.error("experiment: give a NAME or --list")
    experiments.run(args.name, quick=args.quick, seeds=args.seeds, out=args.out)
    return 0


def main(argv=None):
    """Run the ``metasp`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m metasp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_experiment_command(commands)
    args = parser.parse_args(argv)
    return args.run(args, parser)
