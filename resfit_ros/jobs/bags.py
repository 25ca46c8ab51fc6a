"""`resfit-ros bags DIR [DIR ...]`: list the episode bags in directories, with label, steps and
problems (incomplete, corrupt, unlabelled, ...). Exit code 0 when every episode loads, 1 otherwise.

    resfit-ros bags data/demos/pick_lift
"""
from __future__ import annotations

import argparse
from pathlib import Path

from resfit_ros.jobs.sim_episodes import fail

VERB = "bags"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", help="directories holding episode_* bag directories")
    parser.add_argument("--quiet", action="store_true", help="only the summary line per directory")


def run(args) -> int:
    missing = [d for d in args.dirs if not Path(d).is_dir()]
    if missing:
        return fail(VERB, f"not a directory: {', '.join(missing)}")
    from resfit_ros.bags import scan_episodes

    bad_total = 0
    for d in args.dirs:
        results = scan_episodes(d, images=False)
        counts = {"success": 0, "failure": 0, "aborted": 0}
        steps = 0
        bad = 0
        for path, item in results:
            if isinstance(item, str):
                bad += 1
                if not args.quiet:
                    print(f"  {path.name:48s} PROBLEM  {item}")
                continue
            kind = "aborted" if item.aborted else item.label
            counts[kind] += 1
            steps += item.num_steps
            if not args.quiet:
                print(f"  {path.name:48s} {kind:8s} {item.num_steps:5d} steps  "
                      f"task={item.metadata.get('task', '?')}")
        bad_total += bad
        print(f"{d}: {len(results)} episodes: {counts['success']} success, {counts['failure']} failure, "
              f"{counts['aborted']} aborted, {bad} unreadable; {steps} steps")
    return 1 if bad_total else 0
