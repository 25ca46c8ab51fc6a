"""`resfit-ros bench <name> [args]`: run bench/<name>.py (benchmarks live in the source tree's bench/)."""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = sorted(p.stem.replace("_", "-") for p in BENCH_DIR.glob("*.py")) if BENCH_DIR.is_dir() else []
    parser.add_argument("name", help=f"benchmark: {', '.join(names) or '(none found)'}")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the benchmark (see its --help)")


def run(args: argparse.Namespace) -> int:
    path = BENCH_DIR / f"{args.name.replace('-', '_')}.py"
    if not path.is_file():
        print(f"error: no benchmark '{args.name}' ({path} does not exist)", file=sys.stderr)
        return 2
    module = runpy.run_path(str(path), run_name="resfit_bench")
    return int(module["main"](list(args.bench_args)) or 0)
