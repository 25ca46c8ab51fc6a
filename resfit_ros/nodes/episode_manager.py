"""episode_manager: the operator's services around resfit_ros.core.episode.EpisodeManager.

Services: start_episode (StartEpisode), label_episode (LabelEpisode), abort_episode (Trigger),
reset (Trigger: drives the robot home along a smooth rate-limited trajectory, after resetting the
simulated scene when `reset_scene_service` is set), set_estop (SetBool). Topics: episode status
(latched, on every change), e-stop (std_msgs/Bool latched; also accepted as input from a hardware
button bridge). Calls in the wrong state are answered success=false with the reason and change
nothing. Steps are counted from the residual node's StepRecords of the running episode.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger

from resfit_ros import names
from resfit_ros.config import require
from resfit_ros.core.command import CommandLimits, HomingError, HomingTrajectory
from resfit_ros.core.episode import EpisodeManager, EpisodeState
from resfit_ros.core.sync import JointStateError, JointStateMerger
from resfit_ros.msg import EpisodeStatus, StepRecord
from resfit_ros.nodes.common import LATCHED, STREAM, make_node, node_config, run, steady_timer
from resfit_ros.nodes.controllers import ControllerOutput
from resfit_ros.robot import RobotDescription
from resfit_ros.srv import LabelEpisode, StartEpisode


@dataclass
class EpisodeManagerConfig:
    robot_description: str = "robots/g1_sim.yaml"  # robot YAML (joints, limits, controllers)
    control_rate_hz: float = 20.0          # homing trajectory rate
    command_interface: str = "forward"     # "forward" (Float64MultiArray) or "trajectory"
    reset_scene_service: str = ""          # std_srvs/Trigger called before homing ('' = none; sim: /sim_robot/reset_scene)
    homing_speed_fraction: float = 0.3     # fraction of each joint's max velocity used by homing
    homing_min_duration_s: float = 2.0     # homing never faster than this
    require_reset: bool = False            # refuse start_episode until a reset completed
    joint_state_timeout_s: float = 1.0     # reset fails if no joint state is newer than this
    scene_reset_timeout_s: float = 3.0    # reset fails if the scene reset service does not answer

    def __post_init__(self):
        require(self.control_rate_hz > 0, f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        require(0 < self.homing_speed_fraction <= 1,
                f"homing_speed_fraction must be in (0, 1], got {self.homing_speed_fraction}")
        require(self.homing_min_duration_s >= 0, f"homing_min_duration_s must be >= 0, got {self.homing_min_duration_s}")


class EpisodeManagerNode:
    def __init__(self):
        self.node = make_node("episode_manager")
        cfg = self.cfg = node_config(self.node, EpisodeManagerConfig)
        self.robot = RobotDescription.load(cfg.robot_description)
        self.limits = CommandLimits.from_robot(self.robot, cfg.control_rate_hz, 0.0)
        self.core = EpisodeManager(require_reset=cfg.require_reset)
        self.merger = JointStateMerger(self.robot.joint_names, velocity_required=False)
        self.joint_positions: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}  # topic -> (idx, pos, t)
        self.homing: HomingTrajectory | None = None
        self.homing_step = 0
        self.scene_future = None
        self.output = ControllerOutput(self.node, self.robot, cfg.command_interface, cfg.control_rate_hz)
        self.pub_status = self.node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)
        self.pub_estop = self.node.create_publisher(Bool, names.ESTOP, LATCHED)
        # services are quick; the homing timer gets its own group so a slow executor thread
        # never delays a label or e-stop call
        services = MutuallyExclusiveCallbackGroup()
        self.node.create_service(StartEpisode, names.START_EPISODE, self.on_start, callback_group=services)
        self.node.create_service(LabelEpisode, names.LABEL_EPISODE, self.on_label, callback_group=services)
        self.node.create_service(Trigger, names.ABORT_EPISODE, self.on_abort, callback_group=services)
        self.node.create_service(Trigger, names.RESET, self.on_reset, callback_group=services)
        self.node.create_service(SetBool, names.SET_ESTOP, self.on_set_estop, callback_group=services)
        self.node.create_subscription(Bool, names.ESTOP, self.on_estop_topic, LATCHED, callback_group=services)
        self.node.create_subscription(StepRecord, names.STEP_RECORD, self.on_step, STREAM, callback_group=services)
        for topic in self.robot.joint_state_topics:
            self.node.create_subscription(JointState, topic, lambda m, t=topic: self.on_joints(t, m), STREAM)
        self.scene_client = (self.node.create_client(Trigger, cfg.reset_scene_service)
                             if cfg.reset_scene_service else None)
        steady_timer(self.node, 1.0 / cfg.control_rate_hz, self.on_homing_tick, MutuallyExclusiveCallbackGroup())
        self.publish_status()

    # -- status ------------------------------------------------------------------------------
    def publish_status(self) -> None:
        s = self.core.status
        msg = EpisodeStatus(state=int(s.state), episode_id=int(s.episode_id), label=int(s.label),
                            aborted=bool(s.aborted), explore=bool(s.explore), steps=int(s.steps),
                            ready=bool(s.ready), episodes_completed=int(s.episodes_completed),
                            successes=int(s.successes), message=s.message)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub_status.publish(msg)

    def _answer(self, result, response, ok_field="success"):
        setattr(response, ok_field, result.accepted)
        response.message = result.message
        if result.accepted:
            self.publish_status()
            self.node.get_logger().info(result.message)
        return response

    # -- operator services ---------------------------------------------------------------------
    def on_start(self, request, response):
        response = self._answer(self.core.start(explore=request.explore, note=request.note), response)
        response.episode_id = int(self.core.status.episode_id)
        return response

    def on_label(self, request, response):
        result = self.core.label(request.success, request.note)
        response.episode_id = int(result.episode_id)
        return self._answer(result, response, ok_field="accepted")

    def on_abort(self, request, response):
        return self._answer(self.core.abort(), response)

    def on_set_estop(self, request, response):
        result = self.core.estop(bool(request.data))
        if result.accepted:
            self.homing = None  # an e-stop cancels a reset motion at once
            self.pub_estop.publish(Bool(data=bool(request.data)))
        return self._answer(result, response)

    def on_estop_topic(self, msg: Bool) -> None:
        # a hardware button bridge may publish here directly; mirror it into the state machine
        if msg.data and self.core.state != EpisodeState.ESTOPPED:
            self.homing = None
            result = self.core.estop(True)
            if result.accepted:
                self.publish_status()
                self.node.get_logger().error(result.message)

    def on_step(self, msg: StepRecord) -> None:
        s = self.core.status
        if s.state == EpisodeState.RUNNING and msg.episode_id == s.episode_id:
            if self.core.step_observed().accepted:
                self.publish_status()

    # -- reset: scene (simulation), then a smooth motion home ---------------------------------------
    def on_joints(self, topic: str, msg: JointState) -> None:
        try:
            sample = self.merger.parse(msg.name, msg.position, msg.velocity, source=topic)
        except JointStateError as exc:
            self.node.get_logger().warn(f"ignored joint state: {exc}", throttle_duration_sec=5.0)
            return
        self.joint_positions[topic] = (sample.indices, sample.position, self.node.get_clock().now().nanoseconds)

    def current_positions(self) -> np.ndarray | None:
        now = self.node.get_clock().now().nanoseconds
        q = np.full(self.robot.dof, np.nan)
        for idx, pos, t in self.joint_positions.values():
            if now - t <= self.cfg.joint_state_timeout_s * 1e9:
                q[idx] = pos
        return q if np.all(np.isfinite(q)) else None

    def on_reset(self, request, response):
        result = self.core.reset_begin()
        if not result.accepted:
            return self._answer(result, response)
        self.publish_status()
        if self.scene_client is not None:
            if not self.scene_client.service_is_ready():
                return self._finish_reset(False, f"scene reset service {self.cfg.reset_scene_service} unavailable", response)
            self.scene_future = self.scene_client.call_async(Trigger.Request())
            self.scene_deadline = time.monotonic() + self.cfg.scene_reset_timeout_s
        else:
            self._begin_homing()
        response.success, response.message = True, "reset started; status turns ready when the robot is home"
        return response

    def _begin_homing(self) -> None:
        q = self.current_positions()
        if q is None:
            self._finish_reset(False, "no fresh joint state for every joint: cannot plan the motion home")
            return
        try:
            self.homing = HomingTrajectory(q, self.limits, speed_fraction=self.cfg.homing_speed_fraction,
                                           min_duration_s=self.cfg.homing_min_duration_s)
        except HomingError as exc:
            self._finish_reset(False, str(exc))
            return
        self.homing_step = 0

    def _finish_reset(self, ok: bool, message: str, response=None):
        self.homing = None
        result = self.core.reset_done(ok, message)
        self.publish_status()
        if ok:
            self.node.get_logger().info(result.message)
        else:
            self.node.get_logger().error(result.message)
        if response is not None:
            response.success, response.message = ok, result.message
            return response
        return None

    def on_homing_tick(self) -> None:
        if self.core.state != EpisodeState.RESETTING:
            self.homing = None
            return
        if self.scene_future is not None:
            if not self.scene_future.done():
                if time.monotonic() > self.scene_deadline:
                    self.scene_future = None   # a request lost during discovery: fail, the caller retries
                    self._finish_reset(False, f"scene reset service gave no answer in {self.cfg.scene_reset_timeout_s} s")
                return
            result, self.scene_future = self.scene_future.result(), None
            if result is None or not result.success:
                self._finish_reset(False, f"scene reset failed: {getattr(result, 'message', 'no answer')}")
                return
            # the joint states from before the scene reset are stale now
            self.joint_positions.clear()
            return
        if self.homing is None:
            if self.current_positions() is not None:
                self._begin_homing()
            return
        self.homing_step += 1
        self.output.send(self.homing.command(self.homing_step))
        if self.homing.done(self.homing_step):
            self._finish_reset(True, f"home reached in {self.homing.duration_s:.1f} s")


def main(argv=None) -> int:
    return run(EpisodeManagerNode, argv, threads=2)
