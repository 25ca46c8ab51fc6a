"""sim_robot: the MuJoCo humanoid behind the same topics as the real robot.

Publishes /joint_states (29 joints), /camera/<name>/image_raw (rgb8), /clock (simulated time) and
the task state (object pose, as a JointState of named values on ~/task_state); takes the
ros2_control forward-command topics `/<controller>/commands` (Float64MultiArray, one per joint
group, in the group's joint order) exactly like the robot's controllers; offers ~/reset_scene (ResetScene).

Lockstep (default): the simulator advances one control period as soon as every controller group
has sent a command for the current step, so training runs faster than real time and the learner
can pace it. While an episode runs it waits for those commands (the episode's steps are exactly
the policy's steps); between episodes the episode manager's homing commands step it the same way.
Without any command for `idle_period_s` it publishes its current state again (same stamp, no
physics step), also during an episode: a sample lost on the way (a restarted node, a subscriber
queue overrun by a flood of bad messages) would otherwise stall the loop for good, as the next
step waits for a command that waits for that sample. It never steps on its own:
a step that nobody commanded could land between the episode's start and its first command, and the
policy would then act one observation late for the whole episode (lockstep keeps any lag it gets).

Real time (`lockstep:=false`, with `publish_clock:=false`): the simulator behaves like the robot,
on its node clock (the wall clock). Physics follows the wall clock (`physics_rate_hz`, and is
brought up to date before every command, sample and reset); the joint states (with the task state
and the success flag) and the camera frames are sampled on their own timers at their own rates,
stamped with the node clock at acquisition and published `*_latency_s` + U(0, `*_jitter_s`) later
by a publishing thread, as a driver delivers them; a command is applied when it arrives and held
until the next one (ros2_control's forward controllers have no timeout). The core is
resfit_ros/sim/realtime.py. config/robot_sim.yaml holds the stand-in's parameters for the
robot_sim graph.

A scripted operator (lockstep, `operator_share` > 0): in that share of the training episodes the
task's expert watches and, once the robot strays from it, takes over through the residual policy's
intervention topics, as a person with a teleoperation device would (resfit_ros/sim/intervener.py).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray

from resfit_ros import names
from resfit_ros.config import require
from resfit_ros.msg import EpisodeStatus
from resfit_ros.nodes.common import (LATCHED, STREAM, Rejections, make_node, node_config, ns_to_stamp, run,
                                     status_problem, steady_timer)
from resfit_ros.srv import ResetScene


@dataclass
class SimRobotConfig:
    task: str = "g1_pick_lift"           # simulated task (resfit_ros.sim.TASKS)
    control_rate_hz: float = 20.0        # control period of the simulated controllers
    image_size: int = 84                 # square camera images, pixels
    cameras: list[str] = None            # camera names to render ([] = state only)
    render: bool = True                  # render camera images at all
    seed: int = 0                        # first scene's seed; each reset_scene uses the next
    lockstep: bool = True                # step when all groups commanded (false: real time, module doc)
    idle_period_s: float = 0.5           # lockstep: re-publish the state after this long without commands
    publish_clock: bool = True           # publish /clock (nodes run with use_sim_time); lockstep only
    robot_description: str = ""          # unused by the simulator itself (the model defines it)
    # real time (lockstep: false) only: the robot's own rates, like its drivers' and controllers'
    physics_rate_hz: float = 250.0       # physics catches up with the wall clock this often (whole 2 ms steps)
    max_catchup_s: float = 0.1           # a stall longer than this: physics skips ahead (counted), no backlog burst
    joint_state_rate_hz: float = 200.0   # joint states (+ ~/task_state, ~/success) sampled per second
    camera_rate_hz: float = 30.0         # frames per second of every camera (one shutter for all)
    camera_clock_drift_ppm: float = 0.0  # the cameras' clock runs this much slow against the joints' (own devices)
    joint_latency_s: float = 0.001       # a joint state is published this long after its acquisition (= its stamp) ...
    joint_jitter_s: float = 0.0005       # ... plus U(0, this)
    camera_latency_s: float = 0.015      # a frame is published this long after its acquisition (= its stamp) ...
    camera_jitter_s: float = 0.005       # ... plus U(0, this)
    # lockstep only: the scripted operator (sim/intervener.py)
    operator_share: float = 0.0          # fraction of the training episodes it watches (0: none)
    operator_deviation_rad: float = 0.25 # it takes over when an arm joint's command is this far from the expert's

    def __post_init__(self):
        if self.cameras is None:
            self.cameras = ["head"]
        require(self.control_rate_hz > 0, f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        require(8 <= self.image_size <= 1024, f"image_size must be in [8, 1024], got {self.image_size}")
        require(self.idle_period_s > 0, f"idle_period_s must be > 0, got {self.idle_period_s}")
        # a real-time robot stamps with its node clock: a /clock of its own would be a second time base
        require(self.lockstep or not self.publish_clock, "publish_clock must be false when lockstep is false "
                "(real time: the stamps are the node clock's, /clock is lockstep's simulated time)")
        for key in ("physics_rate_hz", "joint_state_rate_hz", "camera_rate_hz"):
            value = getattr(self, key)
            require(0 < value <= 2000, f"{key} must be in (0, 2000], got {value}")
        require(0.002 <= self.max_catchup_s <= 10, f"max_catchup_s must be in [0.002, 10], got {self.max_catchup_s}")
        require(abs(self.camera_clock_drift_ppm) <= 10_000,
                f"camera_clock_drift_ppm must be within +-10000, got {self.camera_clock_drift_ppm}")
        for key in ("joint_latency_s", "joint_jitter_s", "camera_latency_s", "camera_jitter_s"):
            value = getattr(self, key)
            require(0 <= value <= 1, f"{key} must be in [0, 1] s, got {value}")
        require(self.lockstep or self.operator_share == 0, "operator_share needs lockstep (the scripted operator "
                "follows the episode's steps)")
        from resfit_ros.sim.intervener import InterventionConfig
        InterventionConfig(self.operator_share, self.operator_deviation_rad)   # validates both


class SimRobotNode:
    def __init__(self):
        self.node = make_node("sim_robot")
        self.cfg = node_config(self.node, SimRobotConfig)
        from resfit_ros.sim import TASKS, make_env

        require(self.cfg.task in TASKS, f"task must be one of {sorted(TASKS)}, got '{self.cfg.task}'")
        if not self.cfg.lockstep:
            require(not self.node.get_parameter("use_sim_time").value,
                    "use_sim_time must be false when lockstep is false (real time stamps with the wall clock; "
                    "nobody publishes /clock)")
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
        self.pub_clock = self.node.create_publisher(Clock, names.CLOCK, 10) if self.cfg.publish_clock else None
        for group, controller in self.robot.controllers.items():
            self.node.create_subscription(
                Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=controller),
                lambda msg, g=group: self.on_command(g, msg), STREAM)
        self.node.create_service(ResetScene, "~/reset_scene", self.on_reset_scene)
        self.episode_running = False
        self.operator = None
        if self.cfg.operator_share > 0:
            from resfit_ros.sim.intervener import InterventionConfig, ScriptedIntervener

            self.operator = ScriptedIntervener(self.env, self.cfg.task, InterventionConfig(
                self.cfg.operator_share, self.cfg.operator_deviation_rad))
            self.operator_rng = np.random.default_rng(self.cfg.seed + 4242)
            self.pub_operator_active = self.node.create_publisher(Bool, names.INTERVENTION_ACTIVE, LATCHED)
            self.pub_operator_target = self.node.create_publisher(JointState, names.INTERVENTION_TARGET, STREAM)
            self.pub_operator_active.publish(Bool(data=False))
        self.node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, self.on_status, LATCHED)
        if self.cfg.lockstep:
            steady_timer(self.node, min(self.cfg.idle_period_s, 0.01), self.on_timer)
            self.rejections.start_diagnostics(1.0, extra=lambda: {"seed": self.seed, "sim_time_s": self.clock_ns / 1e9})
            self.publish()
            mode = f"lockstep at {self.cfg.control_rate_hz} Hz"
        else:
            self._start_real_time(cameras)
            c = self.cfg
            mode = (f"real time: physics {c.physics_rate_hz:g} Hz, joint states {c.joint_state_rate_hz:g} Hz "
                    f"(+{c.joint_latency_s * 1e3:g}..{(c.joint_latency_s + c.joint_jitter_s) * 1e3:g} ms)"
                    + (f", cameras {c.camera_rate_hz:g} Hz (+{c.camera_latency_s * 1e3:g}.."
                       f"{(c.camera_latency_s + c.camera_jitter_s) * 1e3:g} ms)" if cameras else ""))
        self.node.get_logger().info(f"task {self.cfg.task}, {self.robot.dof} joints, cameras {list(cameras)}, {mode}")

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
        if not self.cfg.lockstep:
            # physics first reaches this moment under the command held so far: the new one acts from its arrival
            self.advance_physics()
            self.target[idx] = np.clip(data, self.robot.lower[idx], self.robot.upper[idx])
            self.env.set_targets(self.target)
            self.commands_applied += 1
            return
        # the controllers clamp to the joint limits, as the real ones do
        self.target[idx] = np.clip(data, self.robot.lower[idx], self.robot.upper[idx])
        self.fresh.add(group)
        if len(self.fresh) == len(self.groups):
            self.step()

    def on_status(self, msg: EpisodeStatus) -> None:
        problem = status_problem(msg)
        if problem is not None:
            return self.rejections.reject("status_invalid", f"episode status: {problem}")
        running = msg.state == EpisodeStatus.RUNNING
        if self.operator is not None and running != self.episode_running:
            self.operator_episode(running, bool(msg.explore))
        self.episode_running = running

    def on_timer(self) -> None:
        if time.monotonic() - self.last_step_wall >= self.cfg.idle_period_s:
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
        if not self.cfg.lockstep:
            self.env.set_targets(self.target)
            self.pacer.restart(time.monotonic_ns())
            stamp_ns = self.sample_joints()
            response.success, response.message = True, f"scene reset with seed {self.seed}"
            response.state_stamp = ns_to_stamp(stamp_ns)
            return response
        self.fresh.clear()
        self.clock_ns += self.dt_ns
        self.publish()
        # the stamp of the reset state: the episode manager plans its homing from joint states of
        # at least this stamp (an older one, still in flight, shows the robot where it was before)
        response.success, response.message = True, f"scene reset with seed {self.seed}"
        response.state_stamp = ns_to_stamp(self.clock_ns)
        return response

    # -- lockstep simulation -----------------------------------------------------------------
    def step(self) -> None:
        self.obs, success = self.env.step(self.target)
        self.fresh.clear()
        self.last_step_wall = time.monotonic()
        self.clock_ns += self.dt_ns
        if self.operator is not None and self.episode_running:
            self.operator_step(self.target)
        self.publish(success)

    # -- the scripted operator -----------------------------------------------------------------
    def operator_episode(self, running: bool, explore: bool) -> None:
        """An episode starts (watched in `operator_share` of the training ones) or ends (hand back)."""
        was_active = self.operator.active
        watch = running and explore and self.operator_rng.random() < self.cfg.operator_share
        self.operator.start_episode(watch)
        if was_active:
            self.pub_operator_active.publish(Bool(data=False))
        if watch:
            self.operator.target()          # the expert's command for step 0: its timeline starts here

    def operator_step(self, command: np.ndarray) -> None:
        """After the step commanded `command`: take over if it strayed; while driving, the next target
        goes out before the state that the next command will answer."""
        was_active = self.operator.active
        self.operator.observe(command)
        target = self.operator.target()
        if target is None:
            return
        if not was_active:
            self.pub_operator_active.publish(Bool(data=True))
        msg = JointState(name=list(self.robot.joint_names), position=target.tolist())
        msg.header.stamp = ns_to_stamp(self.clock_ns)
        self.pub_operator_target.publish(msg)

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

    # -- real time ---------------------------------------------------------------------------
    def _start_real_time(self, cameras: tuple[str, ...]) -> None:
        from resfit_ros.sim.env import EXTRA_NAMES
        from resfit_ros.sim.realtime import DelayQueue, PhysicsPacer, SensorDelay

        cfg = self.cfg
        self.extra_names = list(EXTRA_NAMES)
        self.env.set_targets(self.target)
        # physics time starts with the first timer callback, not during the start-up (no false stall)
        self.pacer = PhysicsPacer(float(self.env.model.opt.timestep), cfg.max_catchup_s)
        self.joint_delay = SensorDelay(cfg.joint_latency_s, cfg.joint_jitter_s, seed=cfg.seed)
        self.camera_delay = SensorDelay(cfg.camera_latency_s, cfg.camera_jitter_s, seed=cfg.seed + 1)
        self.counts = {"joint_states": 0, "frames": 0, "published": 0}   # written by the executor thread only
        self.delivered = 0                                                 # written by the delivery thread only
        self.commands_applied = 0
        self.skipped_reported = 0
        # Delivery runs in its own thread, so a sample's publication never waits for a render or a
        # physics catch-up in the executor thread (a driver's transfer runs beside its acquisition).
        self.outbox = DelayQueue()
        self.outbox_cv = threading.Condition()
        self.closing = False
        self.sender = threading.Thread(target=self._deliver_loop, name="sim_robot_delivery", daemon=True)
        self.sender.start()
        steady_timer(self.node, 1.0 / cfg.physics_rate_hz, self.advance_physics)
        steady_timer(self.node, 1.0 / cfg.joint_state_rate_hz, self.sample_joints)
        if cameras:
            steady_timer(self.node, (1.0 + cfg.camera_clock_drift_ppm * 1e-6) / cfg.camera_rate_hz, self.sample_cameras)
        self.rejections.start_diagnostics(1.0, extra=lambda: {
            "seed": self.seed, "sim_time_s": round(float(self.env.data.time), 3),
            "physics_skipped_s": round(self.pacer.skipped_s, 3), "commands_applied": self.commands_applied,
            "joint_states_sampled": self.counts["joint_states"], "frames_sampled": self.counts["frames"],
            "samples_published": self.counts["published"] + self.delivered})

    def advance_physics(self) -> None:
        self.env.advance(self.pacer.due(time.monotonic_ns()))
        if self.pacer.skipped_steps > self.skipped_reported:
            self.skipped_reported = self.pacer.skipped_steps
            self.node.get_logger().warning(
                f"physics fell more than {self.cfg.max_catchup_s:g} s behind the wall clock (a stalled machine) "
                f"and skipped ahead: {self.pacer.skipped_s:.3f} s skipped so far", throttle_duration_sec=5.0)

    def sample_joints(self) -> int:
        """Acquire a joint state (+ task state, success) now; its stamp in ns (node clock)."""
        self.advance_physics()
        acquired = time.monotonic_ns()
        stamp_ns = self.node.get_clock().now().nanoseconds
        stamp = ns_to_stamp(stamp_ns)
        q, v = self.env.joint_state()
        js = JointState(name=list(self.robot.joint_names), position=q.tolist(), velocity=v.tolist())
        js.header.stamp = stamp
        task = JointState(name=self.extra_names, position=np.asarray(self.env.extra(), float).tolist())
        task.header.stamp = stamp
        success = Bool(data=bool(self.env.success()))
        self._deliver(self.joint_delay, acquired, [(self.pub_joints, js), (self.pub_task, task),
                                                   (self.pub_success, success)])
        self.counts["joint_states"] += 1
        return stamp_ns

    def sample_cameras(self) -> None:
        """Acquire one frame of every camera now (one shutter), stamped at acquisition."""
        self.advance_physics()
        acquired = time.monotonic_ns()
        stamp = self.node.get_clock().now().to_msg()
        messages = []
        for cam, rgb in self.env.render_images().items():
            img = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
            img.header.stamp, img.header.frame_id = stamp, f"{cam}_camera"
            img.data = rgb.tobytes()
            messages.append((self.pub_images[cam], img))
        self._deliver(self.camera_delay, acquired, messages)
        self.counts["frames"] += 1

    def _deliver(self, delay, acquired_ns: int, messages: list) -> None:
        if delay.immediate:
            for pub, msg in messages:
                pub.publish(msg)
            self.counts["published"] += 1
            return
        with self.outbox_cv:
            self.outbox.push(delay.due(acquired_ns), messages)
            self.outbox_cv.notify()

    def _deliver_loop(self) -> None:
        while True:
            with self.outbox_cv:
                ready = []
                while not self.closing:
                    now = time.monotonic_ns()
                    ready = self.outbox.pop_due(now)
                    if ready:
                        break
                    due = self.outbox.next_due()
                    self.outbox_cv.wait(None if due is None else (due - now) / 1e9)
                if self.closing:
                    return
            for messages in ready:
                for pub, msg in messages:
                    pub.publish(msg)
                self.delivered += 1

    def close(self) -> None:
        if self.cfg.lockstep:
            return
        # the delivery thread must not publish on a destroyed node; messages still in flight are dropped
        with self.outbox_cv:
            self.closing = True
            self.outbox_cv.notify()
        self.sender.join(timeout=2.0)
        self.env.close()


def main(argv=None) -> int:
    return run(SimRobotNode, argv, events=True)
