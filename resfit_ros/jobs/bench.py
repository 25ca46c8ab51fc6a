"""`resfit-ros bench <name> [args]`: run bench/<name>.py (benchmarks live in the source tree's bench/)."""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path



def bench_dir() -> Path | None:
    """bench/ of the source tree, else the installed share/resfit_ros/bench (colcon install)."""
    candidates = [Path(__file__).resolve().parents[2] / "bench"]
    try:
        from ament_index_python.packages import get_package_share_directory  # type: ignore

        candidates.append(Path(get_package_share_directory("resfit_ros")) / "bench")
    except Exception:  # not a ROS install: the source tree only
        pass
    return next((c for c in candidates if c.is_dir()), None)


BENCH_DIR = bench_dir()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = sorted(p.stem.replace("_", "-") for p in BENCH_DIR.glob("*.py")) if BENCH_DIR else []
    parser.add_argument("name", help=f"benchmark: {', '.join(names) or '(none found)'}")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the benchmark (see its --help)")


def run(args: argparse.Namespace) -> int:
    if BENCH_DIR is None:
        print("error: no bench/ directory (neither in the source tree nor in share/resfit_ros)", file=sys.stderr)
        return 2
    path = BENCH_DIR / f"{args.name.replace('-', '_')}.py"
    if not path.is_file():
        print(f"error: no benchmark '{args.name}' ({path} does not exist)", file=sys.stderr)
        return 2
    # the benchmarks' tooling (resfit_ros_testing) sits beside bench/: in the source tree and in share/resfit_ros
    sys.path.insert(0, str(BENCH_DIR.parent))
    module = runpy.run_path(str(path), run_name="resfit_bench")
    return int(module["main"](list(args.bench_args)) or 0)
