"""Real time: a user's first training session on a robot, rehearsed on the stand-in (not in CI).

    resfit-ros bench real-time [--minutes 25] [--base FILE --demos DIR] [--out DIR] [--namespace NS]

Runs the robot_sim graph (resfit_ros/graph.py: train_real's nodes with config/real.yaml, the
camera and the real config's learner, against the simulated robot in real time) on these cores,
and this process plays the operator with the operator's public services only: it resets (the
graph's reset puts the object back first), starts a training episode, watches the stand-in's
success signal like a person watching the robot, and labels success 1-3 s after it first shows
(a human's reaction, uniform), or failure 1-3 s after the task's step limit (200 steps, 10 s).
With `--namespace NS` the graph runs in namespace NS (its namespace:=) and the operator's node too.

Without --base/--demos it first makes what a lab would bring: 2 scripted demonstrations with the
head camera and without the simulator's task state (what the robot observes), and a BC base on
them (300 steps), cached in --out.

Reported, per minute and at the end:
  control loop     observation stamp (its joint state's acquisition) -> the step record's receipt
                   here (one DDS hop after the commands), and the residual node's own tick
  learner          updates, achieved UTD (the learner's own metric), weights versions the policy
                   acted with and when each first reached it
  episodes         labelled per hour, success of the recorded episodes over time (from the bags)
  time             where the session's wall time went: start-up, resets, episodes, the operator's
                   reaction; CPU per node process
Ends with `real_time_minutes=<m> episodes=<n> episodes_per_hour=<x> success_first=<x>
success_last=<x> control_p99_ms=<x> achieved_utd=<x> weights_versions=<n>`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REACTION_S = (1.0, 3.0)     # a person sees the outcome and presses the key this much later
MAX_STEPS = 200             # the task's limit (g1_pick_lift: 10 s at 20 Hz); then the person labels failure
WATCHED = ("synchronizer", "base_chunk_server", "residual_policy", "recorder")


def prepare_base(out: Path, task: str) -> tuple[Path, Path]:
    """Image demos without task state and a BC base on them, made once under `out`."""
    demos, base = out / "demos_robot", out / "base_robot.safetensors"
    cli = [sys.executable, "-m", "resfit_ros.cli"]
    if not (demos.is_dir() and any(demos.iterdir())):
        print(f"making 2 demonstrations in {demos} ...", flush=True)
        subprocess.run(cli + ["demos", "--task", task, "--episodes", "2", "--out", str(demos), "--seed", "0",
                              "--no-task-state", "--no-progress"], check=True)
    if not base.is_file():
        print(f"training the BC base {base} (300 steps) ...", flush=True)
        subprocess.run(cli + ["train-bc", "--demos", str(demos), "--out", str(base), "--steps", "300",
                              "--seed", "0", "--no-progress"], check=True)
    return demos, base


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def node_pids(pid_dir: Path) -> dict[str, int]:
    out = {}
    for p in pid_dir.glob("*.pid"):
        if p.stem != "runner":
            try:
                out[p.stem] = int(p.read_text())
            except (OSError, ValueError):
                pass
    return out


class Operator:
    """The scripted person at the console: every action is one service call of the episode manager."""

    def __init__(self, node, rng: random.Random):
        from std_msgs.msg import Bool
        from std_srvs.srv import Trigger

        from resfit_ros import names
        from resfit_ros.msg import EpisodeStatus, LearnerMetrics, StepRecord
        from resfit_ros.nodes.common import LATCHED, STREAM, stamp_to_ns
        from resfit_ros.srv import LabelEpisode, StartEpisode

        self.node, self.rng = node, rng
        self.EpisodeStatus, self.LabelEpisode, self.StartEpisode, self.Trigger = \
            EpisodeStatus, LabelEpisode, StartEpisode, Trigger
        self.clients = {"start": node.create_client(StartEpisode, names.START_EPISODE),
                        "label": node.create_client(LabelEpisode, names.LABEL_EPISODE),
                        "abort": node.create_client(Trigger, names.ABORT_EPISODE),
                        "reset": node.create_client(Trigger, names.RESET)}
        self.status = None
        self.success_seen_at: float | None = None
        self.decision: tuple[bool, float] | None = None     # (success, when the key is pressed)
        self.pending = None
        self.retry_at = 0.0
        self.events: list[tuple[float, str, str]] = []       # (wall, what, message)
        self.episodes: list[dict] = []
        self.current: dict | None = None
        self.reset_started: float | None = None
        self.reset_s: list[float] = []
        self.progress = (0, 0, time.monotonic())
        # after an accepted call, wait until the status shows its effect (it travels apart from the answer)
        self.expect = None                                   # (predicate on the status, give up at)
        # per step: (receive wall, obs stamp -> receipt ms, residual node's tick ms, weights version)
        self.steps: list[tuple[float, float, float, int]] = []
        self.versions: dict[int, float] = {}                  # weights version -> first use (wall)
        self.metrics: list[tuple[float, int, int, float]] = []  # (wall, learner_step, env_steps, achieved utd)
        self._utd_name = names.ACHIEVED_UTD
        clock = node.get_clock()

        def on_step(m):
            now = time.monotonic()
            self.steps.append((now, (clock.now().nanoseconds - stamp_to_ns(m.header.stamp)) / 1e6,
                               m.latency * 1e3, int(m.weights_version)))
            self.versions.setdefault(int(m.weights_version), now)

        def on_metrics(m):
            values = dict(zip(m.names, m.values))
            self.metrics.append((time.monotonic(), int(m.learner_step), int(m.env_steps),
                                 float(values.get(self._utd_name, float("nan")))))

        node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, self.on_status, LATCHED)
        node.create_subscription(Bool, names.SIM_SUCCESS, self.on_success, STREAM)
        node.create_subscription(StepRecord, names.STEP_RECORD, on_step, STREAM)
        node.create_subscription(LearnerMetrics, names.LEARNER_METRICS, on_metrics, STREAM)

    def on_status(self, msg) -> None:
        self.status = msg

    def on_success(self, msg) -> None:
        s = self.status
        if msg.data and s is not None and s.state == self.EpisodeStatus.RUNNING and self.success_seen_at is None:
            self.success_seen_at = time.monotonic()

    def _call(self, name: str, request) -> None:
        client = self.clients[name]
        if not client.service_is_ready():
            self.retry_at = time.monotonic() + 0.5
            return
        self.pending = (name, client.call_async(request), time.monotonic())

    def _expect(self, predicate) -> None:
        self.expect = (predicate, time.monotonic() + 3.0)

    def tick(self) -> None:
        now = time.monotonic()
        if self.pending is not None:
            name, future, sent = self.pending
            if not future.done():
                if now - sent > 10:
                    self.clients[name].remove_pending_request(future)
                    self.events.append((now, name, "no answer in 10 s"))
                    self.pending = None
                return
            self.pending = None
            r = future.result()
            ok = bool(getattr(r, "success", getattr(r, "accepted", False)))
            self.events.append((now, name, ("OK: " if ok else "REFUSED: ") + r.message))
            running = self.EpisodeStatus.RUNNING
            if name == "reset" and ok:
                self.reset_started = sent
                self._expect(lambda s: s.state == self.EpisodeStatus.RESETTING or s.ready or "FAILED" in s.message)
            if name == "start" and ok:
                self.current = {"start": sent, "success_seen": None, "label_at": None}
                eid = int(r.episode_id)
                self._expect(lambda s: s.state == running and s.episode_id == eid)
            if name == "label":
                if ok:
                    if self.current is not None:
                        self.current.update(label_at=now, success=self.decision[0], steps=self.status.steps,
                                            episode_id=int(r.episode_id))
                        self.episodes.append(self.current)
                    self.current, self.decision = None, None
                    self._expect(lambda s: s.state != running)
                elif "no steps" in r.message:       # nothing to label: end it
                    self._call("abort", self.Trigger.Request())
                else:                               # the recorder is catching up: press again
                    self.retry_at = now + 0.2
            if name == "abort" and ok:
                self.current, self.decision = None, None
                self._expect(lambda s: s.state != running)
            return
        s = self.status
        if s is None or now < self.retry_at:
            return
        if self.expect is not None:
            if not self.expect[0](s) and now < self.expect[1]:
                return
            self.expect = None
        if s.state == self.EpisodeStatus.IDLE:
            if self.reset_started is not None and s.ready:
                self.reset_s.append(now - self.reset_started)
                self.reset_started = None
            if s.ready:
                self.success_seen_at, self.decision = None, None
                self._call("start", self.StartEpisode.Request(explore=True, note="bench real-time operator"))
            else:
                self._call("reset", self.Trigger.Request())
        elif s.state == self.EpisodeStatus.RUNNING and self.current is not None:
            if (s.episode_id, s.steps) != self.progress[:2]:
                self.progress = (s.episode_id, s.steps, now)
            elif now - self.progress[2] > 20:       # the robot stopped stepping: a person aborts
                self.events.append((now, "stall", f"episode {s.episode_id} made no step for 20 s"))
                self.progress = (s.episode_id, s.steps, now)
                self._call("abort", self.Trigger.Request())
                return
            if self.decision is None:
                if self.success_seen_at is not None:
                    self.current["success_seen"] = self.success_seen_at
                    self.decision = (True, now + self.rng.uniform(*REACTION_S))
                elif s.steps >= MAX_STEPS:
                    self.decision = (False, now + self.rng.uniform(*REACTION_S))
            elif now >= self.decision[1]:
                self._call("label", self.LabelEpisode.Request(
                    success=self.decision[0], note="bench: success signal seen" if self.decision[0] else
                    f"bench: no success within {MAX_STEPS} steps"))
        elif s.state == self.EpisodeStatus.ESTOPPED:
            self.events.append((now, "estop", s.message))
            self.retry_at = now + 5


def percentiles(values, qs=(50, 90, 99)) -> str:
    if len(values) == 0:
        return "-"
    v = np.asarray(values, dtype=float)
    return " / ".join(f"{np.percentile(v, q):.1f}" for q in qs) + f" (max {v.max():.1f})"


def success_over_time(episodes, t0: float, block_min: float) -> list[str]:
    rows = []
    if not episodes:
        return rows
    end = max(e["label_at"] for e in episodes)
    k = 0
    while t0 + k * block_min * 60 <= end:
        lo, hi = t0 + k * block_min * 60, t0 + (k + 1) * block_min * 60
        block = [e for e in episodes if lo <= e["label_at"] < hi]
        if block:
            rows.append(f"{k * block_min:g}-{(k + 1) * block_min:g} min: {sum(e['label'] == 'success' for e in block)}"
                        f"/{len(block)}")
        k += 1
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resfit-ros bench real-time", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="session length after start-up (default 25)")
    parser.add_argument("--base", default="", help="BC base artifact (default: made once under --out)")
    parser.add_argument("--demos", default="", help="demonstration bags for the learner (default: made with the base)")
    parser.add_argument("--out", default="outputs/bench_real_time", help="base cache and run directories")
    parser.add_argument("--task", default="g1_pick_lift", help="simulated task (default g1_pick_lift)")
    parser.add_argument("--seed", type=int, default=0, help="the operator's reaction times")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--namespace", default="", help="ROS namespace of the graph (its namespace:=, e.g. robot_a; "
                                                        "the operator's node joins it; default: the root)")
    args = parser.parse_args(argv)
    if not args.minutes > 0:
        parser.error("--minutes must be > 0")
    from resfit_ros.graph import NAMESPACE_ARG, arg_problem

    if arg_problem(NAMESPACE_ARG, args.namespace) is not None:
        parser.error(f"--namespace {args.namespace!r}: not a ROS namespace")
    if bool(args.base) != bool(args.demos):
        parser.error("--base and --demos go together (the learner needs the demos the base was made from)")
    for flag, path in (("--base", args.base), ("--demos", args.demos)):
        if path and not Path(path).exists():
            parser.error(f"{flag} {path}: no such file or directory")

    import rclpy

    from resfit_ros.bags import scan_episodes
    from resfit_ros.graph import GRAPHS
    from resfit_ros.runner import GraphRunner

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    demos, base = (Path(args.demos), Path(args.base)) if args.base else prepare_base(out, args.task)
    run_dir = out / time.strftime("run-%Y%m%dT%H%M%S")
    domain = random.SystemRandom().randint(1, 100)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    log_path = run_dir / "graph.log"
    run_dir.mkdir(parents=True)
    log = open(log_path, "w")
    runner = GraphRunner(GRAPHS["robot_sim"], {"base_artifact": str(base), "demos_dir": str(demos),
                                                "output_dir": str(run_dir), "task": args.task,
                                                "namespace": args.namespace},
                         env=env, output=log, pid_dir=run_dir / "pids")
    print(f"bench real-time: robot_sim graph (config/real.yaml + config/robot_sim.yaml), task {args.task}, "
          f"{args.minutes:g} min, ROS_DOMAIN_ID {domain}"
          + (f", namespace {runner.namespace}" if runner.namespace else "")
          + f", load average {os.getloadavg()[0]:.1f}; logs {log_path}",
          flush=True)
    t_launch = time.monotonic()
    runner.start()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    # in the graph's namespace: its services and topics are node-relative
    node = rclpy.create_node("bench_real_time_operator", context=ctx, namespace=runner.namespace or "/")
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    op = Operator(node, random.Random(args.seed))
    code = 0
    try:
        # start-up: until the manager has heard every node an episode needs
        while True:
            text = log_path.read_text(errors="replace")
            if all(f"{n} is up" in text for n in WATCHED):
                break
            if not runner.poll() or time.monotonic() - t_launch > 300:
                print(f"error: the graph did not come up ({runner.exit_reason or 'timeout'}); see {log_path}",
                      file=sys.stderr)
                return 1
            executor.spin_once(timeout_sec=0.1)
        t0 = time.monotonic()
        startup_s = t0 - t_launch
        print(f"graph up after {startup_s:.0f} s", flush=True)
        pids = node_pids(run_dir / "pids")
        cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
        end, next_report, last_step_i = t0 + args.minutes * 60, t0 + 60, 0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.02)
            op.tick()
            now = time.monotonic()
            if now >= next_report:
                minute = op.steps[last_step_i:]
                last_step_i = len(op.steps)
                m = op.metrics[-1] if op.metrics else None
                labelled = op.episodes
                print(f"  {(now - t0) / 60:4.1f} min: {len(labelled)} episodes ({sum(e['success'] for e in labelled)} "
                      f"success), {len(minute)} steps this minute, latency p50/p99 "
                      f"{percentiles([s[1] for s in minute], (50, 99))} ms; learner step {m[1] if m else '-'}, "
                      f"achieved UTD {f'{m[3]:.2f}' if m else '-'}, weights "
                      f"v{max(op.versions) if op.versions else '-'} in use; load {os.getloadavg()[0]:.1f}", flush=True)
                next_report += 60
            if not runner.poll():
                print(f"error: the graph stopped: {runner.exit_reason}; see {log_path}", file=sys.stderr)
                code = 1
                break
        session_s = time.monotonic() - t0
        cpu = {n: (cpu_seconds(p) or 0) - (cpu0.get(n) or 0) for n, p in pids.items()}
    finally:
        runner.shutdown()
        log.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)

    # -- results ---------------------------------------------------------------------------------
    bags = [e for _, e in scan_episodes(run_dir / "episodes", images=False) if not isinstance(e, str)]
    by_id = {e.episode_id: e for e in bags}
    for e in op.episodes:
        bag = by_id.get(e["episode_id"])
        e["label"] = bag.label if bag is not None else "missing"
    labelled = [e for e in op.episodes if e["label"] in ("success", "failure")]
    lat = np.array([s[1] for s in op.steps]) if op.steps else np.zeros(0)
    tick = np.array([s[2] for s in op.steps]) if op.steps else np.zeros(0)
    hours = session_s / 3600
    ep_s = [e["label_at"] - e["start"] for e in op.episodes]
    react = [e["label_at"] - e["success_seen"] for e in op.episodes if e.get("success_seen")]
    utd = [m[3] for m in op.metrics if np.isfinite(m[3])]
    first = [e["label"] == "success" for e in labelled[:10]]
    last = [e["label"] == "success" for e in labelled[-10:]]
    print(f"\nsession {session_s / 60:.1f} min after a {startup_s:.0f} s start-up; {len(labelled)} labelled episodes "
          f"({len(labelled) / hours:.0f} per hour), {sum(e['label'] == 'success' for e in labelled)} successes, "
          f"{sum(1 for b in bags if b.aborted)} aborted; {len(bags)} bags")
    print(f"success of the recorded episodes over time (5-min blocks): "
          f"{', '.join(success_over_time(labelled, t0, 5)) or '-'}")
    print(f"control loop, obs stamp -> step record here (ms) p50/p90/p99: {percentiles(lat)}; "
          f"residual node's tick: {percentiles(tick)}; {len(op.steps)} steps")
    if op.metrics:
        m0, m1 = op.metrics[0], op.metrics[-1]
        rate = (m1[1] - m0[1]) / max(m1[0] - m0[0], 1e-9)
        print(f"learner: step {m0[1]} -> {m1[1]} ({rate:.2f} updates/s), env steps {m1[2]}, achieved UTD last "
              f"{m1[3]:.2f}")
    else:
        print("learner: no metrics received")
    versions = sorted(op.versions.items())
    print(f"weights versions the policy acted with: {len(versions)} "
          + ", ".join(f"v{v} at {(t - t0) / 60:.1f} min" for v, t in versions[:12])
          + (" ..." if len(versions) > 12 else ""))
    spent_eps = sum(ep_s)
    spent_reset = sum(op.reset_s)
    mean = (lambda v: float(np.mean(v)) if v else 0.0)
    print(f"where the time went: start-up {startup_s:.0f} s, resets {spent_reset:.0f} s ({len(op.reset_s)} x "
          f"{mean(op.reset_s):.1f} s), episodes {spent_eps:.0f} s (mean {mean(ep_s):.1f} s, of which the "
          f"operator's reaction {mean(react):.1f} s after a success), other "
          f"{max(session_s - spent_eps - spent_reset, 0):.0f} s")
    print("CPU per node (% of one core): "
          + ", ".join(f"{n} {100 * c / session_s:.0f}" for n, c in sorted(cpu.items())))
    refusals = [e for e in op.events if "REFUSED" in e[2] or e[1] in ("stall", "estop")]
    if refusals:
        print(f"{len(refusals)} refused or stalled calls, e.g.: " + "; ".join(f"{w}: {m}" for _, w, m in refusals[:3]))
    p99 = float(np.percentile(lat, 99)) if len(lat) else float("nan")
    print(f"real_time_minutes={session_s / 60:.1f} episodes={len(labelled)} "
          f"episodes_per_hour={len(labelled) / hours:.0f} "
          f"success_first={np.mean(first) if first else float('nan'):.2f} "
          f"success_last={np.mean(last) if last else float('nan'):.2f} control_p99_ms={p99:.1f} "
          f"achieved_utd={utd[-1] if utd else float('nan'):.2f} weights_versions={len(versions)}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "minutes": session_s / 60, "startup_s": startup_s, "episodes": [
                {k: (v - t0 if isinstance(v, float) and k in ("start", "label_at", "success_seen") else v)
                 for k, v in e.items()} for e in op.episodes],
            "latency_ms": {"p50": float(np.percentile(lat, 50)) if len(lat) else None, "p99": p99},
            "learner": [(t - t0, s, e, u) for t, s, e, u in op.metrics[::20]],
            "weights_versions": [(v, t - t0) for v, t in versions], "cpu_s": cpu, "reset_s": op.reset_s,
        }, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
