"""episode_manager: the operator's services around resfit_ros.core.episode.EpisodeManager.

Services: start_episode (StartEpisode), label_episode (LabelEpisode), abort_episode (Trigger),
reset (Trigger: drives the robot home along a smooth rate-limited trajectory, after resetting the
simulated scene when `reset_scene_service` is set), set_estop (SetBool). Topics: episode status
(latched, on every change), e-stop (std_msgs/Bool latched; also accepted as input from a hardware
button bridge). Calls in the wrong state are answered success=false with the reason and change
nothing. Steps are counted from the residual node's StepRecords of the running episode.

Faults: the manager watches the presence (DDS liveliness, nodes/common.py PRESENCE) of the nodes
an episode depends on (`watched_nodes`): start_episode is refused while one is not running, and a
running episode is aborted as soon as one stops (its data would not be one consistent, completely
recorded trajectory). With `state_file` the status is persisted at every change of episode or
state, so a restarted manager continues the episode ids, keeps an e-stop engaged, and ends the
episode it was running as aborted.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Empty
from std_srvs.srv import SetBool, Trigger

from resfit_ros import names
from resfit_ros.config import require
from resfit_ros.core.command import CommandLimits
from resfit_ros.core.episode import EpisodeManager, EpisodeState
from resfit_ros.core.joint_states import JointStateError, JointStateMerger, stale_or_future
from resfit_ros.core.reset import JointStream, ResetSequencer, ResetTiming, SceneReply
from resfit_ros.msg import EpisodeStatus, RecorderProgress, StepRecord
from resfit_ros.nodes.common import (LATCHED, NEWEST_SENSORS, PRESENCE, STREAM, Rejections, make_node, node_config, ns_to_stamp, run,
                                     stamp_to_ns, steady_timer)
from resfit_ros.nodes.controllers import ControllerOutput
from resfit_ros.robot import RobotDescription
from resfit_ros.srv import LabelEpisode, ResetScene, StartEpisode


@dataclass
class EpisodeManagerConfig:
    robot_description: str = "robots/g1_sim.yaml"  # robot YAML (joints, limits, controllers)
    control_rate_hz: float = 20.0          # homing trajectory rate
    command_interface: str = "forward"     # "forward" (Float64MultiArray) or "trajectory"
    reset_scene_service: str = ""          # resfit_ros/ResetScene called before homing ('' = none; sim: sim_robot/reset_scene)
    homing_speed_fraction: float = 0.3     # fraction of each joint's max velocity used by homing
    homing_min_duration_s: float = 2.0     # homing never faster than this
    homing_settle_s: float = 0.1           # "ready" this long after the last homing command (and its state)
    require_reset: bool = False            # refuse start_episode until a reset completed
    joint_state_timeout_s: float = 1.0     # reset fails if no joint state is newer than this
    scene_reset_timeout_s: float = 3.0    # reset fails if the scene reset service does not answer
    watched_nodes: list[str] = field(default_factory=list)  # node names an episode needs (start refused
                                           # while one is down; a running episode aborted when one stops)
    state_file: str = ""                   # persisted status ('' = none): a restart continues the episode ids
    recorder_lag_steps: int = -1           # >= 0: a label finding the recorder more than this many steps behind
                                           # AND silent for recorder_silence_s aborts the episode (-1 = no check)
    recorder_silence_s: float = 0.5        # ... a recorder that is behind but still writing is waited for
    reset_quiet_s: float = 0.2             # a reset moves the robot only after the policy sent no step this long

    def __post_init__(self):
        require(self.control_rate_hz > 0, f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        require(0 < self.homing_speed_fraction <= 1,
                f"homing_speed_fraction must be in (0, 1], got {self.homing_speed_fraction}")
        require(self.homing_min_duration_s >= 0, f"homing_min_duration_s must be >= 0, got {self.homing_min_duration_s}")
        require(self.homing_settle_s >= 0, f"homing_settle_s must be >= 0, got {self.homing_settle_s}")


class EpisodeManagerNode:
    def __init__(self):
        self.node = make_node("episode_manager")
        cfg = self.cfg = node_config(self.node, EpisodeManagerConfig)
        self.robot = RobotDescription.load(cfg.robot_description)
        self.limits = CommandLimits.from_robot(self.robot, cfg.control_rate_hz, 0.0)
        self.core = EpisodeManager(require_reset=cfg.require_reset)
        self.merger = JointStateMerger(self.robot.joint_names, velocity_required=False)
        # topic -> (joint indices, positions, received ns, stamp ns) of its newest state
        self.joint_positions: dict[str, tuple[np.ndarray, np.ndarray, int, int]] = {}
        self.reset = ResetSequencer(self.limits, ResetTiming(
            reset_quiet_s=cfg.reset_quiet_s,
            scene_reset_timeout_s=cfg.scene_reset_timeout_s, joint_state_timeout_s=cfg.joint_state_timeout_s,
            homing_settle_s=cfg.homing_settle_s, homing_speed_fraction=cfg.homing_speed_fraction,
            homing_min_duration_s=cfg.homing_min_duration_s), scene_reset=bool(cfg.reset_scene_service))
        self.scene_future = None
        self.output = ControllerOutput(self.node, self.robot, cfg.command_interface, cfg.control_rate_hz)
        # rejected inputs by reason (rejected/<reason> on /diagnostics): joint_state_*, step_* and
        # service_<name> for calls refused in the wrong state
        self.rejections = Rejections(self.node)
        self.rejections.start_diagnostics(1.0, extra=lambda: {"state": self.core.state.name,
                                                              "episode_id": self.core.status.episode_id})
        self.last_step: tuple[int, int] | None = None   # (stamp, step) of the last counted step record
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
        self.step_sub = self.node.create_subscription(StepRecord, names.STEP_RECORD, self.on_step, STREAM,
                                                      callback_group=services)
        for topic in self.robot.joint_state_topics:
            self.node.create_subscription(JointState, topic, lambda m, t=topic: self.on_joints(t, m), NEWEST_SENSORS)
        self.scene_client = (self.node.create_client(ResetScene, cfg.reset_scene_service)
                             if cfg.reset_scene_service else None)
        steady_timer(self.node, 1.0 / cfg.control_rate_hz, self.on_homing_tick, MutuallyExclusiveCallbackGroup())
        self.alive = {name: False for name in cfg.watched_nodes}
        for name in cfg.watched_nodes:
            self.node.create_subscription(
                Empty, names.ALIVE_TOPIC.format(node=name), lambda _m: None, PRESENCE, callback_group=services,
                event_callbacks=SubscriptionEventCallbacks(liveliness=lambda info, n=name: self.on_liveliness(n, info)))
        self.recorded: dict[int, tuple[int, float]] = {}   # episode id -> (steps the recorder wrote, when)
        self.label_target: tuple[int, int, float] | None = None    # (episode, steps, since) of a label put off
        self.max_joint_stamp: int | None = None
        self.node_up_during_reset = False
        self.joint_lock = threading.Lock()
        self.reset_lock = threading.RLock()    # a reset request and the homing tick never interleave
        self.last_step_wall = 0.0                # any step record, any state (who is still commanding)
        self.wait_for_quiet = False
        self.joint_states_received = 0
        self.started_wall = time.monotonic()
        self.episode_started_wall = 0.0
        self.step_matched_at: float | None = None
        if cfg.recorder_lag_steps >= 0:
            self.node.create_subscription(RecorderProgress, names.RECORDER_PROGRESS, self.on_recorder_progress,
                                          STREAM, callback_group=services)
        self.persisted = None
        self.persist_lock = threading.Lock()   # status changes come from several executor threads
        self.restore()
        self.publish_status()

    # -- persisted status (a restarted manager continues) ----------------------------------------
    def restore(self) -> None:
        path = Path(self.cfg.state_file) if self.cfg.state_file else None
        if path is None or not path.is_file():
            return
        log = self.node.get_logger()
        try:
            d = json.loads(path.read_text())
            result = self.core.restore(int(d["episode_id"]), state=EpisodeState(int(d["state"])),
                                       label=int(d["label"]), aborted=bool(d["aborted"]), explore=bool(d["explore"]),
                                       episodes_completed=int(d["episodes_completed"]), successes=int(d["successes"]),
                                       episodes_aborted=int(d["episodes_aborted"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(f"cannot restore the episode status from {path} ({exc}); episode ids start again at 1")
            return
        (log.error if result.status.aborted or result.state is EpisodeState.ESTOPPED else log.info)(
            f"restored from {path}: {result.message}")
        if result.state is EpisodeState.ESTOPPED:
            self.pub_estop.publish(Bool(data=True))
        if d["state"] == int(EpisodeState.RUNNING):
            # the policy node may go on stepping that episode until our status reaches it (a new
            # publisher is discovered first): no reset motion may interleave with its commands
            self.wait_for_quiet = True
            self.last_step_wall = time.monotonic() + 1.0   # discovery: its steps may not reach us at once

    def persist(self) -> None:
        """Write the status atomically when the episode or the state changed (not on every step)."""
        if not self.cfg.state_file:
            return
        with self.persist_lock:
            self._persist()

    def _persist(self) -> None:
        s = self.core.status
        d = {"episode_id": int(s.episode_id), "state": int(s.state), "label": int(s.label), "aborted": bool(s.aborted),
             "explore": bool(s.explore), "episodes_completed": int(s.episodes_completed),
             "successes": int(s.successes), "episodes_aborted": int(s.episodes_aborted)}
        if d == self.persisted:
            return
        path = Path(self.cfg.state_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w") as f:
                json.dump(d, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self.persisted = d
        except OSError as exc:
            self.node.get_logger().error(f"cannot persist the episode status to {path}: {exc}",
                                         throttle_duration_sec=5.0)

    # -- presence of the nodes an episode needs ---------------------------------------------------
    def on_liveliness(self, name: str, info) -> None:
        was = self.alive[name]
        self.alive[name] = info.alive_count > 0
        log = self.node.get_logger()
        if info.alive_count_change < 0 or info.not_alive_count_change > 0:   # a process of `name` stopped
            log.error(f"{name} stopped")
            if self.core.state == EpisodeState.RUNNING:
                result = self.core.abort(f"{name} stopped during the episode")
                if result.accepted:
                    self.publish_status()
                    log.error(result.message)
        elif self.alive[name] and not was:
            log.info(f"{name} is up")
            # a (re)started node has not seen the robot's state since the last reset (a lockstep
            # simulator sends nothing new until commanded): the next episode needs a reset first
            if self.core.state == EpisodeState.RESETTING:
                self.node_up_during_reset = True
            result = self.core.not_ready(f"{name} (re)started: reset before the next episode")
            if result.accepted:
                self.publish_status()

    def on_recorder_progress(self, msg: RecorderProgress) -> None:
        eid, steps = int(msg.episode_id), int(msg.steps_recorded)
        # only the newest episode matters
        self.recorded = {eid: (max(steps, self.recorded.get(eid, (0, 0.0))[0]), time.monotonic())}

    def missing_nodes(self) -> list[str]:
        return [n for n, up in self.alive.items() if not up]

    # -- status ------------------------------------------------------------------------------
    def publish_status(self, stamp_ns: int | None = None) -> None:
        self.persist()
        s = self.core.status
        msg = EpisodeStatus(state=int(s.state), episode_id=int(s.episode_id), label=int(s.label),
                            aborted=bool(s.aborted), explore=bool(s.explore), steps=int(s.steps),
                            ready=bool(s.ready), episodes_completed=int(s.episodes_completed),
                            successes=int(s.successes), message=s.message)
        now = self.node.get_clock().now().nanoseconds
        msg.header.stamp = ns_to_stamp(now if stamp_ns is None else stamp_ns)
        self.pub_status.publish(msg)

    def _answer(self, result, response, ok_field="success", service=""):
        setattr(response, ok_field, result.accepted)
        response.message = result.message
        if result.accepted:
            self.publish_status()
            self.node.get_logger().info(result.message)
        elif service:
            self.rejections.reject(f"service_{service}", f"{service} refused: {result.message}")
        return response

    # -- operator services ---------------------------------------------------------------------
    def on_start(self, request, response):
        missing = self.missing_nodes()
        if missing and self.core.state == EpisodeState.IDLE:
            response.success, response.episode_id = False, int(self.core.status.episode_id)
            response.message = f"not started: waiting for {', '.join(missing)} (not running)"
            return response
        response = self._answer(self.core.start(explore=request.explore, note=request.note), response,
                                service="start_episode")
        if response.success:
            self.last_step = None
            self.episode_started_wall = time.monotonic()
        response.episode_id = int(self.core.status.episode_id)
        return response

    def on_label(self, request, response):
        s = self.core.status
        if self.cfg.recorder_lag_steps >= 0 and s.state == EpisodeState.RUNNING:
            eid = int(s.episode_id)
            recorded, heard = self.recorded.get(eid, (0, 0.0))
            # the steps the recorder must have: those when the label was first asked for
            put_off = self.label_target if self.label_target and self.label_target[0] == eid else None
            target = put_off[1] if put_off else s.steps
            if recorded < target - self.cfg.recorder_lag_steps:
                response.accepted, response.episode_id = False, eid
                # silent since its last progress, or since the start if none came yet (a quick label)
                silent = time.monotonic() - max(heard, self.episode_started_wall) > self.cfg.recorder_silence_s
                stuck = put_off is not None and time.monotonic() - put_off[2] > 4 * self.cfg.recorder_silence_s
                if silent or stuck:
                    # the recorder stopped, or misses the observations of some steps: a label now
                    # would name an episode whose bag cannot be complete. Abort it at once (not
                    # trained on, not counted as completed).
                    why = (f"wrote nothing for {self.cfg.recorder_silence_s:g} s" if silent else
                           f"did not catch up in {4 * self.cfg.recorder_silence_s:g} s")
                    result = self.core.abort(f"the recorder has only {recorded} of its {target} steps "
                                             f"(with their observations) and {why}")
                    if result.accepted:
                        self.publish_status()
                        self.node.get_logger().error(result.message)
                    response.message = f"not labelled: {result.message}"
                else:   # behind but writing (a loaded machine): ask again
                    self.label_target = put_off or (eid, target, time.monotonic())
                    response.message = (f"not labelled yet: the recorder has {recorded} of the episode's {target} "
                                        f"steps and is catching up; label again")
                return response
        self.label_target = None
        result = self.core.label(request.success, request.note)
        response.episode_id = int(result.episode_id)
        return self._answer(result, response, ok_field="accepted", service="label_episode")

    def on_abort(self, request, response):
        return self._answer(self.core.abort(), response, service="abort_episode")

    def on_set_estop(self, request, response):
        result = self.core.estop(bool(request.data))
        if result.accepted:
            with self.reset_lock:
                self.reset.cancel()  # an e-stop cancels a reset motion at once
            self.pub_estop.publish(Bool(data=bool(request.data)))
        return self._answer(result, response, service="set_estop")

    def on_estop_topic(self, msg: Bool) -> None:
        # a hardware button bridge may publish here directly; mirror it into the state machine
        if msg.data and self.core.state != EpisodeState.ESTOPPED:
            with self.reset_lock:
                self.reset.cancel()
            result = self.core.estop(True)
            if result.accepted:
                self.publish_status()
                self.node.get_logger().error(result.message)

    def on_step(self, msg: StepRecord) -> None:
        self.last_step_wall = time.monotonic()
        s = self.core.status
        if s.state != EpisodeState.RUNNING:
            return                          # late records of an ended episode: nothing to count
        if msg.episode_id != s.episode_id:
            return self.rejections.reject("step_wrong_episode", f"step record of episode {msg.episode_id} while "
                                          f"episode {s.episode_id} runs")
        # a step is counted once: a record equal in stamp (its observation's) and step number to the
        # last counted one is a duplicate, one stamped before it is out of order
        key = (stamp_to_ns(msg.header.stamp), int(msg.step))
        if self.last_step is not None and (key == self.last_step or key[0] < self.last_step[0]):
            order = "duplicate" if key == self.last_step else "out_of_order"
            return self.rejections.reject(f"step_{order}", f"step record {msg.step} of episode {msg.episode_id} "
                                          f"stamped {key[0] / 1e9:.3f} s is {order.replace('_', ' ')}")
        self.last_step = key
        if self.core.step_observed().accepted:
            self.publish_status()

    # -- reset: scene (simulation), then a smooth motion home ---------------------------------------
    def on_joints(self, topic: str, msg: JointState) -> None:
        try:
            sample = self.merger.parse(msg.name, msg.position, msg.velocity, source=topic)
        except JointStateError as exc:
            return self.rejections.reject(f"joint_state_{exc.reason}", f"ignored joint state: {exc}")
        if len(self.robot.joint_state_topics) == 1 and len(sample.indices) != self.robot.dof:
            return self.rejections.reject("joint_state_missing", f"ignored joint state on {topic}: "
                                          f"{len(sample.indices)} of the robot's {self.robot.dof} joints")
        stamp = stamp_to_ns(msg.header.stamp)
        now = self.node.get_clock().now().nanoseconds
        with self.joint_lock:   # the homing tick (another thread) sets the minimum and clears
            if self.reset.min_state_stamp is not None and stamp <= self.reset.min_state_stamp:
                return   # from before the scene reset (delivered late): the robot is elsewhere now
            newest = self.joint_positions.get(topic)
            why = stale_or_future(stamp, None if newest is None else newest[3], now)
            if why == "late":
                return   # homing plans from the newest state
            if why == "future":
                return self.rejections.reject("joint_state_future", f"ignored joint state on {topic} stamped "
                                              f"{(stamp - now) / 1e9:.1f} s in the future")
            self.max_joint_stamp = stamp if self.max_joint_stamp is None else max(self.max_joint_stamp, stamp)
            self.joint_positions[topic] = (sample.indices, sample.position, now, stamp)
            self.joint_states_received += 1

    def current_positions(self) -> np.ndarray | None:
        now = self.node.get_clock().now().nanoseconds
        q = np.full(self.robot.dof, np.nan)
        for idx, pos, t, _ in self.joint_positions.values():
            if now - t <= self.cfg.joint_state_timeout_s * 1e9:
                q[idx] = pos
        return q if np.all(np.isfinite(q)) else None

    def on_reset(self, request, response):
        # The homing tick runs in another thread: it must not see RESETTING before the reset's own
        # steps are set up (it would plan a motion home from the joint state before the scene reset).
        with self.reset_lock:
            return self._on_reset(request, response)

    def _on_reset(self, request, response):
        if self.wait_for_quiet and self.core.state == EpisodeState.IDLE:
            # quiet counts only once we can hear the policy node (our step subscription matched its
            # publisher: discovery may take seconds on a loaded machine); nobody there for 5 s: none
            now = time.monotonic()
            if self.step_matched_at is None and self.step_sub.get_publisher_count() > 0:
                self.step_matched_at = now
            heard_from = self.step_matched_at if self.step_matched_at is not None else self.started_wall + 5.0
            if now - max(self.last_step_wall, heard_from) < 0.5:
                response.success = False
                response.message = ("not reset: the policy is still commanding the interrupted episode "
                                    "(it has not seen it end yet); try again")
                return response
            self.wait_for_quiet = False
        result = self.core.reset_begin()
        if not result.accepted:
            return self._answer(result, response, service="reset")
        self.publish_status()
        if self.scene_client is not None:
            if not self.scene_client.service_is_ready():
                return self._finish_reset(False, f"scene reset service {self.cfg.reset_scene_service} unavailable", response)
            if self.max_joint_stamp is None:
                return self._finish_reset(False, "no joint state received yet", response)
        # The motion starts once the policy has sent no step for reset_quiet_s (the sequencer's
        # WAIT_QUIET): a command it computed before it saw the episode end must not land after a
        # scene reset or between homing commands.
        self.reset.begin()
        response.success, response.message = True, "reset started; status turns ready when the robot is home"
        return response

    def _finish_reset(self, ok: bool, message: str, response=None, ready_stamp_ns: int | None = None):
        self.reset.cancel()
        self.scene_future = None
        if ok and self.node_up_during_reset:
            ok, message = False, "a node (re)started during the reset: reset again"
        self.node_up_during_reset = False
        result = self.core.reset_done(ok, message)
        # "ready" carries the stamp from which the policy may start: the state the last homing
        # command produced (minus 1 ns), else the newest one when the motion was planned. Never a
        # homing state still in flight: a lockstep simulator would keep the policy one step late.
        self.publish_status(stamp_ns=ready_stamp_ns if ok else None)
        if ok:
            self.node.get_logger().info(result.message)
        else:
            self.node.get_logger().error(result.message)
        if response is not None:
            response.success, response.message = ok, result.message
            return response
        return None

    def on_homing_tick(self) -> None:
        with self.reset_lock:
            self._homing_tick()

    def _scene_reply(self) -> SceneReply | None:
        if self.scene_future is None or not self.scene_future.done():
            return None
        result = self.scene_future.result()
        if result is None:
            return SceneReply(False, "no answer")
        return SceneReply(bool(result.success), result.message, stamp_to_ns(result.state_stamp))

    def _homing_tick(self) -> None:
        if self.core.state != EpisodeState.RESETTING:
            self.reset.cancel()
            self.scene_future = None
            return
        if not self.reset.active:
            return
        positions = self.current_positions()
        with self.joint_lock:   # a state dropped or cleared here never slips in between (on_joints)
            stream = JointStream(self.max_joint_stamp, self.joint_states_received)
            tick = self.reset.tick(time.monotonic(), self.last_step_wall, stream, positions, self._scene_reply())
            if tick.clear_positions:
                self.joint_positions.clear()
        if tick.call_scene_reset:
            self.scene_future = self.scene_client.call_async(ResetScene.Request())
        if tick.command is not None:
            self.output.send(tick.command)
        if tick.outcome is not None:
            self._finish_reset(tick.outcome.ok, tick.outcome.message, ready_stamp_ns=tick.outcome.ready_stamp_ns)


def main(argv=None) -> int:
    return run(EpisodeManagerNode, argv, threads=2)
