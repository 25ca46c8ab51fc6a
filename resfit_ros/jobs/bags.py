"""`resfit-ros bags DIR [DIR ...]`: list the episode bags in directories, with label, steps and
problems (incomplete, corrupt, unlabelled, ...). Exit code 0 when every episode loads, 1 otherwise.

`resfit-ros bags summary DIR [DIR ...] [--window N]`: per episode its length, label, kind (demo,
exploration = training episode, eval = no exploration noise), weights version and problems; then
the success rate over consecutive windows of N labelled episodes (all, exploration, eval), so the
learning curve of a run can be read from its bags. Bad episodes are reported, never fatal.

    resfit-ros bags data/demos/pick_lift
    resfit-ros bags summary outputs/run/episodes --window 20
"""
from __future__ import annotations

import argparse
from pathlib import Path

from resfit_ros.jobs.sim_episodes import fail

VERB = "bags"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", help="directories holding episode_* bag directories")
    parser.add_argument("--quiet", action="store_true", help="only the summary line per directory")
    parser.add_argument("--window", type=int, default=10,
                        help="`bags summary`: episodes per success-rate window (default 10)")


def run(args) -> int:
    if args.dirs[0] == "summary" and len(args.dirs) > 1:
        return summary(args.dirs[1:], args.window, args.quiet)
    if args.dirs == ["summary"] and not Path("summary").is_dir():
        return fail(f"{VERB} summary", "give at least one directory: resfit-ros bags summary DIR [DIR ...]")
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


# --- `bags summary` --------------------------------------------------------------------------------
def episode_kind(ep) -> str:
    """demo (no base action recorded: a scripted or teleoperated demonstration), explore (a training
    episode: some step had exploration noise) or eval."""
    if ep.base_action.shape[0] == 0:
        return "demo"
    return "explore" if ep.exploration.size and bool(ep.exploration.any()) else "eval"


def success_windows(outcomes: list[bool], window: int) -> list[tuple[int, int, float]]:
    """(first, last, success rate) per consecutive window of `window` outcomes (1-based, last partial)."""
    return [(i + 1, min(i + window, len(outcomes)), sum(outcomes[i:i + window]) / len(outcomes[i:i + window]))
            for i in range(0, len(outcomes), window)]


def summarise(root: str | Path, window: int = 10) -> dict:
    """ROS-free summary of one directory (also used by tests): episodes, problems, windows."""
    from resfit_ros.bags import scan_episodes

    rows, problems = [], []
    try:
        results = scan_episodes(root, images=False)
    except Exception as exc:  # noqa: BLE001  an unreadable directory is a problem, not a crash
        return {"rows": [], "problems": [(str(root), f"cannot scan: {exc}")], "windows": {}}
    for path, item in results:
        if isinstance(item, str):
            problems.append((path.name, item))
            continue
        try:
            kind = episode_kind(item)
            label = "aborted" if item.aborted else (item.label or "none")
            versions = item.weights_version
            rows.append({"name": path.name, "steps": int(item.num_steps), "label": label, "kind": kind,
                         "success": bool(item.success), "aborted": bool(item.aborted),
                         "weights": (int(versions.min()), int(versions.max())) if versions.size else None,
                         "task": item.metadata.get("task", "?")})
        except Exception as exc:  # noqa: BLE001  one odd episode never stops the summary
            problems.append((path.name, f"unreadable episode fields: {type(exc).__name__}: {exc}"))
    labelled = [r for r in rows if not r["aborted"] and r["label"] in ("success", "failure")]
    windows = {}
    for name, select in (("all", lambda r: True), ("explore", lambda r: r["kind"] == "explore"),
                         ("eval", lambda r: r["kind"] == "eval")):
        outcomes = [r["success"] for r in labelled if select(r)]
        if outcomes:
            windows[name] = success_windows(outcomes, window)
    return {"rows": rows, "problems": problems, "windows": windows}


def summary(dirs: list[str], window: int, quiet: bool = False) -> int:
    verb = f"{VERB} summary"
    if window < 1:
        return fail(verb, f"--window must be >= 1, got {window}")
    missing = [d for d in dirs if not Path(d).is_dir()]
    if missing:
        return fail(verb, f"not a directory: {', '.join(missing)}")
    bad_total = 0
    for d in dirs:
        s = summarise(d, window)
        rows, problems = s["rows"], s["problems"]
        print(f"{d}:")
        if not quiet:
            print(f"  {'episode':48s} {'kind':7s} {'label':8s} {'steps':>5s}  weights")
            for r in rows:
                w = "-" if r["weights"] is None else (f"{r['weights'][0]}" if r["weights"][0] == r["weights"][1]
                                                      else f"{r['weights'][0]}..{r['weights'][1]}")
                print(f"  {r['name']:48s} {r['kind']:7s} {r['label']:8s} {r['steps']:5d}  {w}")
        for name, why in problems:
            print(f"  {name:48s} PROBLEM  {why}")
        lengths = [r["steps"] for r in rows]
        counts = {k: sum(r["kind"] == k for r in rows) for k in ("demo", "explore", "eval")}
        succ = sum(r["success"] for r in rows)
        labelled = sum(r["label"] in ("success", "failure") and not r["aborted"] for r in rows)
        print(f"  {len(rows)} usable episodes ({counts['demo']} demo, {counts['explore']} exploration, "
              f"{counts['eval']} eval), {len(problems)} with problems; "
              + (f"length min/mean/max {min(lengths)}/{sum(lengths) / len(lengths):.1f}/{max(lengths)}; "
                 if lengths else "")
              + (f"success {succ}/{labelled} = {succ / labelled:.2f}" if labelled else "no labelled episodes"))
        for name, wins in s["windows"].items():
            text = "  ".join(f"{a}-{b}: {rate:.2f}" for a, b, rate in wins)
            print(f"  success rate per {window} {name} episodes: {text}")
        bad_total += len(problems)
    return 1 if bad_total else 0
