"""sim_robot: the MuJoCo humanoid behind the same topics as the real robot.

Publishes /joint_states (29 joints), /camera/<name>/image_raw (rgb8), /clock (simulated time) and
the task state (object pose, as a JointState of named values on ~/task_state); takes the
ros2_control forward-command topics `/<controller>/commands` (Float64MultiArray, one per joint
group, in the group's joint order) exactly like the robot's controllers; offers ~/reset_scene.

Lockstep (default): the simulator advances one control period as soon as every controller group
has sent a command for the current step, so training runs faster than real time and the learner
can pace it. While an episode runs it waits for those commands (the episode's steps are exactly
the policy's steps); between episodes the episode manager's homing commands step it the same way.
Without any command for `idle_period_s` it publishes its current state again (same stamp, no
physics step) so late subscribers (a restarted node) see the robot. It never steps on its own:
a step that nobody commanded could land between the episode's start and its first command, and the
policy would then act one observation late for the whole episode (lockstep keeps any lag it gets).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger

from resfit_ros import names
from resfit_ros.config import require
from resfit_ros.msg import EpisodeStatus
from resfit_ros.nodes.common import (LATCHED, STREAM, Rejections, make_node, node_config, ns_to_stamp, run,
                                     status_problem, steady_timer)


@dataclass
class SimRobotConfig:
    task: str = "g1_pick_lift"           # simulated task (resfit_ros.sim.TASKS)
    control_rate_hz: float = 20.0        # control period of the simulated controllers
    image_size: int = 84                 # square camera images, pixels
    cameras: list[str] = None            # camera names to render ([] = state only)
    render: bool = True                  # render camera images at all
    seed: int = 0                        # first scene's seed; each reset_scene uses the next
    lockstep: bool = True                # step when all groups commanded (else: wall-clock timer)
    idle_period_s: float = 0.5           # lockstep: re-publish the state after this long without commands
    publish_clock: bool = True           # publish /clock (nodes run with use_sim_time)
    robot_description: str = ""          # unused by the simulator itself (the model defines it)

    def __post_init__(self):
        if self.cameras is None:
            self.cameras = ["head"]
        require(self.control_rate_hz > 0, f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        require(8 <= self.image_size <= 1024, f"image_size must be in [8, 1024], got {self.image_size}")
        require(self.idle_period_s > 0, f"idle_period_s must be > 0, got {self.idle_period_s}")


class SimRobotNode:
    def __init__(self):
        self.node = make_node("sim_robot")
        self.cfg = node_config(self.node, SimRobotConfig)
        from resfit_ros.sim import TASKS, make_env

        require(self.cfg.task in TASKS, f"task must be one of {sorted(TASKS)}, got '{self.cfg.task}'")
        cameras = tuple(self.cfg.cameras) if self.cfg.render else ()
        self.env = make_env(self.cfg.task, image_size=self.cfg.image_size, cameras=cameras,
                            render=bool(cameras), control_hz=self.cfg.control_rate_hz, seed=self.cfg.seed)
        self.robot = self.env.robot
        self.groups = self.robot.group_indices()            # group -> joint indices
        self.target = np.array(self.robot.home)             # (29,) held position targets
        self.fresh: set[str] = set()                        # groups commanded since the last step
        # rejected inputs by reason (rejected/<reason> on /diagnostics): command_wrong_length,
        # command_nonfinite, status_invalid, reset_scene_running
        self.rejections = Rejections(self.node)
        self.seed = self.cfg.seed
        self.obs = self.env.reset(seed=self.seed)
        self.target = self.obs.position.copy()
        self.last_step_wall = time.monotonic()
        # Simulated time must never run backwards across scene resets (it drives /clock):
        # the node keeps its own clock, advanced one control period per step or reset.
        self.dt_ns = int(round(1e9 / self.cfg.control_rate_hz))
        self.clock_ns = self.dt_ns

        self.pub_joints = self.node.create_publisher(JointState, names.JOINT_STATES, STREAM)
        self.pub_task = self.node.create_publisher(JointState, "~/task_state", STREAM)
        self.pub_success = self.node.create_publisher(Bool, "~/success", STREAM)
        self.pub_images = {c: self.node.create_publisher(Image, names.CAMERA_TOPIC.format(name=c), STREAM)
                           for c in cameras}
        self.pub_clock = self.node.create_publisher(Clock, "/clock", 10) if self.cfg.publish_clock else None
        for group, controller in self.robot.controllers.items():
            self.node.create_subscription(
                Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=controller),
                lambda msg, g=group: self.on_command(g, msg), STREAM)
        self.node.create_service(Trigger, "~/reset_scene", self.on_reset_scene)
        self.episode_running = False
        self.node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, self.on_status, LATCHED)
        period = self.cfg.idle_period_s if self.cfg.lockstep else 1.0 / self.cfg.control_rate_hz
        steady_timer(self.node, min(period, 0.01) if self.cfg.lockstep else period, self.on_timer)
        self.rejections.start_diagnostics(1.0, extra=lambda: {"seed": self.seed, "sim_time_s": self.clock_ns / 1e9})
        self.publish()
        self.node.get_logger().info(
            f"task {self.cfg.task}, {self.robot.dof} joints, cameras {list(cameras)}, "
            f"{'lockstep' if self.cfg.lockstep else 'real time'} at {self.cfg.control_rate_hz} Hz")

    # -- inputs ------------------------------------------------------------------------------
    def on_command(self, group: str, msg: Float64MultiArray) -> None:
        idx = self.groups[group]
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (len(idx),):
            return self.rejections.reject("command_wrong_length", f"rejected command for group {group}: expected "
                                          f"{len(idx)} values, got {data.shape[0]}")
        if not np.all(np.isfinite(data)):
            return self.rejections.reject("command_nonfinite", f"rejected command for group {group}: "
                                          f"non-finite values {data.tolist()}")
        # the controllers clamp to the joint limits, as the real ones do
        self.target[idx] = np.clip(data, self.robot.lower[idx], self.robot.upper[idx])
        self.fresh.add(group)
        if self.cfg.lockstep and len(self.fresh) == len(self.groups):
            self.step()

    def on_status(self, msg: EpisodeStatus) -> None:
        problem = status_problem(msg)
        if problem is not None:
            return self.rejections.reject("status_invalid", f"episode status: {problem}")
        self.episode_running = msg.state == EpisodeStatus.RUNNING

    def on_timer(self) -> None:
        if not self.cfg.lockstep:
            self.step()
        elif not self.episode_running and time.monotonic() - self.last_step_wall >= self.cfg.idle_period_s:
            self.last_step_wall = time.monotonic()
            self.publish()                 # same stamp: the synchronizer emits no second observation

    def on_reset_scene(self, request, response):
        if self.episode_running:   # the episode manager resets only between episodes
            self.rejections.reject("reset_scene_running", "reset_scene refused: an episode is running")
            response.success, response.message = False, "an episode is running: label or abort it first"
            return response
        self.seed += 1
        self.obs = self.env.reset(seed=self.seed)
        self.target = self.obs.position.copy()
        self.fresh.clear()
        self.clock_ns += self.dt_ns
        self.publish()
        # the stamp of the reset state: the episode manager plans its homing from joint states of
        # at least this stamp (an older one, still in flight, shows the robot where it was before)
        response.success, response.message = True, f"scene reset with seed {self.seed}; state stamped {self.clock_ns} ns"
        return response

    # -- simulation --------------------------------------------------------------------------
    def step(self) -> None:
        self.obs, success = self.env.step(self.target)
        self.fresh.clear()
        self.last_step_wall = time.monotonic()
        self.clock_ns += self.dt_ns
        self.publish(success)

    def publish(self, success: bool = False) -> None:
        obs = self.obs
        stamp = ns_to_stamp(self.clock_ns)
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=stamp))
        js = JointState(name=list(obs.joint_names), position=obs.position.tolist(), velocity=obs.velocity.tolist())
        js.header.stamp = stamp
        self.pub_joints.publish(js)
        task = JointState(name=list(obs.extra_names), position=np.asarray(obs.extra, float).tolist())
        task.header.stamp = stamp
        self.pub_task.publish(task)
        for cam, pub in self.pub_images.items():
            rgb = obs.images[cam]
            img = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
            img.header.stamp, img.header.frame_id = stamp, f"{cam}_camera"
            img.data = rgb.tobytes()
            pub.publish(img)
        self.pub_success.publish(Bool(data=bool(success)))


def main(argv=None) -> int:
    return run(SimRobotNode, argv, events=True)
