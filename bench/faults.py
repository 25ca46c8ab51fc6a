"""Fault suite: kill -9 each node of a running train_sim graph in turn, a corrupt newest
checkpoint, a full disk under the recorder; a monitor node checks every command and every episode.

    resfit-ros bench faults [--quick] [--faults synchronizer,recorder,...] [--json report.json] [--namespace NS]

It launches the train_sim graph (`resfit-ros launch train_sim`, respawn on, `--pid-dir` so each
node's process id is known) with a tiny state-only base on a random ROS_DOMAIN_ID, and a monitor
node in this process subscribed to every controller command topic, /joint_states,
/resfit/episode_status, /resfit/estop, the learner metrics and each node's presence topic. With
`--namespace NS` the graph runs in namespace NS (its namespace:=) and the monitor node too, so
these names are /NS/joint_states etc. Then,
one fault at a time, while an episode is running:

  kill -9 <node>        the runner respawns it; the graph must make progress again (a new episode
                        started after the node came back is labelled, learner updates advance).
                        Checked: commands while it was down (count; all within limits); the
                        episode it interrupted ends aborted, its bag is not a labelled one and the
                        learner never ingests it (learner: that episode goes on and is kept; the
                        restarted learner resumes from the newest checkpoint and rebuilds the same
                        buffer: its online transitions = the killed one's + episodes labelled
                        while it was down); episode manager: the ids continue.
  corrupt_checkpoint    kill -9 the learner and truncate its newest checkpoint before the respawn:
                        the restarted learner must refuse it with an error naming it and resume
                        from the previous one.
  flood                 malformed joint states (every kind of the bad-input catalogue, in turn) at 10x
                        the sensor rate (--flood-rate, default 200/s) for --flood-s seconds during an
                        episode, beside the robot's own: the loop must keep 95 % of the control steps
                        it made in as long just before, send nothing unsafe and finish the episode.
  full_disk             the recorder's episode directory is a small tmpfs (mount -t tmpfs; root in
                        a container is enough); it is filled to the last byte while an episode
                        runs: recording must stop with a clear error, the e-stop engage, no
                        command follow it. Skipped (said so) when tmpfs cannot be mounted. Last,
                        since it leaves the robot e-stopped.

Safety check of every command message (per controller group): finite, within the robot's joint
limits (config/robots/g1_sim.yaml), and within one step's change (max_velocity / 20 Hz) of the
previous command on that topic OR of the measured joint position (the robot may have been reset
or homed in between); after an e-stop, no command at all. A labelled episode (label on the status
topic) is lost when its bag is missing, incomplete or carries another label.

Ends with `faults_survived=<n>/<n> bad_inputs_rejected=<n> unsafe_commands=<n> episodes_lost=<n>`.
bad_inputs_rejected: a malformed observation, weights message, chunk-size command and status
are injected into the running graph (the catalogue of resfit_ros_testing.bad_inputs) and the
nodes' rejection counters (/diagnostics) must grow by as many.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from resfit_ros.graph import NAMESPACE_ARG, absolute_namespace, arg_problem
from resfit_ros.runner import stop_process

KILLABLE = ("synchronizer", "base_chunk_server", "residual_policy", "episode_manager", "recorder", "learner")
ALL_FAULTS = KILLABLE + ("corrupt_checkpoint", "flood", "full_disk")
# across the link between the robot's computer and the learner's machine (the graphs split, test/netns.py)
NETWORK_FAULTS = ("link_down", "netem", "learner_gone")
MIN_TICKS_UNDER_FLOOD = 0.95         # of the control steps in the same time just before
CONTROL_RATE_HZ = 20.0
TOL = 1e-6


# --- set-up ----------------------------------------------------------------------------------
def cli(*args: str, timeout: float = 600) -> None:
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", *args], check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL)


def tiny_base(work: Path) -> tuple[Path, Path]:
    """Two state-only scripted demos and a BC base trained for a few steps (seconds)."""
    demos, base = work / "demos", work / "base.safetensors"
    if not base.is_file():
        cli("demos", "--task", "g1_pick_lift", "--episodes", "2", "--out", str(demos), "--no-images", "--no-progress")
        cli("train-bc", "--demos", str(demos), "--out", str(base), "--steps", "30", "--state-only", "--no-progress")
    return demos, base


def bench_config(work: Path) -> Path:
    """config/sim.yaml with small, fast learner settings, no camera rendering, short stall timeouts."""
    import yaml

    from resfit_ros.robot import config_dir

    cfg = yaml.safe_load((config_dir() / "sim.yaml").read_text())

    def section(name: str) -> dict:
        return cfg.setdefault(f"/**/{name}", {}).setdefault("ros__parameters", {})   # the node in any namespace

    section("sim_robot").update(render=False)
    section("synchronizer").update(use_cameras=False)
    section("judge").update(stall_timeout_s=20.0)
    section("residual_policy").update(pace_learner_timeout_s=30.0, pace_free_steps=20)
    section("learner").update(hidden_dim=32, num_critic_heads=2, batch_size=32, initial_updates=20, random_warmup_steps=40,
                              critic_warmup_updates=50, checkpoint_every_updates=100, publish_every_updates=50,
                              utd=2)
    section("recorder").update(min_free_mb=1.0)
    path = work / "faults_sim.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def try_mount_tmpfs(path: Path, size_mb: int) -> str:
    """Mount a tmpfs of `size_mb` at `path`; '' on success, else why not."""
    path.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not root: cannot mount a tmpfs"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                       capture_output=True, text=True)
    return "" if r.returncode == 0 else f"mount -t tmpfs failed: {r.stderr.strip() or r.returncode}"


def fill_disk(path: Path, leave: int = 0, name: str = ".filler") -> int:
    """Write zeros into `path/<name>` until the file system has at most `leave` bytes free (0 = full)."""
    written = 0
    with open(path / name, "wb", buffering=0) as f:
        for block in (1 << 20, 1 << 12, 1):
            data = b"\0" * block
            while True:
                st = os.statvfs(path)
                if leave and st.f_bavail * st.f_frsize - block < leave:
                    break
                try:
                    f.write(data)
                    written += block
                except OSError:
                    break
    return written


# --- the monitor -------------------------------------------------------------------------------
class Monitor:
    """An rclpy node on the graph's domain: command safety, episodes, e-stop, learner progress, presence."""

    def __init__(self, domain: int, robot, watched: tuple[str, ...], namespace: str = ""):
        import rclpy
        from rclpy.event_handler import SubscriptionEventCallbacks
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, Empty, Float64MultiArray

        from resfit_ros import names
        from resfit_ros.msg import EpisodeStatus, LearnerMetrics, LearnerStatus, StepRecord
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from resfit_ros.nodes.common import LATCHED, PRESENCE, STREAM

        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        # in the graph's namespace ('' = the root): the graph's names are node-relative
        self.node = rclpy.create_node(f"faults_monitor_{os.getpid()}", context=self.ctx, namespace=namespace or "/")
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.robot = robot
        self.groups = robot.group_indices()
        self.max_step = robot.max_velocity / CONTROL_RATE_HZ
        self.index = {n: i for i, n in enumerate(robot.joint_names)}
        # Every check is made in the order the messages were SENT (DDS source timestamps, one host):
        # a monitor lagging on a loaded machine must not compare a command with a robot state that
        # was published after it, or miss one. Commands wait until the joint-state stream has
        # passed their send time (the lockstep simulator publishes a state after every step and at
        # least every 0.5 s), then are checked against the state just before them.
        self.q: np.ndarray | None = None
        self.states: list[tuple[int, np.ndarray]] = []       # (source ns, joint positions), recent
        self.state_stamps: list[int] = []                   # their header stamps (simulated time)
        self.recent_commands: list[tuple[int, str, np.ndarray]] = []
        self.traces: list[list[str]] = []                   # what happened around each unsafe command
        self.last_state_stamp = 0
        self.last_state_msg = None
        self.pending: list[tuple[int, str, np.ndarray, object]] = []   # commands not checked yet
        self.prev: dict[str, np.ndarray | None] = {g: None for g in self.groups}
        self.prev_ts: dict[str, int] = {g: 0 for g in self.groups}
        self.command_times: list[float] = []          # send time (s) of each command of the first group
        self.first_group = next(iter(self.groups))
        self.unsafe: list[tuple[float, str]] = []
        self.estop_on_since: float | None = None
        self.estop_times: list[float] = []
        self.statuses: list[tuple[float, object]] = []
        self.started: dict[int, float] = {}           # episode id -> first RUNNING seen
        self.labelled: dict[int, tuple[float, int, int]] = {}   # id -> (time, label, steps)
        self.aborted: dict[int, tuple[float, str]] = {}
        self.status = None
        self.learner_steps: list[tuple[float, int]] = []   # (time, learner_step) on every change
        # (time sent, LearnerStatus): the sender's clock, as a status of the killed learner can be
        # received (its callback run) after the kill
        self.learner_statuses: list[tuple[float, object]] = []
        self.presence: dict[str, list[tuple[float, int]]] = {n: [] for n in watched}
        self.alive: dict[str, int] = {n: 0 for n in watched}
        # deep queues: a monitor lagging on a loaded machine must not drop a command (a gap would look
        # like a jump); joint states subscribed first, so when both wait the robot state is read first
        deep = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.node.create_subscription(JointState, names.JOINT_STATES, self.on_joints, deep)
        for group, controller in robot.controllers.items():
            self.node.create_subscription(Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=controller),
                                          lambda m, info, g=group: self.on_command(g, m, info), deep)
        self.node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, self.on_status, LATCHED)
        # step records: who sent a suspicious command (the policy publishes one right after each command)
        self.step_sends: list[tuple[int, int, int]] = []      # (source ns, episode, step)
        self.node.create_subscription(StepRecord, names.STEP_RECORD, lambda m, info: self.step_sends.append(
            (int(info["source_timestamp"]), int(m.episode_id), int(m.step))), deep)
        self.node.create_subscription(Bool, names.ESTOP, self.on_estop, LATCHED)
        self.node.create_subscription(LearnerMetrics, names.LEARNER_METRICS, self.on_metrics, STREAM)
        self.node.create_subscription(LearnerStatus, names.LEARNER_STATUS,
                                      lambda m, info: self.learner_statuses.append(
                                          (int(info["source_timestamp"]) / 1e9, m)), LATCHED)
        for n in watched:
            self.node.create_subscription(
                Empty, names.ALIVE_TOPIC.format(node=n), lambda _m: None, PRESENCE,
                event_callbacks=SubscriptionEventCallbacks(liveliness=lambda info, n=n: self.on_presence(n, info)))
        self.EpisodeStatus = EpisodeStatus

    # -- callbacks ---------------------------------------------------------------------------------
    def on_joints(self, msg, info) -> None:
        # only whole, finite, in-order robot states (the bad-input injection sends others); one
        # stamped far ahead of the robot's (the flood's) would freeze this view of the robot
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if (sorted(msg.name) != sorted(self.index) or len(msg.position) != len(msg.name)
                or not np.all(np.isfinite(msg.position)) or stamp < self.last_state_stamp
                or (self.last_state_stamp and stamp > self.last_state_stamp + 10_000_000_000)):
            return
        self.last_state_stamp = stamp
        self.last_state_msg = msg
        q = np.full(self.robot.dof, np.nan)
        for name, pos in zip(msg.name, msg.position):
            q[self.index[name]] = pos
        self.q = q
        self.states.append((int(info["source_timestamp"]), q))
        self.state_stamps.append(stamp)
        self.check_pending()

    def on_command(self, group: str, msg, info) -> None:
        ts = int(info["source_timestamp"])
        if group == self.first_group:
            self.command_times.append(ts / 1e9)
        self.pending.append((ts, group, np.asarray(msg.data, dtype=np.float64), self.status))
        self.check_pending()

    def check_pending(self, flush: bool = False) -> None:
        """Check the commands sent before the newest joint state (all of them when flushing)."""
        if not self.pending:
            return
        horizon = self.states[-1][0] if self.states else 0
        wall_ns = time.time_ns()
        ready = sorted(c for c in self.pending if flush or c[0] < horizon or wall_ns - c[0] > 2_000_000_000)
        if not ready:
            return
        done = {id(c) for c in ready}
        self.pending = [c for c in self.pending if id(c) not in done]
        stamps = [t for t, _ in self.states]
        import bisect

        for ts, group, x, status in ready:
            k = bisect.bisect_right(stamps, ts) - 1
            q = self.states[k][1] if k >= 0 else None
            self.check_command(ts, group, x, q, status)
        if len(self.states) > 4000:
            self.states, self.state_stamps = self.states[-2000:], self.state_stamps[-2000:]

    def trace(self, ts: int, group: str, x: np.ndarray) -> list[str]:
        """The states and commands of `group` sent in the 0.6 s before this command, in send order."""
        idx = self.groups[group]
        ev = [(t, f"state stamp {st / 1e9:.3f} q={np.round(q[idx], 2).tolist()}")
              for (t, q), st in zip(self.states[-100:], self.state_stamps[-100:]) if ts - 6e8 <= t <= ts]
        ev += [(t, f"command {np.round(c, 2).tolist()}" + (" <- THIS" if t == ts else ""))
               for t, g, c in self.recent_commands[-300:] if g == group and ts - 6e8 <= t <= ts]
        ev += [(t, f"step record ep {e} step {k}") for t, e, k in self.step_sends[-100:] if ts - 6e8 <= t <= ts]
        return [f"{(t - ts) / 1e6:+8.1f} ms {what}" for t, what in sorted(ev)]

    def check_command(self, ts: int, group: str, x: np.ndarray, q, status) -> None:
        now = ts / 1e9
        self.recent_commands.append((ts, group, x))
        if len(self.recent_commands) > 2000:
            self.recent_commands = self.recent_commands[-1000:]
        idx = self.groups[group]
        problem = ""
        if x.shape != (len(idx),) or not np.all(np.isfinite(x)):
            problem = f"{group}: {x.shape[0]} values / non-finite"
        elif np.any(x < self.robot.lower[idx] - TOL) or np.any(x > self.robot.upper[idx] + TOL):
            problem = f"{group}: outside the joint limits"
        else:
            step = self.max_step[idx] + TOL
            prev = self.prev[group]
            near_prev = prev is not None and bool(np.all(np.abs(x - prev) <= step))
            near_q = q is not None and bool(np.all(np.abs(x - q[idx]) <= step))
            if (prev is not None or q is not None) and not (near_prev or near_q):   # else nothing to compare
                d_prev = float(np.max(np.abs(x - prev))) if prev is not None else float("nan")
                d_q = float(np.max(np.abs(x - q[idx]))) if q is not None else float("nan")
                st = status
                where = (f"episode {st.episode_id} state {st.state} step {st.steps}" if st is not None else "no status")
                near = [(abs(t - ts), e, k) for t, e, k in self.step_sends[-200:] if abs(t - ts) < 20_000_000]
                who = (f"policy step {min(near)[2]} of episode {min(near)[1]}" if near else "no step record near it")
                problem = (f"{group}: jump of {min(d_prev, d_q):.3f} rad from the last command ({d_prev:.3f}) and "
                           f"the joints ({d_q:.3f}), limit {float(np.max(self.max_step[idx])):.3f}; {where}; {who}")
        if self.estop_on_since is not None and now > self.estop_on_since + 0.5:
            problem = problem or f"{group}: command {now - self.estop_on_since:.2f} s after the e-stop"
        if ts < self.prev_ts[group]:
            problem = problem or f"{group}: command sent before the previous one (out of order)"
        self.prev_ts[group] = max(self.prev_ts[group], ts)
        if problem:
            self.unsafe.append((now, problem))
            self.traces.append(self.trace(ts, group, x))
        if x.shape == (len(idx),) and np.all(np.isfinite(x)):
            self.prev[group] = x

    def on_status(self, msg) -> None:
        if msg.state not in (0, 1, 2, 3) or msg.label not in (-1, 0, 1):
            return      # a malformed one (the bad-input injection): the graph must reject it, we ignore it
        now = time.time()
        self.status = msg
        self.statuses.append((now, msg))
        eid = int(msg.episode_id)
        if msg.state == self.EpisodeStatus.RUNNING:
            self.started.setdefault(eid, now)
        elif eid and msg.label != self.EpisodeStatus.LABEL_NONE and not msg.aborted:
            self.labelled.setdefault(eid, (now, int(msg.label), int(msg.steps)))
        elif eid and msg.aborted:
            self.aborted.setdefault(eid, (now, msg.message))

    def on_estop(self, msg, info) -> None:
        if msg.data:
            sent = int(info["source_timestamp"]) / 1e9
            self.estop_on_since = self.estop_on_since or sent
            self.estop_times.append(sent)
        else:
            self.estop_on_since = None

    def on_metrics(self, msg) -> None:
        if len(msg.names) != len(msg.values):
            return      # malformed (injected)
        step = int(msg.learner_step)
        if not self.learner_steps or self.learner_steps[-1][1] != step:
            self.learner_steps.append((time.time(), step))

    def learner_status_before(self, t: float):
        return next((m for tr, m in reversed(self.learner_statuses) if tr < t), None)

    def learner_status_after(self, t: float):
        """The first status of a learner (re)started after t: what it resumed from and rebuilt."""
        return next((m for tr, m in self.learner_statuses if tr > t), None)

    def on_presence(self, name: str, info) -> None:
        self.alive[name] = int(info.alive_count)
        self.presence[name].append((time.time(), int(info.alive_count)))

    # -- queries -------------------------------------------------------------------------------------
    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def wait(self, predicate, timeout: float, graph: subprocess.Popen | None = None) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            if graph is not None and graph.poll() is not None:
                return bool(predicate())
            self.executor.spin_once(timeout_sec=0.02)
        return bool(predicate())

    def running(self, min_steps: int = 0) -> int | None:
        s = self.status
        if s is not None and s.state == self.EpisodeStatus.RUNNING and s.steps >= min_steps:
            return int(s.episode_id)
        return None

    def commands_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.command_times if t0 <= t <= t1)

    def unsafe_between(self, t0: float, t1: float) -> list[str]:
        return [p for t, p in self.unsafe if t0 <= t <= t1]

    def learner_steady(self, window_s: float = 10.0) -> bool:
        """The learner has been updating through the last `window_s` seconds (not starting up,
        reading its bags or in a warm-up the paced robot waits for)."""
        now = time.time()
        recent = [tt for tt, _ in self.learner_steps if tt > now - window_s]
        return len(recent) >= 3 and recent[0] < now - 0.8 * window_s and recent[-1] > now - 1.0

    def learner_progress_after(self, t: float) -> bool:
        after = [s for tt, s in self.learner_steps if tt > t]
        return len(after) >= 2 and after[-1] > after[0]

    def labelled_started_after(self, t: float) -> list[int]:
        return [e for e, (tl, _, _) in self.labelled.items() if self.started.get(e, 0) > t]

    def up_after(self, name: str, t: float) -> float | None:
        for tt, alive in self.presence[name]:
            if tt > t and alive > 0:
                return tt
        return None

    def close(self) -> None:
        self.check_pending(flush=True)
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


