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
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_hold_base(path: Path, joint_names: list[str], chunk: int = 20) -> None:
    import torch

    from resfit_ros.policy.base import TORCHSCRIPT_META

    class Hold(torch.nn.Module):
        def __init__(self, dof: int, k: int):
            super().__init__()
            self.dof, self.k = dof, k

        def forward(self, state: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
            return state[:, : self.dof].unsqueeze(1).repeat(1, self.k, 1)   # (B, k, dof)

    meta = {"joint_names": joint_names, "chunk_length": chunk, "state_keys": ["position", "velocity"],
            "camera_names": []}
    torch.jit.save(torch.jit.script(Hold(len(joint_names), chunk)), str(path),
                   _extra_files={TORCHSCRIPT_META: json.dumps(meta)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resfit-ros bench control-loop", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement time (default 30)")
    parser.add_argument("--rate", type=float, default=20.0, help="observation rate, Hz (default 20)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0:
        parser.error("--seconds and --rate must be > 0")

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    from resfit_ros import names
    from resfit_ros.core.policy_spec import PolicySpec
    from resfit_ros.core.weights import pack_weights
    from resfit_ros.learning.agent import ResidualAgent
    from resfit_ros.learning.config import AgentConfig
    from resfit_ros.learning.normaliser import Normaliser
    from resfit_ros.msg import EpisodeStatus, PolicyWeights, StepRecord, Tensor
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.robot import RobotDescription, config_dir

    robot_file = config_dir() / "robots" / "g1_sim.yaml"
    robot = RobotDescription.load(robot_file)
    domain = random.SystemRandom().randint(120, 200)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    work = Path(tempfile.mkdtemp(prefix="bench_control_"))
    base = work / "hold.pt"
    make_hold_base(base, robot.joint_names)
    common = ["-p", f"robot_description:={robot_file}"]
    nodes = {
        "synchronizer": common + ["-p", "use_cameras:=true", "-p", "image_size:=84"],
        "base_chunk_server": ["-p", f"base_artifact:={base}"],
        "residual_policy": common + ["-p", "explore:=false", "-p", "watchdog_timeout_s:=0.1"],
    }
    procs = [subprocess.Popen([sys.executable, "-m", "resfit_ros.nodes", n, "--ros-args", *a], env=env,
                              stdout=open(work / f"{n}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
             for n, a in nodes.items()]
    rclpy.init(domain_id=domain)
    node = rclpy.create_node("bench_control_loop")
    try:
        pub_js = node.create_publisher(JointState, names.JOINT_STATES, STREAM)
        pub_img = node.create_publisher(Image, robot.cameras["head"], STREAM)
        pub_status = node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)
        pub_weights = node.create_publisher(PolicyWeights, names.POLICY_WEIGHTS, LATCHED)
        first_group, first_ctrl = next(iter(robot.controllers.items()))
        cmd_times: list[float] = []
        records: list[int] = []
        diags: dict[str, dict] = {}
        node.create_subscription(Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=first_ctrl),
                                 lambda m: cmd_times.append(time.time_ns()), STREAM)
        node.create_subscription(StepRecord, names.STEP_RECORD,
                                 lambda m: records.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec), STREAM)
        node.create_subscription(DiagnosticArray, names.DIAGNOSTICS, lambda m: [diags.__setitem__(
            s.name, {kv.key: kv.value for kv in s.values}) for s in m.status], 10)

        # residual weights with one camera encoder: the actor's image path runs every tick
        state_dim = 2 * robot.dof
        rng = np.random.default_rng(0)
        normaliser = Normaliser.from_demonstrations(rng.normal(size=(100, state_dim)),
                                                    robot.home + 0.1 * rng.normal(size=(100, robot.dof)), 0.1)
        agent = ResidualAgent(AgentConfig(), state_dim, robot.dof, ["head"], 84, 0, normaliser)
        spec = PolicySpec(agent_config=dict(vars(agent.config)), state_dim=state_dim, action_dim=robot.dof,
                          camera_names=("head",), image_size=(84, 84), feature_dim=0)
        w = PolicyWeights(version=1, spec=spec.to_json())
        w.tensors = [Tensor(name=t.name, shape=list(t.shape), data=t.data) for t in pack_weights(agent.get_weights())]
        pub_weights.publish(w)
        pub_status.publish(EpisodeStatus(state=EpisodeStatus.RUNNING, episode_id=1, explore=False))

        image = Image(height=84, width=84, encoding="rgb8", step=84 * 3)
        image.data = rng.integers(0, 255, 84 * 84 * 3, dtype=np.uint8).tobytes()
        js = JointState(name=robot.joint_names, position=robot.home.tolist(), velocity=[0.0] * robot.dof)

        def publish_observation():
            now = node.get_clock().now().to_msg()
            js.header.stamp = now
            image.header.stamp = now
            pub_img.publish(image)
            pub_js.publish(js)

        timer = node.create_timer(1.0 / args.rate, publish_observation)
        # warm-up: discovery, model loading, first chunk
        deadline = time.monotonic() + 60
        while len(records) < 20 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.01)
        if len(records) < 20:
            print("error: the control loop did not start; logs in", work, file=sys.stderr)
            return 1
        start_cmd, start_rec = len(cmd_times), len(records)
        published_before = time.monotonic()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.01)
        timer.cancel()
        for _ in range(50):
            rclpy.spin_once(node, timeout_sec=0.01)
        n = min(len(cmd_times) - start_cmd, len(records) - start_rec)
        lat_ms = (np.array(cmd_times[start_cmd:start_cmd + n]) - np.array(records[start_rec:start_rec + n])) / 1e6
        expected = int(args.seconds * args.rate)
        print(f"control loop: {n} ticks in {args.seconds:.0f} s (expected about {expected}), "
              f"1 camera 84x84 + {robot.dof} joints at {args.rate:g} Hz")
        print(f"latency stamp->command: p50 {np.percentile(lat_ms, 50):.2f} ms  p90 {np.percentile(lat_ms, 90):.2f} ms  "
              f"p99 {np.percentile(lat_ms, 99):.2f} ms  max {lat_ms.max():.2f} ms")
        for name in ("resfit_ros: synchronizer", "resfit_ros: residual_policy"):
            d = diags.get(name, {})
            keys = [k for k in d if k.startswith("dropped/") or k in ("published", "ticks", "tick_latency_p50_ms",
                                                                       "tick_latency_p99_ms", "chunk_underruns")]
            print(f"{name}: " + ", ".join(f"{k}={d[k]}" for k in sorted(keys)))
        print(f"control_p99_ms={np.percentile(lat_ms, 99):.2f}")
        return 0
    finally:
        node.destroy_node()
        rclpy.shutdown()
        for p in procs:
            try:
                os.killpg(p.pid, 2)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)


if __name__ == "__main__":
    raise SystemExit(main())
