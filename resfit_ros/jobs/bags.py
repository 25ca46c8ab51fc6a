"""`resfit-ros bags DIR [DIR ...]`: list the episode bags in directories, with label, steps and
problems (incomplete, corrupt, unlabelled, ...). Exit code 0 when every episode loads, 1 otherwise.

`resfit-ros bags summary DIR [DIR ...] [--window N]`: per episode its length, label, kind (demo,
exploration = training episode, eval = no exploration noise), weights version and problems; then
the success rate over consecutive windows of N labelled episodes (all, exploration, eval), so the
learning curve of a run can be read from its bags. Bad episodes are reported, never fatal.

`bags summary` also says where the residual acts: per window of N evaluation episodes (training
episodes when there are none), the joints with the largest mean |residual| (rad; the residual as the
policy asked it), its signed mean and the share of steps the residual node clipped it (a residual
at the node's bound, or changing sign from window to window, shows here first).

`resfit-ros bags import-raw SRC [SRC ...] --out DIR [--base FILE]`: convert bags recorded with
plain `ros2 bag record` from the robot's raw topics (cameras, joint states, task state, controller
commands, /resfit/episode_status) into episode bags under DIR: observations replayed through the
synchronizer's code with its parameters (--config, section `synchronizer`), one step per command,
base actions recomputed with --base (bags/raw_record.py, README "Bags from ros2 bag record").
`bags` and `bags summary` on such a directory list the episodes it holds and what is missing.

    resfit-ros bags data/demos/pick_lift
    resfit-ros bags summary outputs/run/episodes --window 20
    resfit-ros bags import-raw rosbag2_2025_06_01-10_00_00 --out data/robot/episodes --base base.safetensors
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from resfit_ros.jobs.sim_episodes import fail

VERB = "bags"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", help="directories holding episode_* bag directories")
    parser.add_argument("--quiet", action="store_true", help="only the summary line per directory")
    parser.add_argument("--window", type=int, default=10,
                        help="`bags summary`: episodes per success-rate window (default 10)")
    raw = parser.add_argument_group("raw bags (`ros2 bag record`): `bags import-raw SRC --out DIR`, and "
                                    "`bags`/`bags summary` of such a directory")
    raw.add_argument("--out", help="`import-raw`: directory the episode bags are written to")
    raw.add_argument("--base", help="`import-raw`: frozen base artifact; base actions are recomputed with it "
                                    "(residual = command - base). Without it the steps hold the command only, "
                                    "like demonstrations")
    raw.add_argument("--config", help="parameter YAML whose `synchronizer` section the replay uses "
                                      "(default: the package's config/sim.yaml)")
    raw.add_argument("--robot", help="robot description YAML (default: the synchronizer config's robot_description)")
    raw.add_argument("--clock", default="auto", choices=["auto", "log", "clock", "stamps"],
                     help="the synchronizer's clock during the replay (default auto: log time when the stamps are "
                          "on the bag's clock, else /clock when recorded, else the newest stamp)")
    raw.add_argument("--steps", default="auto", choices=["auto", "lockstep", "time"],
                     help="which observation each command acted on: lockstep (the robot steps once per command: the "
                          "simulator), time (a robot streaming observations); default auto: lockstep when the "
                          "--config file's sim_robot section says lockstep: true")
    raw.add_argument("--no-cameras", action="store_true", help="replay state only (synchronizer use_cameras false)")
    raw.add_argument("--task", default="", help="`import-raw`: task name written into each episode's metadata")
    raw.add_argument("--namespace", default="", help="the ROS namespace the recorded graph ran in (its "
                                                     "namespace:=, e.g. robot_a; default: the root)")


def run(args) -> int:
    if args.dirs[0] == "import-raw":
        return import_raw(args.dirs[1:], args)
    if args.dirs[0] == "summary" and len(args.dirs) > 1:
        return summary(args.dirs[1:], args.window, args.quiet, args)
    if args.dirs == ["summary"] and not Path("summary").is_dir():
        return fail(f"{VERB} summary", "give at least one directory: resfit-ros bags summary DIR [DIR ...]")
    missing = [d for d in args.dirs if not Path(d).is_dir()]
    if missing:
        return fail(VERB, f"not a directory: {', '.join(missing)}")
    from resfit_ros.bags import scan_episodes
    from resfit_ros.bags.reader import is_raw_bag

    bad_total = 0
    for d in args.dirs:
        if is_raw_bag(d):
            bad_total += _print_summary(d, summarise_raw(d, args.window, args), args.window, args.quiet)
            continue
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
                         "task": item.metadata.get("task", "?"), **residual_statistics(item)})
        except Exception as exc:  # noqa: BLE001  one odd episode never stops the summary
            problems.append((path.name, f"unreadable episode fields: {type(exc).__name__}: {exc}"))
    return {"rows": rows, "problems": problems, "windows": _windows(rows, window)}


def residual_statistics(ep) -> dict:
    """An episode's residual per joint: sum of |r| and of r over its steps (rad), its step count and
    how many steps the residual node clipped the residual; {} for a demo (no residual recorded)."""
    from resfit_ros.names import SAFETY_RESIDUAL_CLIPPED

    if ep.residual.shape[0] == 0 or not np.all(np.isfinite(ep.residual)):
        return {}
    return {"joint_names": list(ep.joint_names), "residual_abs_sum": np.abs(ep.residual).sum(axis=0),
            "residual_sum": ep.residual.sum(axis=0), "residual_steps": int(ep.residual.shape[0]),
            "clipped_steps": int(np.count_nonzero(ep.safety_flags & SAFETY_RESIDUAL_CLIPPED))}


def residual_windows(rows: list[dict], window: int, top: int = 3) -> tuple[str, list[dict]]:
    """Per window of `window` evaluation episodes (training ones when there are none): the `top`
    joints by mean |residual| with (name, mean |r|, mean r) in rad, and the share of clipped steps."""
    with_residual = [r for r in rows if r.get("residual_steps")]
    kind = "eval" if any(r["kind"] == "eval" for r in with_residual) else "explore"
    chosen = [r for r in with_residual if r["kind"] == kind]
    out = []
    for i in range(0, len(chosen), window):
        part = chosen[i:i + window]
        steps = sum(r["residual_steps"] for r in part)
        mean_abs = sum(r["residual_abs_sum"] for r in part) / steps          # (dof,)
        mean = sum(r["residual_sum"] for r in part) / steps                  # (dof,)
        order = np.argsort(-mean_abs)[:top]
        out.append({"first": i + 1, "last": i + len(part),
                    "joints": [(part[0]["joint_names"][j], float(mean_abs[j]), float(mean[j])) for j in order],
                    "clipped": sum(r["clipped_steps"] for r in part) / steps})
    return kind, out


def _windows(rows: list[dict], window: int) -> dict:
    """Success rate per window of labelled episodes: all, exploration and evaluation ones."""
    labelled = [r for r in rows if not r["aborted"] and r["label"] in ("success", "failure")]
    windows = {}
    for name, select in (("all", lambda r: True), ("explore", lambda r: r["kind"] == "explore"),
                         ("eval", lambda r: r["kind"] == "eval")):
        outcomes = [r["success"] for r in labelled if select(r)]
        if outcomes:
            windows[name] = success_windows(outcomes, window)
    return windows


def summarise_raw(root: str | Path, window: int = 10, args=None) -> dict:
    """`summarise` of a raw `ros2 bag record` directory: the episodes it would import, its problems."""
    from resfit_ros.bags import BagError
    from resfit_ros.bags.raw_record import IMPORT_HINT, read_raw_bag

    try:
        rec = read_raw_bag(root, images=False, **_raw_options(args))
    except (BagError, ValueError) as exc:  # ConfigError is a ValueError
        return {"rows": [], "problems": [(str(root), getattr(exc, "problem", str(exc)))], "windows": {},
                "raw": f"raw rosbag2 recording (ros2 bag record); import it with `{IMPORT_HINT.format(path=root)}`"}
    rows = []
    for ep in rec.episodes:
        kind = episode_kind(ep) if ep.base_action.shape[0] else ("explore" if ep.exploration.any() else "eval")
        label = "aborted" if ep.aborted else (ep.label or "none")
        versions = ep.weights_version
        rows.append({"name": f"episode {ep.episode_id} (in the raw bag)", "steps": int(ep.num_steps), "label": label,
                     "kind": kind, "success": bool(ep.success), "aborted": bool(ep.aborted),
                     "weights": (int(versions.min()), int(versions.max())) if ep.base_action.shape[0] else None,
                     "task": "?"})
    windows = _windows(rows, window)
    steps = "/resfit/step records" if any(ep.base_action.shape[0] for ep in rec.episodes) else "controller commands"
    return {"rows": rows, "problems": [(f"episode {eid} (in the raw bag)", why) for eid, why in rec.problems],
            "windows": windows,
            "raw": (f"raw rosbag2 recording (ros2 bag record): {len(rec.observations)} observations replayed "
                    f"(clock: {rec.clock}), steps from {steps} ({rec.steps_rule}); import it for training with "
                    f"`{IMPORT_HINT.format(path=root)}`")}


def _raw_options(args) -> dict:
    if args is None:
        return {}
    import dataclasses

    from resfit_ros.bags.raw_record import lockstep_from_config, load_sync_config

    config = getattr(args, "config", None)
    steps = getattr(args, "steps", "auto")
    if steps == "auto":
        steps = "lockstep" if lockstep_from_config(config) else "time"
    cfg = load_sync_config(config)
    if getattr(args, "no_cameras", False):
        cfg = dataclasses.replace(cfg, use_cameras=False)
    return {"sync_config": cfg, "robot": getattr(args, "robot", None), "clock": getattr(args, "clock", "auto"),
            "namespace": getattr(args, "namespace", "") or "",
            "steps": steps}


def _print_summary(d: str, s: dict, window: int, quiet: bool) -> int:
    rows, problems = s["rows"], s["problems"]
    print(f"{d}:")
    if "raw" in s:
        print(f"  {s['raw']}")
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
    kind, residuals = residual_windows(rows, window)
    if residuals:
        print(f"  residual per {window} {kind} episodes (largest mean |r| in rad, signed mean; share of steps "
              "the residual node clipped):")
    for w in residuals:
        joints = ", ".join(f"{name} {mag:.3f} ({mean:+.3f})" for name, mag, mean in w["joints"])
        print(f"    {w['first']}-{w['last']}: {joints}; clipped {w['clipped']:.0%}")
    return len(problems)


def summary(dirs: list[str], window: int, quiet: bool = False, args=None) -> int:
    from resfit_ros.bags.reader import is_raw_bag

    verb = f"{VERB} summary"
    if window < 1:
        return fail(verb, f"--window must be >= 1, got {window}")
    missing = [d for d in dirs if not Path(d).is_dir()]
    if missing:
        return fail(verb, f"not a directory: {', '.join(missing)}")
    bad_total = 0
    for d in dirs:
        s = summarise_raw(d, window, args) if is_raw_bag(d) else summarise(d, window)
        bad_total += _print_summary(d, s, window, quiet)
    return 1 if bad_total else 0


# --- `bags import-raw` -----------------------------------------------------------------------------
def import_raw(sources: list[str], args) -> int:
    verb = f"{VERB} import-raw"
    if not sources:
        return fail(verb, "give at least one raw bag directory: resfit-ros bags import-raw SRC [SRC ...] --out DIR")
    if not args.out:
        return fail(verb, "--out DIR is required (the episode bags are written there)")
    missing = [d for d in sources if not Path(d).is_dir()]
    if missing:
        return fail(verb, f"not a directory: {', '.join(missing)}")
    from resfit_ros.bags import BagError
    from resfit_ros.bags.raw_record import import_raw_bag
    from resfit_ros.config import ConfigError

    try:
        options = _raw_options(args)
    except ConfigError as exc:
        return fail(verb, str(exc))
    policy = None
    if args.base:
        from resfit_ros.policy.base import PolicyLoadError, load_base_policy

        try:
            policy = load_base_policy(args.base)
        except (PolicyLoadError, OSError, ValueError) as exc:
            return fail(verb, f"cannot load the base {args.base}: {exc}")
    else:
        print("no --base: the steps hold the commands only (like demonstrations: the learner computes their "
              "base actions from a demos directory); give --base to store base actions and residuals")
    failed = 0
    for src in sources:
        try:
            result = import_raw_bag(src, args.out, base_policy=policy, base_artifact=args.base,
                                    metadata={"task": args.task} if args.task else None, **options)
        except BagError as exc:
            print(f"{src}: PROBLEM  {exc.problem}")
            failed += 1
            continue
        rec = result.recording
        print(f"{src}: {len(result.written)} episodes imported into {args.out} (clock: {rec.clock}, "
              f"steps: {rec.steps_rule}), "
              f"{len(result.skipped)} skipped")
        for path in result.written:
            print(f"  {path.name}")
        for what, why in result.skipped:
            print(f"  {what:48s} SKIPPED  {why}")
    return 1 if failed else 0