# --- the faults -----------------------------------------------------------------------------------
@dataclass
class FaultResult:
    fault: str
    survived: bool = False
    interrupted_episode: int | None = None
    downtime_s: float = float("nan")
    commands_while_down: int = 0
    unsafe_while_down: int = 0
    recovered_s: float = float("nan")
    t_fault: float = 0.0                 # wall time of the fault
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Suite:
    def __init__(self, args, work: Path):
        from resfit_ros.robot import RobotDescription, config_dir

        self.args = args
        self.work = work
        self.run = work / "run"
        self.episodes = self.run / "episodes"
        self.pids = work / "pids"
        self.log = work / "launch.log"
        self.robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
        # 215..232: valid with default Fast DDS ports and away from the tests' 1..100
        self.domain = args.domain or random.SystemRandom().randint(215, 232)
        self.graph: subprocess.Popen | None = None          # train_sim, or the robot side when split
        self.learner_graph: subprocess.Popen | None = None  # the learner side when split
        self.learner_log = work / "learner.log"
        self.link = None                                     # test/netns.VethLink when split
        self.mon: Monitor | None = None
        self.learner_statuses: list[tuple[float, object]] = []   # the monitor's, kept when it closes
        self.mounted = False
        self.results: list[FaultResult] = []
        self.mon_labelled: dict = {}
        self.unsafe: list = []
        self.traces: list = []
        self.commands = 0
        self.mount_problem = ""
        self.lost, self.lost_why, self.excluded_problems = 0, [], []
        self.bad_missed = 0
        self.recovery_timeout = 90.0 if args.quick else 150.0

    # -- graph ---------------------------------------------------------------------------------
    def pid(self, name: str) -> int | None:
        try:
            return int((self.pids / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.log, self.learner_log) if p.exists())

    def start(self, demos: Path, base: Path, config: Path, full_disk: bool) -> None:
        for d in (self.run, self.pids):      # a fresh run in a reused --workdir
            shutil.rmtree(d, ignore_errors=True)
        self.run.mkdir(parents=True, exist_ok=True)
        if full_disk:
            why = try_mount_tmpfs(self.episodes, self.args.tmpfs_mb)
            self.mounted = not why
            self.mount_problem = why
        env = dict(os.environ, ROS_DOMAIN_ID=str(self.domain), PYTHONUNBUFFERED="1")
        launch = [sys.executable, "-m", "resfit_ros.cli", "launch", "--pid-dir", str(self.pids), "--max-restarts", "3"]
        args = [f"base_artifact:={base}", f"demos_dir:={demos}", f"output_dir:={self.run}", f"config:={config}",
                f"namespace:={self.args.namespace}"]
        if not self.args.split:
            self.graph = subprocess.Popen(launch + ["train_sim", *args, f"max_steps:={self.args.max_steps}"], env=env,
                                          stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        else:
            # the learner graph on a second machine: a network namespace behind a veth link
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from test.netns import VethLink

            self.link = VethLink.create()
            os.environ.update(self.link.robot_env())          # this monitor watches from the robot's side
            self.learner_graph = subprocess.Popen(
                self.link.prefix() + launch + ["learner", *args, "use_sim_time:=true"],
                env={**env, **self.link.learner_env()}, stdout=open(self.learner_log, "w"), stderr=subprocess.STDOUT,
                start_new_session=True)
            self.graph = subprocess.Popen(
                launch + ["robot", *args, "use_sim:=true", "use_sim_time:=true", f"max_steps:={self.args.max_steps}"],
                env={**env, **self.link.robot_env()}, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                start_new_session=True)
        self.mon = Monitor(self.domain, self.robot, KILLABLE, absolute_namespace(self.args.namespace))

    def stop(self) -> None:
        """Stop the graph and the monitor, check the bags (before the tmpfs goes), unmount."""
        self.stop_graph()
        try:
            self.lost, self.lost_why = self.episodes_lost()
            self.excluded_problems = self.interrupted_excluded()
        finally:
            if self.mounted:
                if subprocess.run(["umount", str(self.episodes)], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", str(self.episodes)], capture_output=True)
                self.mounted = False

    def stop_graph(self) -> None:
        if self.graph is not None and self.graph.poll() is None:
            # let the last labelled episode's bag be finished (finish_delay_s) before stopping
            if self.mon is not None:
                self.mon.spin(1.5)
            stop_process(self.graph, grace=15.0, term_s=5.0, kill_s=5.0)
        if self.learner_graph is not None and self.learner_graph.poll() is None:
            stop_process(self.learner_graph, grace=15.0, term_s=5.0, kill_s=5.0)
        if self.link is not None:
            self.link.close()
            self.link = None
        for f in self.pids.glob("*.pid") if self.pids.is_dir() else []:
            # the runner removes these on a clean shutdown; any left name an orphaned node of ours
            try:
                pid = int(f.read_text())
                if f.stem != "runner":
                    os.killpg(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if self.mon is not None:
            self.mon_labelled = dict(self.mon.labelled)
            self.unsafe = list(self.mon.unsafe)
            self.traces = list(self.mon.traces)
            self.commands = len(self.mon.command_times)
            self.learner_statuses = list(self.mon.learner_statuses)
            self.mon.close()
            self.mon = None

    def warm_up(self) -> bool:
        """Every node up, two episodes labelled, a checkpoint written, learner updating."""
        mon = self.mon
        ok = mon.wait(lambda: len(mon.labelled) >= 2 and (self.run / "checkpoints" / "latest").is_file()
                      and mon.learner_progress_after(0), 240, self.graph)
        return ok

    # -- one kill -9 ------------------------------------------------------------------------------
    def kill(self, name: str, corrupt: bool = False, min_steps: int = 3) -> FaultResult:
        mon = self.mon
        res = FaultResult("corrupt_checkpoint" if corrupt else f"kill -9 {name}")
        if not mon.wait(lambda: mon.running(min_steps) is not None, 120, self.graph):
            res.problems.append("no running episode to interrupt")
            return res
        if corrupt and not mon.wait(lambda: len(list((self.run / "checkpoints").glob("ckpt-*"))) >= 2, 120,
                                    self.graph):  # keep_last=2: the newest and the one before
            res.problems.append("the learner never kept two checkpoints")
            return res
        eid = mon.running(min_steps)
        pid = self.pid(name)
        if pid is None:
            res.problems.append(f"no pid file for {name}")
            return res
        status_before = mon.learner_status_before(time.time())
        online_before = None if status_before is None else int(status_before.online_transitions)
        t_kill = res.t_fault = time.time()
        os.kill(pid, signal.SIGKILL)
        mon.wait(lambda: not os.path.exists(f"/proc/{pid}/status") or "State:\tZ" in open(f"/proc/{pid}/status").read(),
                 5)
        # the killed learner writes no more checkpoints: the one `latest` names and the learner's
        # next candidate, the newest other one (newer than `latest` when the kill fell between a
        # checkpoint's rename and the switch of `latest`)
        ckpt_latest = self.latest_checkpoint()
        previous = sorted(p.name for p in (self.run / "checkpoints").glob("ckpt-*")
                          if ckpt_latest is None or p.name != ckpt_latest.name)
        res.interrupted_episode = None if name == "learner" else eid
        if corrupt:
            # the runner respawns after respawn_delay_s (1 s): corrupt the newest checkpoint meanwhile
            newest = ckpt_latest
            tensors = newest / "tensors.safetensors"
            size = tensors.stat().st_size
            with open(tensors, "r+b") as f:
                f.truncate(size // 2)
            res.notes.append(f"truncated {newest.name}/tensors.safetensors from {size} to {size // 2} bytes")
        if not mon.wait(lambda: self.pid(name) not in (None, pid), 30, self.graph):
            res.problems.append("the runner did not respawn it")
            return res
        if not mon.wait(lambda: mon.up_after(name, t_kill) is not None, 90, self.graph):
            res.problems.append("the respawned node never came up (presence); its log since the respawn:\n"
                                + self.node_log_since_respawn(name))
            return res
        t_up = mon.up_after(name, t_kill)
        res.downtime_s = t_up - t_kill
        res.commands_while_down = mon.commands_between(t_kill, t_up)
        res.unsafe_while_down = len(mon.unsafe_between(t_kill, t_up))

        # progress again: an episode started after the node came back is labelled; learner updates advance
        need = 1 if self.args.quick else 2
        recovered = mon.wait(lambda: len(mon.labelled_started_after(t_up)) >= need
                             and mon.learner_progress_after(t_up), self.recovery_timeout, self.graph)
        if not recovered:
            res.problems.append(f"no progress within {self.recovery_timeout:.0f} s of the restart "
                                f"({len(mon.labelled_started_after(t_up))} new labelled episodes, learner "
                                f"{'advancing' if mon.learner_progress_after(t_up) else 'not advancing'})")
            return res
        res.recovered_s = time.time() - t_up

        # the interrupted episode: aborted, never labelled (learner: goes on, kept)
        if name == "learner":
            if eid in mon.aborted:
                res.notes.append(f"episode {eid} running at the kill was aborted ({mon.aborted[eid][1]})")
            else:
                mon.wait(lambda: eid in mon.labelled or eid in mon.aborted, 30, self.graph)
                res.notes.append(f"episode {eid} running at the kill went on: "
                                 + ("labelled" if eid in mon.labelled else "aborted" if eid in mon.aborted else "?"))
            if not mon.wait(lambda: mon.learner_status_after(t_kill) is not None, 60, self.graph):
                res.problems.append("the restarted learner published no status")
            else:
                self.check_learner_resume(res, t_kill, ckpt_latest, online_before,
                                          previous[-1] if corrupt and previous else None)
        else:
            if eid in mon.labelled:
                # it ended before the death was noticed (e.g. the rest of its base chunk was already
                # there): a complete episode, kept; episodes_lost checks its bag is complete and usable
                res.notes.append(f"episode {eid} completed before the death was noticed: kept")
                res.interrupted_episode = None
                if name in ("episode_manager", "recorder"):   # cannot complete without them
                    res.problems.append(f"episode {eid} was labelled while the {name} was down")
            elif eid not in mon.aborted:   # a restarted latched publisher: later statuses superseded it
                res.notes.append(f"episode {eid}: no terminal status seen (superseded); its bag is checked")
            else:
                res.notes.append(f"episode {eid} aborted ({mon.aborted[eid][1].split(' aborted: ', 1)[-1]})")
        if name == "episode_manager":
            later = sorted(e for e in mon.started if mon.started[e] > t_kill)
            if later and later[0] != eid + 1:
                res.problems.append(f"episode ids did not continue: {eid} was followed by {later[0]}")
            elif later:
                res.notes.append(f"ids continue: next episode {later[0]}")
        res.survived = not res.problems
        return res

    def node_log_since_respawn(self, name: str, lines: int = 25) -> str:
        """The node's own lines (and the runner's about it) from its last start on: why it is not up."""
        text = self.log_text().splitlines()
        starts = [i for i, line in enumerate(text) if line.startswith(f"[launch] started {name} ")]
        mine = [line for line in text[starts[-1] if starts else 0:]
                if line.startswith(f"[{name}] ") or (line.startswith("[launch] ") and f" {name} " in line + " ")]
        return "\n".join("      " + line for line in mine[-lines:]) or "      (nothing)"

    def latest_checkpoint(self) -> Path | None:
        latest = self.run / "checkpoints" / "latest"
        try:
            return self.run / "checkpoints" / latest.read_text().strip()
        except OSError:
            return None

    def check_learner_resume(self, res: FaultResult, t_kill: float, ckpt: Path | None, online_before: int | None,
                             expected_previous: str | None) -> None:
        status = self.mon.learner_status_after(t_kill)
        used = Path(status.resumed_from).name if status.resumed_from else "?"
        refused = list(status.refused_checkpoints)
        if not status.resumed_from:
            res.problems.append("the restarted learner did not resume from a checkpoint")
        if expected_previous is not None:      # the newest checkpoint was corrupted
            if ckpt is None or not any(ckpt.name in r for r in refused):
                res.problems.append(f"the corrupt checkpoint {ckpt.name if ckpt else '?'} was not refused")
            else:
                res.notes.append("refused: " + next(r for r in refused if ckpt.name in r).split(": ", 1)[-1][:110])
            if used != expected_previous:
                res.problems.append(f"resumed from {used}, expected the previous checkpoint {expected_previous}")
        elif ckpt is not None and used != ckpt.name:
            res.problems.append(f"resumed from {used}, but the newest checkpoint at the kill was {ckpt.name}")
        if status.resumed_from:
            res.notes.append(f"resumed from {used} at {status.resumed_critic_updates} updates")
        # same buffer: the rebuilt one holds exactly the complete labelled bags up to the newest it
        # names, which include every bag the killed learner had
        from resfit_ros.bags import scan_episodes

        online_after, n_after = int(status.online_transitions), len(status.online_episodes)
        newest = max(status.online_episodes, default="")
        unusable = set(self.learner_skipped())
        bags = [ep for _, ep in scan_episodes(self.episodes, images=False)
                if not isinstance(ep, str) and ep.label is not None and not ep.aborted and ep.path.name <= newest
                and ep.path.name not in unusable]
        expected = sum(ep.num_steps for ep in bags)
        killed = self.mon.learner_status_before(t_kill)
        before = sorted(killed.online_episodes) if killed is not None else []
        if online_after != expected or n_after != len(bags):
            res.problems.append(f"rebuilt buffer: {online_after} online transitions from {n_after} episodes; the "
                                f"complete bags up to {newest or '-'} hold {expected} from {len(bags)}")
        elif before and before[-1] > newest:
            res.problems.append(f"rebuilt buffer lacks {before[-1]}, which the killed learner had")
        elif online_before is not None and online_after < online_before:
            res.problems.append(f"rebuilt buffer smaller ({online_after}) than before the kill ({online_before})")
        else:
            res.notes.append(f"same buffer: {online_after} online transitions = the {len(bags)} complete bags "
                             f"(killed learner had {online_before})")

    # -- flood of malformed joint states ---------------------------------------------------------
    def flood(self) -> FaultResult:
        """Malformed joint states (the catalogue's, in turn) at `--flood-rate` per second for
        `--flood-s` seconds during an episode, beside the robot's own. The loop must keep
        MIN_TICKS_UNDER_FLOOD of the control steps it made in as long just before and just after
        (their mean: the paced simulator's rate follows the learner's, which drifts), send no
        unsafe command, and finish the episode it was in. The flood starts once the learner updates
        steadily: after a restart (the fault before) it reads every bag first, and the paced robot
        waits for it, flood or not."""
        from sensor_msgs.msg import JointState

        from resfit_ros.nodes.common import STREAM
        from resfit_ros_testing.bad_inputs import Context, catalogue

        mon, args = self.mon, self.args
        res = FaultResult(f"flood {args.flood_rate:g} bad joint states/s")
        topic = self.robot.joint_state_topics[0]
        entries = [e for e in catalogue(self.robot) if e.kind == "topic" and e.target == topic]
        pub = mon.node.create_publisher(JointState, topic, STREAM)
        try:
            if not mon.wait(lambda: mon.running(3) is not None and mon.last_state_msg is not None
                            and mon.learner_steady(), 120, self.graph):
                res.problems.append("no running episode with a steadily updating learner to flood")
                return res
            t_base = time.time()
            mon.spin(args.flood_s)
            t0 = res.t_fault = time.time()
            eid = mon.running()
            sent, period, nxt = 0, 1.0 / args.flood_rate, time.monotonic()
            end, built_at, msgs = nxt + args.flood_s, 0.0, []
            while time.monotonic() < end:
                if time.monotonic() >= nxt:
                    if time.monotonic() - built_at > 0.25:   # stamps near the robot's own (built 4x/s: cheap to send)
                        ctx = Context(self.robot, mon.last_state_stamp, {topic: mon.last_state_msg})
                        msgs, built_at = [e.build(ctx) for e in entries], time.monotonic()
                    pub.publish(msgs[sent % len(msgs)])
                    sent += 1
                    nxt += period
                mon.executor.spin_once(timeout_sec=max(0.0, min(0.002, nxt - time.monotonic())))
            t1 = time.time()
            mon.spin(t1 - t0)
            before, flooded, after = (mon.commands_between(t_base, t0), mon.commands_between(t0, t1),
                                      mon.commands_between(t1, t1 + (t1 - t0)))
            ratio = flooded / max((before + after) / 2, 1)
            res.notes.append(f"{sent} bad joint states in {t1 - t0:.1f} s ({sent / (t1 - t0):.0f}/s, "
                             f"{len(entries)} kinds); control steps {flooded} against {before} just before and "
                             f"{after} just after in as long ({ratio:.0%})")
            res.downtime_s = 0.0
            res.commands_while_down = flooded
            res.unsafe_while_down = len(mon.unsafe_between(t0, t1 + 1.0))
            if ratio < MIN_TICKS_UNDER_FLOOD:
                res.problems.append(f"the loop kept {ratio:.0%} of its control steps under the flood "
                                    f"(at least {MIN_TICKS_UNDER_FLOOD:.0%} required)")
            if eid is not None and not mon.wait(lambda: eid in mon.labelled or eid in mon.aborted, 60, self.graph):
                res.problems.append(f"episode {eid}, running when the flood began, never finished")
            elif eid is not None:
                res.notes.append(f"episode {eid} " + ("labelled" if eid in mon.labelled else
                                                      f"aborted ({mon.aborted[eid][1]})"))
            if not mon.wait(lambda: len(mon.labelled_started_after(t1)) >= 1, self.recovery_timeout, self.graph):
                res.problems.append("no episode labelled after the flood")
            else:
                res.recovered_s = time.time() - t1
        finally:
            mon.node.destroy_publisher(pub)
        res.survived = not res.problems
        return res

    # -- the link between the machines -------------------------------------------------------------
    def network(self, fault: str) -> FaultResult:
        """link_down: the link down for --link-down-s during an episode; netem: --netem-delay-ms added
        latency and --netem-loss % loss both ways for --netem-s; learner_gone: the learner's machine
        stops for good (kill -9 of its whole graph). The robot side sends nothing unsafe, aborts an
        episode whose steps could not be recorded, and (but after learner_gone) trains again once
        the link is back; learner_gone: it stays up, safe and idle."""
        mon, args, link = self.mon, self.args, self.link
        titles = {"link_down": f"link down {args.link_down_s:g} s",
                  "netem": f"link +{args.netem_delay_ms:g} ms, {args.netem_loss:g} % loss for {args.netem_s:g} s",
                  "learner_gone": "learner machine gone for good"}
        res = FaultResult(titles[fault])
        if not mon.wait(lambda: mon.running(3) is not None, 120, self.graph):
            res.problems.append("no running episode to interrupt")
            return res
        eid = res.interrupted_episode = mon.running(3)
        t0 = res.t_fault = time.time()
        if fault == "link_down":
            link.down()
            mon.spin(args.link_down_s)
            link.up()
        elif fault == "netem":
            problem = link.netem(args.netem_delay_ms, args.netem_loss)
            if problem:
                res.notes.append(f"skipped: tc netem: {problem}")
                res.interrupted_episode = None
                return res
            mon.spin(args.netem_s)
            link.clear_netem()
        else:
            res.notes.append(f"kill -9 of the {link.power_off()} processes on the learner's machine")
            self.learner_graph.wait(10)
            mon.spin(15.0)
        t1 = time.time()
        res.downtime_s = t1 - t0
        res.commands_while_down = mon.commands_between(t0, t1)
        mon.wait(lambda: eid in mon.labelled or eid in mon.aborted, 30, self.graph)
        if eid in mon.labelled:
            res.interrupted_episode = None   # it ended before the link failed it: a complete episode, kept
            res.notes.append(f"episode {eid} labelled (its bag is checked)")
        elif eid in mon.aborted:
            res.notes.append(f"episode {eid} aborted ({mon.aborted[eid][1].split(' aborted: ', 1)[-1]})")
        else:
            res.problems.append(f"episode {eid}, running at the fault, neither labelled nor aborted")
        if fault == "learner_gone":
            mon.spin(5.0)
            res.unsafe_while_down = len(mon.unsafe_between(t0, time.time()))
            # the learner machine's disk outlives it: what its recorder does at the next boot
            from resfit_ros.bags.recover import recover_episodes

            for path, result in recover_episodes(self.episodes):
                res.notes.append(f"at the next boot the recorder finishes {path.name}: "
                                 + (result.name if isinstance(result, Path) else f"stays incomplete ({result})"))
            started = [e for e, t in mon.started.items() if t > t1]
            if self.graph.poll() is not None:
                res.problems.append("the robot graph stopped")
            if started:
                res.problems.append(f"episodes {started} started without a recorder")
            else:
                res.notes.append("robot side up and idle; no episode started without the recorder")
        else:
            recovered = mon.wait(lambda: len(mon.labelled_started_after(t1)) >= 1 and mon.learner_progress_after(t1),
                                 self.recovery_timeout, self.graph)
            res.unsafe_while_down = len(mon.unsafe_between(t0, time.time()))
            if not recovered:
                res.problems.append(f"no labelled episode and learner progress within {self.recovery_timeout:.0f} s "
                                    "of the link's return")
            else:
                res.recovered_s = time.time() - t1
        res.survived = not res.problems
        return res

    # -- full disk ------------------------------------------------------------------------------------
    def full_disk(self) -> FaultResult:
        mon = self.mon
        res = FaultResult("full disk (recorder)")
        if not self.mounted:
            res.notes.append(f"skipped: {self.mount_problem}")
            return res
        # leave a few MB (above the recorder's min_free_mb), then take the rest while an episode has
        # just started: the disk runs full mid-episode, not in the last moments before a label
        prefill = fill_disk(self.episodes, leave=4 << 20)
        if not mon.wait(lambda: mon.running(1) is not None and mon.status.steps <= 5, 120, self.graph):
            res.problems.append("no running episode")
            return res
        eid = mon.running(1)
        t_fill = res.t_fault = time.time()
        written = prefill + fill_disk(self.episodes, name=".filler2")
        res.interrupted_episode = eid
        res.notes.append(f"filled the {self.args.tmpfs_mb} MB tmpfs under the episodes to the last byte "
                         f"at step {mon.status.steps} of episode {eid} ({written / 2**20:.1f} MB of filler)")
        if not mon.wait(lambda: mon.estop_on_since is not None, 15, self.graph):
            res.problems.append("no e-stop within 15 s of the disk filling up")
            return res
        t_stop = mon.estop_on_since
        res.downtime_s = t_stop - t_fill
        mon.spin(3.0)
        after = mon.commands_between(t_stop + 0.5, time.time())
        res.commands_while_down = mon.commands_between(t_fill, t_stop)
        res.unsafe_while_down = len(mon.unsafe_between(t_fill, time.time()))
        if after:
            res.problems.append(f"{after} commands more than 0.5 s after the e-stop")
        text = self.log_text()
        err = next((line for line in text.splitlines() if line.startswith("[recorder]") and "FATAL" in line), "")
        if "disk nearly full" not in err and "No space left" not in err:
            res.problems.append("the recorder gave no clear disk-full error")
        else:
            res.notes.append("recorder: " + err.split("]: ", 1)[-1][:140])
        s = mon.status
        if s is None or s.state != mon.EpisodeStatus.ESTOPPED:
            res.problems.append("the episode manager is not e-stopped")
        if eid in mon.labelled:
            res.problems.append(f"episode {eid}, running when the disk filled, was labelled")
        elif eid in mon.aborted:
            res.notes.append(f"episode {eid} aborted: {mon.aborted[eid][1]}")
        res.survived = not res.problems
        return res

    # -- bad inputs -----------------------------------------------------------------------------------
    def estop(self) -> str:
        """Engage the e-stop through the operator's service unless it is engaged already."""
        from std_srvs.srv import SetBool

        from resfit_ros import names

        mon = self.mon
        if mon.status is not None and mon.status.state == mon.EpisodeStatus.ESTOPPED:
            mon.spin(1.0)
            return "robot e-stopped (full disk)"
        client = mon.node.create_client(SetBool, names.SET_ESTOP)
        if not client.wait_for_service(timeout_sec=10.0):
            return "e-stop service not available"
        future = client.call_async(SetBool.Request(data=True))
        mon.wait(lambda: future.done() and mon.status is not None and mon.status.state == mon.EpisodeStatus.ESTOPPED,
                 10.0)
        mon.spin(1.0)     # the recorder finishes the aborted episode's bag (finish_delay_s)
        return f"robot e-stopped through {client.service_name}"

    def bad_inputs(self) -> tuple[int, list[str]]:
        """The catalogue of malformed messages (resfit_ros_testing/bad_inputs.py) into the running
        graph; (rejections counted on /diagnostics, notes). Controller commands and the scene
        reset are left out (sim=False): this monitor must see only the graph's own commands."""
        try:
            from resfit_ros_testing.bad_inputs import catalogue, inject_bad_inputs
        except ImportError as exc:
            return 0, [f"no bad-input catalogue ({exc})"]
        # this graph's synchronizer takes no camera (bench_config): camera inputs have no consumer
        cameras = set(self.robot.cameras.values())
        entries = [e for e in catalogue(self.robot) if e.target not in cameras]
        report = inject_bad_inputs(self.mon.node, self.mon.spin, self.robot, sim=False, include_recorded=False,
                                   entries=entries)
        notes = [f"{len(report.rejected)} rejected of {report.injected} injected ({len(report.skipped)} skipped, "
                 f"{len(report.missed)} missed)"]
        notes += [f"MISSED {r.name}: {r.detail}" for r in report.missed]
        self.bad_missed = len(report.missed)
        return len(report.rejected), notes

    # -- after the run --------------------------------------------------------------------------------
    def episodes_lost(self) -> tuple[int, list[str]]:
        from resfit_ros.bags import scan_episodes

        found = {}
        for path, ep in scan_episodes(self.episodes, images=False):
            if not isinstance(ep, str):
                found.setdefault(ep.episode_id, []).append(ep)
        lost = []
        names = {0: "failure", 1: "success"}
        # a labelled bag the learner cannot use (it logs why) is lost for training all the same
        skipped = self.learner_skipped()
        for eid, (_, label, _) in sorted(self.mon_labelled.items()):
            eps = found.get(eid, [])
            good = [e for e in eps if e.label == names[label] and not e.aborted]
            if not good:
                lost.append(f"episode {eid} labelled {names[label]}: "
                            + ("no bag" if not eps else f"bag says {[(e.label, e.aborted) for e in eps]}"))
            elif good[0].path.name in skipped:
                lost.append(f"episode {eid} labelled {names[label]}: the learner cannot use its bag "
                            f"({skipped[good[0].path.name].split(': ')[-1]})")
        return len(lost), lost

    def statuses_of_learner(self) -> list[tuple[float, object]]:
        return self.mon.learner_statuses if self.mon is not None else self.learner_statuses

    def learner_skipped(self) -> dict[str, str]:
        """Labelled bags the learner refused (bag name -> its reason); aborted ones not included."""
        skipped = {}
        for _, status in self.statuses_of_learner():
            for entry in status.skipped_episodes:
                name, _, why = entry.partition(": ")
                skipped[name] = why
        return skipped

    def interrupted_excluded(self) -> list[str]:
        """Problems: an interrupted episode with a labelled bag, or ingested by a learner."""
        from resfit_ros.bags import scan_episodes

        problems = []
        ingested = {n for _, status in self.statuses_of_learner() for n in status.online_episodes}
        bags = {ep.episode_id: ep for _, ep in scan_episodes(self.episodes, images=False) if not isinstance(ep, str)}
        incomplete = {int(p.name.split("_")[1]) for p in self.episodes.glob("episode_*.incomplete")}
        for r in self.results:
            eid = r.interrupted_episode
            if eid is None:
                continue
            ep = bags.get(eid)
            if ep is not None and ep.label is not None and not ep.aborted:
                problems.append(f"{r.fault}: interrupted episode {eid} has a labelled bag {ep.path.name}")
            r.notes.append(f"bag of {eid}: " + ("aborted" if ep is not None and ep.aborted else
                                                  ".incomplete" if eid in incomplete else "none"))
            if any(n.startswith(f"episode_{eid:06d}_") for n in ingested):
                problems.append(f"{r.fault}: the learner ingested interrupted episode {eid}")
        # one learner process's replay listing an episode twice: it ingested it twice
        seen_twice = {n for _, status in self.statuses_of_learner() for n in status.online_episodes
                      if list(status.online_episodes).count(n) > 1}
        if seen_twice:
            problems.append(f"episodes ingested twice: {sorted(seen_twice)}")
        return problems


def print_table(results: list[FaultResult]) -> None:
    print(f"{'fault':<26} {'ok':<4} {'episode':>7} {'down s':>7} {'cmds down':>9} {'unsafe':>6} {'recov s':>7}  notes")
    for r in results:
        ep = "-" if r.interrupted_episode is None else str(r.interrupted_episode)
        print(f"{r.fault:<26} {'yes' if r.survived else 'NO':<4} {ep:>7} {r.downtime_s:>7.1f} "
              f"{r.commands_while_down:>9} {r.unsafe_while_down:>6} {r.recovered_s:>7.1f}  "
              + "; ".join(r.notes + [f"PROBLEM: {p}" for p in r.problems]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resfit-ros bench faults", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="each fault once, one labelled episode as proof of recovery (default: the kills "
                             "twice, early and late in an episode, two labelled episodes as proof)")
    parser.add_argument("--faults", default=",".join(ALL_FAULTS),
                        help=f"comma-separated subset of {','.join(ALL_FAULTS)} (default: all, in this order), "
                             f"or of the network faults {','.join(NETWORK_FAULTS)} (the robot and learner graphs "
                             "then run on two machines: a network namespace behind a veth link; needs root)")
    parser.add_argument("--max-steps", type=int, default=30, help="episode step limit (default 30)")
    parser.add_argument("--tmpfs-mb", type=int, default=64, help="size of the episodes tmpfs for full_disk")
    parser.add_argument("--workdir", default="", help="keep everything here (default: a temporary directory, removed)")
    parser.add_argument("--json", default="", help="write the per-fault results here")
    parser.add_argument("--no-bad-inputs", dest="bad_inputs", action="store_false",
                        help="do not inject the catalogue of malformed messages")
    parser.add_argument("--domain", type=int, default=0, help="ROS_DOMAIN_ID (default: random 215..232)")
    parser.add_argument("--namespace", default="", help="ROS namespace of the graph (its namespace:=, e.g. robot_a; "
                                                        "the monitor node joins it; default: the root)")
    parser.add_argument("--flood-rate", type=float, default=10 * CONTROL_RATE_HZ,
                        help="malformed joint states per second in the flood (default: 10x the sensor rate)")
    parser.add_argument("--flood-s", type=float, default=20.0, help="length of the flood, seconds")
    parser.add_argument("--link-down-s", type=float, default=5.0, help="link_down: how long the link is down")
    parser.add_argument("--netem-delay-ms", type=float, default=200.0, help="netem: added latency each way")
    parser.add_argument("--netem-loss", type=float, default=5.0, help="netem: packet loss each way, percent")
    parser.add_argument("--netem-s", type=float, default=20.0, help="netem: how long the link is degraded")
    args = parser.parse_args(argv)
    if arg_problem(NAMESPACE_ARG, args.namespace) is not None:
        parser.error(f"--namespace {args.namespace!r}: not a ROS namespace")
    faults = [f for f in args.faults.split(",") if f]
    unknown = sorted(set(faults) - set(ALL_FAULTS) - set(NETWORK_FAULTS))
    if unknown:
        parser.error(f"unknown fault(s) {unknown}; known: {', '.join(ALL_FAULTS + NETWORK_FAULTS)}")
    # network faults need the graphs split over two machines (the learner's in a network namespace)
    args.split = any(f in NETWORK_FAULTS for f in faults)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_faults_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print(f"faults bench: work dir {work}, load average {os.getloadavg()[0]:.1f}", flush=True)
    demos, base = tiny_base(work)
    suite = Suite(args, work)
    try:
        try:
            suite.start(demos, base, bench_config(work), "full_disk" in faults)
        except RuntimeError as exc:      # test/netns.Unavailable: no second machine here
            print(f"error: {exc}", file=sys.stderr)
            return 1
        where = f" in namespace {absolute_namespace(args.namespace)}" if absolute_namespace(args.namespace) else ""
        print(f"graph launched on ROS_DOMAIN_ID={suite.domain}{where}; warming up ...", flush=True)
        if not suite.warm_up():
            print("error: the graph never made progress; log tail:\n" + suite.log_text()[-4000:], file=sys.stderr)
            return 1
        print(f"warm: {len(suite.mon.labelled)} episodes labelled ({time.monotonic() - t0:.0f} s)", flush=True)
        # the full disk last: it leaves the robot e-stopped. Without --quick every kill runs twice:
        # early in an episode (step 3) and in its second half
        plan = [(f, 3) for f in faults if f not in ("full_disk", "learner_gone")]
        if not args.quick:
            plan += [(f, args.max_steps * 2 // 3) for f in faults if f in KILLABLE]
        plan += [(f, 0) for f in ("learner_gone", "full_disk") if f in faults]
        for fault, at_step in plan:
            if fault == "full_disk":
                r = suite.full_disk()
            elif fault in NETWORK_FAULTS:
                r = suite.network(fault)
            elif fault == "flood":
                r = suite.flood()
            elif fault == "corrupt_checkpoint":
                r = suite.kill("learner", corrupt=True, min_steps=at_step)
            else:
                r = suite.kill(fault, min_steps=at_step)
            if at_step > 3:
                r.fault += f" @{at_step}"
            suite.results.append(r)
            skipped = any(n.startswith("skipped") for n in r.notes)
            print(f"  {r.fault}: {'skipped' if skipped else 'survived' if r.survived else 'FAILED'} "
                  f"({time.monotonic() - t0:.0f} s)"
                  + "".join(f"\n    problem: {p}" for p in r.problems), flush=True)
            if suite.graph.poll() is not None:
                print("error: the graph stopped; log tail:\n" + suite.log_text()[-4000:], file=sys.stderr)
                break
            if any(p.startswith("no running episode") for p in r.problems):
                print("error: the graph makes no progress any more; remaining faults not run", file=sys.stderr)
                break
        # Malformed messages last, with the robot e-stopped (by the full disk, else by the operator's
        # service): no episode bag is open then, since the recorder writes what it receives as it
        # is, and a malformed message in a bag makes the reader refuse the whole episode.
        if args.bad_inputs and suite.graph.poll() is None:
            estop = suite.estop()
            rejected, bad_notes = suite.bad_inputs()
            bad_notes.insert(0, estop)
        else:
            rejected, bad_notes = 0, ["not injected"]
        print(f"bad inputs: {'; '.join(bad_notes)} ({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        suite.stop()
    unsafe, commands = suite.unsafe, suite.commands
    lost, lost_why, excluded_problems = suite.lost, suite.lost_why, suite.excluded_problems
    for p in excluded_problems:
        for r in suite.results:
            if p.startswith(r.fault + ":"):
                r.problems.append(p.split(": ", 1)[1])
                r.survived = False
    print()
    print_table(suite.results)
    def when(t: float) -> str:
        before = [r for r in suite.results if 0 < r.t_fault <= t]
        return f"{t - before[-1].t_fault:+.1f} s after {before[-1].fault}" if before else "before the first fault"

    print(f"\ncommands checked: {commands} per group; unsafe: {len(unsafe)}"
          + "".join(f"\n  {p} ({when(t)})" for t, p in unsafe[:10]))
    print(f"labelled episodes: {len(suite.mon_labelled)}; lost: {lost}" + "".join(f"\n  {w}" for w in lost_why))
    for p in excluded_problems:
        print(f"problem: {p}")
    run = [r for r in suite.results if not any(n.startswith("skipped") for n in r.notes)]
    survived = sum(r.survived for r in run)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "results": [asdict(r) for r in suite.results], "unsafe_commands": len(unsafe),
            "unsafe_examples": [(round(t, 3), p) for t, p in unsafe[:50]], "unsafe_traces": suite.traces[:10], "commands": commands, "episodes_lost": lost,
            "lost": lost_why, "labelled": len(suite.mon_labelled), "work": str(work),
            "bad_inputs_rejected": rejected, "bad_inputs_notes": bad_notes}, indent=1))
    print(f"time {time.monotonic() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")
    print(f"faults_survived={survived}/{len(run)} bad_inputs_rejected={rejected} "
          f"unsafe_commands={len(unsafe)} episodes_lost={lost}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if survived == len(run) and not unsafe and not lost and not suite.bad_missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
