"""Control-loop latency: observation stamp -> command publication, through the REAL synchronizer,
base chunk server and residual policy node processes over DDS.

This process plays the robot: 29 joint states + one 84x84 rgb8 camera at 20 Hz, stamped with the
wall clock, an episode status RUNNING (latched) and residual weights with a camera encoder (so the
actor's image path runs every tick). The base is a TorchScript module (hold the current position)
so the figure measures the stack, not a particular BC model. Latency = arrival of the command
here - stamp of the observation it acted on (commands and step records are paired in order); it
includes one DDS hop back to this process.

    resfit-ros bench control-loop [--seconds 30]
Ends with `control_p99_ms=<p99>`. Goal: p99 <= 10 ms on a 2-core machine.

`LoopRig` (the node processes, the robot's publishers, the policy weights and the measurements)
is shared with bench/load.py (three cameras at 30 Hz, joint states at 200 Hz, for minutes).
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NODES = ("synchronizer", "base_chunk_server", "residual_policy")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MB (from /proc); NaN when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far, seconds (from /proc); NaN when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class LoopRig:
    """The synchronizer, base chunk server and residual policy as processes on a private domain, and
    this process as the robot: camera and joint-state publishers, a latched RUNNING episode status,
    residual weights with one encoder per camera. Collects, with DDS source timestamps:
      cmd_times    arrival (DDS receive time, wall ns) of each command of the first controller group
      records      (observation stamp, step record sent) per control tick
      obs_newest_by_stamp  observation stamp -> newest stamp of its inputs (when the set was complete)
      obs_sent_by_stamp    observation stamp -> when the synchronizer sent it (with watch_observations)
      tick_by_stamp        observation stamp -> (step, the residual node's own tick latency in s)
      diags        newest /diagnostics values per status name
    """

    def __init__(self, robot_file: Path, work: Path, sync_params: list[str] | None = None, control_rate_hz: float = 20.0,
                 watch_observations: bool = False, control_params: list[str] | None = None):
        from resfit_ros.robot import RobotDescription

        self.robot_file = robot_file
        self.robot = RobotDescription.load(robot_file)
        self.work = work
        self.domain = random.SystemRandom().randint(120, 200)
        self.env = dict(os.environ, ROS_DOMAIN_ID=str(self.domain), PYTHONUNBUFFERED="1")
        base = work / "hold.pt"
        from resfit_ros_testing.hold_base import make_hold_base

        make_hold_base(base, self.robot.joint_names)
        common = ["-p", f"robot_description:={robot_file}", "-p", f"control_rate_hz:={control_rate_hz}"]
        self.node_args = {
            "synchronizer": common + ["-p", "use_cameras:=true", "-p", "image_size:=84"] + list(sync_params or []),
            "base_chunk_server": ["-p", f"base_artifact:={base}"],
            "residual_policy": common + ["-p", "explore:=false", "-p", "watchdog_timeout_s:=0.1"],
        }
        for n in ("synchronizer", "residual_policy"):   # e.g. the control path's CPU priority
            self.node_args[n] += list(control_params or [])
        self.procs: dict[str, subprocess.Popen] = {}
        self.node = None
        self.watch_observations = watch_observations

    # -- processes ------------------------------------------------------------------------------
    def start(self) -> None:
        import rclpy

        for n, a in self.node_args.items():
            self.procs[n] = subprocess.Popen([sys.executable, "-m", "resfit_ros.nodes", n, "--ros-args", *a],
                                             env=self.env, stdout=open(self.work / f"{n}.log", "w"),
                                             stderr=subprocess.STDOUT, start_new_session=True)
        rclpy.init(domain_id=self.domain)
        self.node = rclpy.create_node("bench_control_loop")
        self._wire()

    def stop(self) -> None:
        import rclpy

        if self.node is not None:
            self.node.destroy_node()
            rclpy.shutdown()
            self.node = None
        for p in self.procs.values():
            try:
                os.killpg(p.pid, 2)
            except ProcessLookupError:
                pass
        for p in self.procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def rss(self) -> dict[str, float]:
        return {n: rss_mb(p.pid) for n, p in self.procs.items()}

    def cpu(self) -> dict[str, float]:
        return {n: cpu_s(p.pid) for n, p in self.procs.items()}

    # -- topics -----------------------------------------------------------------------------------
    def _wire(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray

        from resfit_ros import names
        from resfit_ros.msg import EpisodeStatus, Observation, PolicyWeights, StepRecord
        from resfit_ros.nodes.common import LATCHED, STREAM

        node, robot = self.node, self.robot
        # deep queues: this process may lag behind for a moment, it must not lose a record
        deep = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.pub_joints = {t: node.create_publisher(JointState, t, STREAM) for t in robot.joint_state_topics}
        self.pub_images = {c: node.create_publisher(Image, t, STREAM) for c, t in robot.cameras.items()}
        self.pub_status = node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)
        self.pub_weights = node.create_publisher(PolicyWeights, names.POLICY_WEIGHTS, LATCHED)
        self.cmd_times: list[int] = []
        self.records: list[tuple[int, int]] = []
        self.obs_newest_by_stamp: dict[int, int] = {}
        self.obs_sent_by_stamp: dict[int, int] = {}            # observation stamp -> synchronizer's send time
        self.tick_by_stamp: dict[int, tuple[int, float]] = {}  # observation stamp -> (step, tick latency s)
        self.diags: dict[str, dict] = {}
        first_ctrl = next(iter(robot.controllers.values()))
        # arrival = the middleware's receive time here (one DDS hop), not when this process gets to it
        node.create_subscription(Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=first_ctrl),
                                 lambda m, info: self.cmd_times.append(int(info["received_timestamp"])), deep)
        # the command is out when its LAST group's message is: that message's DDS source timestamp
        last_ctrl = list(robot.controllers.values())[-1]
        self.cmd_sent: list[int] = []
        node.create_subscription(Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=last_ctrl),
                                 lambda m, info: self.cmd_sent.append(int(info["source_timestamp"])), deep)
        node.create_subscription(StepRecord, names.STEP_RECORD, self._on_record, deep)
        if self.watch_observations:   # 64 KB each with three cameras: only when asked for
            node.create_subscription(Observation, names.OBSERVATION, self._on_obs, deep)
        node.create_subscription(DiagnosticArray, names.DIAGNOSTICS, lambda m: [self.diags.__setitem__(
            s.name, {kv.key: kv.value for kv in s.values}) for s in m.status], 50)
        self.StepRecord, self.EpisodeStatus = StepRecord, EpisodeStatus

    def _on_record(self, msg, info) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        self.records.append((stamp, int(info["source_timestamp"])))
        self.tick_by_stamp[stamp] = (int(msg.step), float(msg.latency))

    def _on_obs(self, msg, info) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        self.obs_sent_by_stamp[stamp] = int(info["source_timestamp"])
        if msg.source_stamps:
            self.obs_newest_by_stamp[stamp] = max(s.sec * 10**9 + s.nanosec for s in msg.source_stamps)

    def start_episode(self, seed: int = 0) -> None:
        """Residual weights with one image encoder per camera, then a RUNNING status (latched)."""
        from resfit_ros.core.policy_spec import PolicySpec
        from resfit_ros.core.weights import pack_weights
        from resfit_ros.learning.agent import ResidualAgent
        from resfit_ros.learning.config import AgentConfig
        from resfit_ros.learning.normaliser import Normaliser
        from resfit_ros.msg import PolicyWeights, Tensor

        robot = self.robot
        cams = list(robot.cameras)
        state_dim = 2 * robot.dof
        rng = np.random.default_rng(seed)
        normaliser = Normaliser.from_demonstrations(rng.normal(size=(100, state_dim)),
                                                    robot.home + 0.1 * rng.normal(size=(100, robot.dof)), 0.1)
        agent = ResidualAgent(AgentConfig(), state_dim, robot.dof, cams, 84, 0, normaliser)
        spec = PolicySpec(agent_config=dict(vars(agent.config)), state_dim=state_dim, action_dim=robot.dof,
                          camera_names=tuple(cams), image_size=(84, 84), feature_dim=0)
        w = PolicyWeights(version=1, spec=spec.to_json())
        w.tensors = [Tensor(name=t.name, shape=list(t.shape), data=t.data) for t in pack_weights(agent.get_weights())]
        self.pub_weights.publish(w)
        self.pub_status.publish(self.EpisodeStatus(state=self.EpisodeStatus.RUNNING, episode_id=1, explore=False))

    # -- the robot's messages ---------------------------------------------------------------------------
    def joint_messages(self) -> dict[str, object]:
        """One JointState per joint-state topic (the robot's joints split by topic, in robot order)."""
        from sensor_msgs.msg import JointState

        topics = list(self.robot.joint_state_topics)
        names = self.robot.joint_names
        split = np.array_split(np.arange(len(names)), len(topics))
        return {t: JointState(name=[names[i] for i in idx], position=self.robot.home[idx].tolist(),
                              velocity=[0.0] * len(idx)) for t, idx in zip(topics, split)}

    def image_messages(self, seed: int = 0) -> dict[str, object]:
        from sensor_msgs.msg import Image

        rng = np.random.default_rng(seed)
        out = {}
        for cam in self.robot.cameras:
            img = Image(height=84, width=84, encoding="rgb8", step=84 * 3)
            img.data = rng.integers(0, 255, 84 * 84 * 3, dtype=np.uint8).tobytes()
            img.header.frame_id = f"{cam}_camera"
            out[cam] = img
        return out

    def spin(self, seconds: float) -> None:
        import rclpy

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.01)

    def wait_records(self, n: int, timeout: float) -> bool:
        import rclpy

        deadline = time.monotonic() + timeout
        while len(self.records) < n and time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.01)
        return len(self.records) >= n


