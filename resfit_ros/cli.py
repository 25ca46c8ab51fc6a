"""`resfit-ros <verb>`: the one command-line entry point.

Each verb is a module with `add_arguments(parser)` and `run(args) -> int`; it is imported only
when chosen, so `resfit-ros --help` stays fast (no torch import).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "launch": ("resfit_ros.runner", "run a node graph (train_sim, train_real, eval, ...) without the ros2 CLI"),
    "node": ("resfit_ros.jobs.run_node", "run one node executable, like `ros2 run resfit_ros <node>`"),
    "demos": ("resfit_ros.jobs.demos", "record scripted demonstrations in simulation as episode bags"),
    "train-bc": ("resfit_ros.jobs.train_bc", "train the frozen BC base policy from episode bags"),
    "train-detector": ("resfit_ros.jobs.train_detector", "train the success detector from labelled episode bags"),
    "distill": ("resfit_ros.jobs.distill", "a new BC base from the demos and the combined policy's successful episodes"),
    "eval": ("resfit_ros.jobs.evaluate", "evaluate base (+ residual) or the scripted expert in simulation"),
    "train-offline": ("resfit_ros.jobs.train_offline", "train critic and residual from episode bags alone"),
    "bags": ("resfit_ros.jobs.bags", "inspect episode bag directories"),
    "operator": ("resfit_ros.jobs.operator", "keyboard console for the operator (start, label, reset)"),
    "main-job": ("resfit_ros.jobs.main_job", "the README's first command: residual RL on the simulated robot"),
    "bench": ("resfit_ros.jobs.bench", "run a benchmark from bench/"),
}


def available_verbs() -> dict[str, tuple[str, str]]:
    return {v: m for v, m in VERBS.items() if importlib.util.find_spec(m[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resfit-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for verb, (module_name, help_text) in available_verbs().items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        _lazy_arguments(p, module_name)
    return parser


def _lazy_arguments(parser: argparse.ArgumentParser, module_name: str) -> None:
    # The subparser's arguments come from the module; importing it only when the verb is used
    # would hide --help text, so import here but keep heavy imports inside each run().
    module = importlib.import_module(module_name)
    module.add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "node":  # passes --ros-args through untouched
        from resfit_ros.nodes import run_node

        from resfit_ros.nodes import NODE_MODULES

        usage = ("usage: resfit-ros node <executable> [--ros-args ...]\n"
                 f"executables: {', '.join(sorted(NODE_MODULES))}")
        if len(argv) < 2 or argv[1] in ("-h", "--help"):
            print(usage, file=sys.stdout if len(argv) >= 2 else sys.stderr)
            return 0 if len(argv) >= 2 else 2
        return run_node(argv[1], argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