def add_priority_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control-realtime", type=int, default=0, metavar="PRIO",
                        help="SCHED_FIFO priority of the synchronizer and the residual policy (their "
                             "realtime_priority parameter; config/real.yaml: 40; default 0: normal scheduling)")
    parser.add_argument("--control-nice", type=int, default=None, help="their nice value (default: unchanged)")


def priority_params(args) -> list[str]:
    out = ["-p", f"realtime_priority:={args.control_realtime}"]
    return out + (["-p", f"nice:={args.control_nice}"] if args.control_nice is not None else [])


def priority_text(args) -> str:
    return (f"realtime_priority {args.control_realtime}" if args.control_realtime else "normal scheduling") + (
        f", nice {args.control_nice}" if args.control_nice is not None else "")


def sync_drops(diag: dict) -> dict[str, int]:
    """dropped/* and rejected/* counters of the synchronizer's diagnostics."""
    out = {}
    for k, v in diag.items():
        if k.startswith(("dropped/", "rejected/")):
            try:
                out[k] = int(float(v))
            except ValueError:
                pass
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resfit-ros bench control-loop", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement time (default 30)")
    parser.add_argument("--rate", type=float, default=20.0, help="observation rate, Hz (default 20)")
    add_priority_arguments(parser)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0:
        parser.error("--seconds and --rate must be > 0")

    from resfit_ros.robot import config_dir

    work = Path(tempfile.mkdtemp(prefix="bench_control_"))
    rig = LoopRig(config_dir() / "robots" / "g1_sim.yaml", work, control_params=priority_params(args))
    robot = rig.robot
    rig.start()
    try:
        rig.start_episode()
        images = rig.image_messages()
        joints = rig.joint_messages()

        def publish_observation():
            now = rig.node.get_clock().now().to_msg()
            for cam, img in images.items():
                img.header.stamp = now
                rig.pub_images[cam].publish(img)
            for topic, js in joints.items():
                js.header.stamp = now
                rig.pub_joints[topic].publish(js)

        timer = rig.node.create_timer(1.0 / args.rate, publish_observation)
        # warm-up: discovery, model loading, first chunk
        if not rig.wait_records(20, 60):
            print("error: the control loop did not start; logs in", work, file=sys.stderr)
            return 1
        start_cmd, start_rec = len(rig.cmd_times), len(rig.records)
        rig.spin(args.seconds)
        timer.cancel()
        rig.spin(0.5)
        n = min(len(rig.cmd_times) - start_cmd, len(rig.records) - start_rec)
        stamps = np.array([s for s, _ in rig.records[start_rec:start_rec + n]])
        lat_ms = (np.array(rig.cmd_times[start_cmd:start_cmd + n]) - stamps) / 1e6
        expected = int(args.seconds * args.rate)
        print(f"control loop: {n} ticks in {args.seconds:.0f} s (expected about {expected}), "
              f"1 camera 84x84 + {robot.dof} joints at {args.rate:g} Hz")
        print(f"latency stamp->command: p50 {np.percentile(lat_ms, 50):.2f} ms  p90 {np.percentile(lat_ms, 90):.2f} ms  "
              f"p99 {np.percentile(lat_ms, 99):.2f} ms  max {lat_ms.max():.2f} ms")
        for name in ("resfit_ros: synchronizer", "resfit_ros: residual_policy"):
            d = rig.diags.get(name, {})
            keys = [k for k in d if k.startswith("dropped/") or k in ("published", "ticks", "tick_latency_p50_ms",
                                                                       "tick_latency_p99_ms", "chunk_underruns",
                                                                       "age_p50_s", "age_p99_s")]
            print(f"{name}: " + ", ".join(f"{k}={d[k]}" for k in sorted(keys)))
        print(f"load average {os.getloadavg()[0]:.1f}; control path: {priority_text(args)}")
        print(f"control_p99_ms={np.percentile(lat_ms, 99):.2f}")
        return 0
    finally:
        rig.stop()


if __name__ == "__main__":
    raise SystemExit(main())
