"""residual_policy: one control tick per observation, command = clip(base + residual), to the controllers.

Per tick (only while an episode runs and the e-stop is clear):
  base     = the base action for this tick from the current chunk (chunks requested ahead of time
             from the base chunk server; resfit_ros/core/chunks.py)
  residual = actor(observation, base) (+ exploration noise in training episodes; a uniform random
             residual for the first `random_warmup_steps` training steps, a value that comes with
             the weights); 0 until weights arrive: core/control_step.py, as every in-process loop
  command  = compose_command(...): joint limits, per-step change limit, residual bound
             (resfit_ros/core/command.py: finite and within limits for ANY input)
and a StepRecord for the recorder. While an operator holds the take-over flag
(`resfit/intervention/active`), its newest joint target (`resfit/intervention/target`) replaces
base + residual, through the same limits and rate limit (core/intervention.py); the step record
marks those steps (SAFETY_OPERATOR) and the learner treats them as interventions. Weights from the learner are validated and loaded between
ticks (one executor thread runs every callback), never mid-tick. Observations older than
`watchdog_timeout_s` are not acted on: the node stops commanding (hold) or runs the base chunk
open loop for a short while (base_only) and says so on /diagnostics.

In simulation `pace_learner` makes training ticks wait until the learner is on its update schedule
(the `pace/steps_allowed` it publishes with its metrics: learning/schedule.py), so the achieved UTD
equals the configured one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool

from resfit_ros import names
from resfit_ros.config import ConfigError, require
from resfit_ros.core.chunks import ChunkScheduler
from resfit_ros.core.command import (DEFAULT_RESIDUAL_BOUND, CommandLimits, Watchdog, WatchdogAction,
                                    reach_beyond_bound)
from resfit_ros.core.intervention import OperatorInput
from resfit_ros.core.joint_states import JointStateError
from resfit_ros.core.policy_gate import EpisodeGate, LearnerPacer
from resfit_ros.core.policy_spec import PolicySpec, camera_problem
from resfit_ros.core.stamps import StampOrder
from resfit_ros.core.weights import WeightsRejected, unpack_weights
from resfit_ros.msg import EpisodeStatus, LearnerMetrics, Observation, PolicyWeights, StepRecord
from resfit_ros.nodes.common import (LATCHED, RECORDED, STREAM, Rejections, diagnostic_name, make_node, node_config,
                                     ns_to_stamp, run, stamp_to_ns, status_problem, steady_timer)
from resfit_ros.nodes.controllers import INTERFACES, ControllerOutput
from resfit_ros.nodes.convert import ObservationError, msg_to_observation
from resfit_ros.robot import RobotDescription
from resfit_ros.srv import GetActionChunk


@dataclass
class ResidualPolicyConfig:
    robot_description: str = "robots/g1_sim.yaml"  # robot YAML (joints, limits, controllers)
    control_rate_hz: float = 20.0        # per-step change limit = max_velocity / control_rate_hz
    residual_bound: list[float] = field(default_factory=lambda: [DEFAULT_RESIDUAL_BOUND])  # |residual| <= this, rad (1 or dof values); the learner bounds its actor by the same value
    command_interface: str = "forward"   # forward (Float64MultiArray per group) or trajectory
    explore: bool = True                 # exploration allowed at all (false in the eval graph)
    exploration_hold_steps: int = 1      # each noise draw (warm-up and Gaussian) is held this many decisions (= steps when action_repeat is 1)
    watchdog_timeout_s: float = 0.1      # observations older than this are not acted on
    watchdog_mode: str = "hold"          # hold (stop commanding) or base_only (base chunk open loop)
    base_only_max_s: float = 0.5         # base_only: hold after this much longer
    chunk_length: int = 20               # base policy chunk length k (checked against the answers)
    prefetch_steps: int = 2              # ask for the next chunk this many ticks before it runs out
    pace_learner: bool = False           # simulation: wait until the learner is on its update schedule
    pace_free_steps: int = 0             # training steps the robot may run ahead of that schedule
    pace_learner_timeout_s: float = 10.0 # stop waiting for a learner silent this long (counted from start-up too)
    residual_checkpoint: str = "none"    # learner checkpoint to load at start ('none' = wait for the learner)
    base_artifact: str = ""              # the frozen base (the base chunk server's): its image encoder gives the features of weights trained on base features ('' = none)
    seed: int = 0                        # exploration noise
    num_threads: int = 1                 # torch threads for the actor: more only add scheduling jitter to a ~1 ms forward
    future_tolerance_s: float = 1.0      # observations stamped further ahead of the node's clock are rejected
    intervention_max_age_s: float = 0.5  # an operator's joint target older than this is never executed
    diagnostics_period_s: float = 1.0

    def __post_init__(self):
        require(self.control_rate_hz > 0, f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        require(self.command_interface in INTERFACES, f"command_interface must be one of {INTERFACES}, "
                f"got '{self.command_interface}'")
        require(self.pace_free_steps >= 0, f"pace_free_steps must be >= 0, got {self.pace_free_steps}")
        require(self.pace_learner_timeout_s >= 0,
                f"pace_learner_timeout_s must be >= 0, got {self.pace_learner_timeout_s}")
        require(self.num_threads >= 1, f"num_threads must be >= 1, got {self.num_threads}")
        require(self.exploration_hold_steps >= 1,
                f"exploration_hold_steps must be >= 1, got {self.exploration_hold_steps}")
        require(self.chunk_length >= 1, f"chunk_length must be >= 1, got {self.chunk_length}")
        require(self.future_tolerance_s >= 0, f"future_tolerance_s must be >= 0, got {self.future_tolerance_s}")
        require(self.intervention_max_age_s > 0,
                f"intervention_max_age_s must be > 0, got {self.intervention_max_age_s}")
        require(self.diagnostics_period_s > 0, f"diagnostics_period_s must be > 0, got {self.diagnostics_period_s}")


class ResidualPolicyNode:
    def __init__(self):
        self.node = make_node("residual_policy")
        cfg = self.cfg = node_config(self.node, ResidualPolicyConfig)
        import torch

        # the default (one thread per core) makes a tick wait for a busy core's worker thread
        torch.set_num_threads(cfg.num_threads)
        self.robot = RobotDescription.load(cfg.robot_description)
        self.limits = CommandLimits.from_robot(self.robot, cfg.control_rate_hz, cfg.residual_bound)
        self.reach_warned: tuple[int, ...] = ()
        self.watchdog = Watchdog(cfg.watchdog_timeout_s, cfg.watchdog_mode, cfg.base_only_max_s)
        self.output = ControllerOutput(self.node, self.robot, cfg.command_interface, cfg.control_rate_hz)
        self.chunks = ChunkScheduler(cfg.chunk_length, cfg.prefetch_steps)
        from resfit_ros.core.control_step import ControlStep   # imports the learning core (torch)

        # residual, exploration draws and the previous command: the same step as every in-process loop
        self.control = ControlStep(self.limits, hold_steps=cfg.exploration_hold_steps, seed=cfg.seed)
        self.policy = None                 # ResidualPolicy once weights arrived
        self.spec: PolicySpec | None = None
        # weights trained on the base's image features need that very base's encoder here: loaded
        # when the first such weights arrive (a state-only residual never pays for a second copy)
        self.feature_base = None
        self.base_digest = base_file_digest(cfg.base_artifact)
        self.weights_version = 0
        self.state_size_reported: tuple[int, int] | None = None   # (weights, observations) already logged
        self.status: EpisodeStatus | None = None
        self.gate = EpisodeGate()          # the episode we step, and which observation may start it
        self.pending = None                # (Observation msg, ObservationData, t) not yet acted on
        self.latest = None                 # the newest valid observation, running or not
        self.last_obs_stamp: int | None = None
        self.last_position: np.ndarray | None = None
        self.train_steps = 0
        # a learner that is still starting (torch import, base actions over the demos) is waited
        # for as long as one that went silent
        self.pacer = LearnerPacer(cfg.pace_learner, cfg.pace_free_steps, cfg.pace_learner_timeout_s,
                                  seen_at=time.monotonic())
        self.latencies = np.zeros(1000)
        self.n_latency = 0
        self.counts = {k: 0 for k in ("ticks", "malformed_observations", "stale_observations", "chunk_underruns",
                                      "chunk_errors", "weights_loaded", "weights_rejected", "paced_waits",
                                      "intervention_steps", "intervention_holds")}
        self.watchdog_reason = "ok"
        # rejected inputs by reason (rejected/<reason> on /diagnostics): observation_*, weights_*,
        # status_invalid, metrics_malformed; observations are acted on once, in stamp order
        self.rejections = Rejections(self.node)
        self.obs_order = StampOrder(cfg.future_tolerance_s)
        self.operator = OperatorInput(self.robot.joint_names, cfg.intervention_max_age_s, cfg.future_tolerance_s)

        self.pub_step = self.node.create_publisher(StepRecord, names.STEP_RECORD, RECORDED)
        self.pub_diag = self.node.create_publisher(DiagnosticArray, names.DIAGNOSTICS, 10)
        self.chunk_client = self.node.create_client(GetActionChunk, names.GET_ACTION_CHUNK)
        # One executor thread (the EventsExecutor, see main) runs every callback of this node, chunk
        # answers included: a weights update or a chunk hand-off can never interleave with a tick.
        self.node.create_subscription(Observation, names.OBSERVATION, self.on_observation, STREAM)
        self.node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, self.on_status, LATCHED)
        self.node.create_subscription(Bool, names.ESTOP, self.on_estop, LATCHED)
        self.node.create_subscription(PolicyWeights, names.POLICY_WEIGHTS, self.on_weights, LATCHED)
        self.node.create_subscription(LearnerMetrics, names.LEARNER_METRICS, self.on_metrics, STREAM)
        self.node.create_subscription(JointState, names.INTERVENTION_TARGET, self.on_intervention_target, STREAM)
        self.node.create_subscription(Bool, names.INTERVENTION_ACTIVE, self.on_intervention_active, LATCHED)
        steady_timer(self.node, 1.0 / cfg.control_rate_hz, self.on_watchdog)
        steady_timer(self.node, cfg.diagnostics_period_s, self.publish_diagnostics)
        if cfg.residual_checkpoint not in ("", "none"):
            self.load_checkpoint(cfg.residual_checkpoint)
        self.node.get_logger().info(
            f"residual policy for {self.robot.dof} joints at {cfg.control_rate_hz} Hz, "
            f"exploration {'on' if cfg.explore else 'off'}, pacing {'on' if cfg.pace_learner else 'off'}")

    # -- weights ---------------------------------------------------------------------------------
    def install_weights(self, spec: PolicySpec, weights: dict, version: int) -> None:
        """Validate and load; raises WeightsRejected/ValueError and keeps the old weights on failure."""
        from resfit_ros.learning.config import AgentConfig
        from resfit_ros.learning.policy import ResidualPolicy

        if spec.action_dim != self.robot.dof:
            raise WeightsRejected(f"weights are for {spec.action_dim} joints, robot has {self.robot.dof}", "wrong_dof")
        if spec.feature_dim:
            if self.feature_base is None and self.base_digest:
                self.feature_base = load_feature_base(self.cfg.base_artifact)
            problem = spec.feature_base_problem(self.feature_base, self.base_digest)
            if problem is not None:
                raise WeightsRejected(*problem)
        if version <= self.weights_version:
            raise WeightsRejected(f"version {version} is not newer than the running version {self.weights_version}",
                                  "old_version")
        if self.policy is not None and spec == self.spec:
            self.policy.load_weights(weights)   # validates names, shapes, finiteness; keeps the old on error
        else:
            policy = ResidualPolicy(AgentConfig(**spec.agent_config), spec.state_dim, spec.action_dim,
                                    list(spec.camera_names), tuple(spec.image_size), spec.feature_dim)
            policy.load_weights(weights)
            self.policy, self.spec = policy, spec
        self.weights_version = version
        self.counts["weights_loaded"] += 1
        self.warn_if_reach_beyond_bound()

    def warn_if_reach_beyond_bound(self) -> None:
        """Once per set of joints: the actor may ask past this node's residual_bound (the learner was
        given a wider one), so the robot executes less than the critic is asked about."""
        reach = self.policy.reach()                                               # (A,) rad
        beyond = reach_beyond_bound(reach, self.limits.residual_bound)
        if beyond and tuple(beyond) != self.reach_warned:
            self.reach_warned = tuple(beyond)
            joints = ", ".join(f"{self.robot.joint_names[j]} ({reach[j]:.3f} > "
                               f"{self.limits.residual_bound[j]:.3f} rad)" for j in beyond[:6])
            self.node.get_logger().warning(
                f"the residual's reach exceeds residual_bound on {len(beyond)} joint(s): {joints}; they are "
                "clipped here, and the learner values actions the robot never executes: give the learner "
                "the same residual_bound as this node")

    def on_weights(self, msg: PolicyWeights) -> None:
        try:
            try:
                spec = PolicySpec.from_json(msg.spec)
            except ValueError as exc:
                raise WeightsRejected(str(exc), "bad_spec") from None
            self.install_weights(spec, unpack_weights(msg.tensors), int(msg.version))
        except (WeightsRejected, ValueError, TypeError, RuntimeError) as exc:
            self.counts["weights_rejected"] += 1
            self.rejections.count(f"weights_{getattr(exc, 'reason', 'invalid')}")
            self.node.get_logger().error(f"rejected policy weights v{msg.version}: {exc} "
                                         f"(still using v{self.weights_version})")

    def load_checkpoint(self, path: str) -> None:
        from resfit_ros.learning.agent import ResidualAgent

        try:
            agent = ResidualAgent.from_checkpoint(path)
        except Exception as exc:  # any failure to read it is a start-up configuration error
            raise ConfigError(f"residual_checkpoint {path}: {exc}") from None
        # a checkpoint does not name its base: one trained on features is taken to be this node's base's
        spec = PolicySpec.of_agent(agent, self.base_digest)
        try:
            self.install_weights(spec, agent.get_weights(), max(1, agent.critic_updates))
        except WeightsRejected as exc:
            raise ConfigError(f"residual_checkpoint {path}: {exc}") from None

    def on_metrics(self, msg: LearnerMetrics) -> None:
        if len(msg.names) != len(msg.values):
            return self.rejections.reject("metrics_malformed",
                                          f"learner metrics with {len(msg.names)} names for {len(msg.values)} values")
        allowed = [v for n, v in zip(msg.names, msg.values) if n == names.PACE_STEPS_ALLOWED]
        self.pacer.on_metrics(int(msg.env_steps), allowed[0] if allowed and np.isfinite(allowed[0]) else None,
                              time.monotonic())
        # the learner's count of our training steps: a restarted policy node continues the count
        # (exploration warm-up, pacing and the learner's update budget all depend on it)
        self.train_steps = max(self.train_steps, int(msg.env_steps))
        self.try_tick()

    # -- episode / e-stop -------------------------------------------------------------------------
    def on_status(self, msg: EpisodeStatus) -> None:
        problem = status_problem(msg)
        if problem is not None:
            return self.rejections.reject("status_invalid", f"episode status: {problem}")
        self.status = msg
        running = msg.state == EpisodeStatus.RUNNING
        ready = msg.state == EpisodeStatus.IDLE and msg.ready
        if self.gate.on_status(running, int(msg.episode_id), ready, stamp_to_ns(msg.header.stamp)):
            self.chunks.reset()                    # never carry a chunk into a new episode
            # Act on the newest observation at once (the watchdog rejects it if stale): a lockstep
            # simulator publishes nothing new until it is commanded; but never on one of the robot
            # before its last reset.
            latest = self.latest
            self.pending = latest if latest is not None and self.gate.after_reset(latest[1].stamp_ns) else None
            self.try_tick()
        if not running:
            self.pending = None

    def on_estop(self, msg: Bool) -> None:
        self.gate.estopped = bool(msg.data)
        if self.gate.estopped:
            self.pending = None
            self.node.get_logger().error("E-STOP: commanding stopped")

    def running(self) -> bool:
        return self.gate.running

    # -- operator (interventions) ----------------------------------------------------------------
    def on_intervention_active(self, msg: Bool) -> None:
        if bool(msg.data) != self.operator.active:
            self.node.get_logger().warning("operator takes over" if msg.data else "operator hands back to the policy")
        self.operator.set_active(bool(msg.data))

    def on_intervention_target(self, msg: JointState) -> None:
        try:
            self.operator.on_target(msg.name, msg.position, stamp_to_ns(msg.header.stamp),
                                    self.node.get_clock().now().nanoseconds)
        except JointStateError as exc:
            self.rejections.reject(f"intervention_{exc.reason}", f"ignored intervention target: {exc}")

    # -- control tick -------------------------------------------------------------------------------
    def on_observation(self, msg: Observation) -> None:
        try:
            obs = msg_to_observation(msg, dof=self.robot.dof)
            if obs.joint_names != self.robot.joint_names:
                raise ObservationError("joint order differs from the robot description", "joint_names")
            if self.spec is not None:   # fits the loaded network (else act() would fail mid-tick)
                problem = self.spec.observation_problem(len(obs.state_vector()), obs.images)
                if problem is None and self.spec.feature_dim:
                    problem = camera_problem(self.feature_base.camera_names, self.feature_base.image_size, obs.images)
                if problem is not None:
                    if problem[0] == "state_dim":
                        self.report_state_size(len(obs.state_vector()))
                    raise ObservationError(problem[1], problem[0])
            order = self.obs_order.check(obs.stamp_ns, self.node.get_clock().now().nanoseconds)
            if order is not None:
                raise ObservationError(f"observation stamped {obs.stamp_ns / 1e9:.3f} s is {order.replace('_', ' ')} "
                                       f"(last acted-on stamp {(self.obs_order.last_stamp or 0) / 1e9:.3f} s)", order)
        except ObservationError as exc:
            self.counts["malformed_observations"] += 1
            self.rejections.reject(f"observation_{exc.reason}", f"ignored observation: {exc}")
            return
        self.last_obs_stamp = obs.stamp_ns
        self.last_position = obs.position
        self.latest = (msg, obs, time.perf_counter())
        if self.gate.may_act_on(obs.stamp_ns):
            self.pending = self.latest
            self.try_tick()

    def training_episode(self) -> bool:
        return self.cfg.explore and self.status is not None and self.status.explore

    def request_chunk(self, msg: Observation, generation: int, episode_start: bool) -> None:
        try:
            future = self.chunk_client.call_async(GetActionChunk.Request(observation=msg, episode_start=episode_start))
        except Exception as exc:   # e.g. shutting down: unbook it, or no chunk would ever be asked for again
            self.chunks.request_failed()
            self.node.get_logger().error(f"base chunk request not sent: {exc}", throttle_duration_sec=2.0)
            return
        # the done-callback runs in the executor's one thread, between other callbacks (never mid-tick)
        future.add_done_callback(lambda f, g=generation: self.on_chunk(f, g))

    def on_chunk(self, future, generation: int) -> None:
        result = future.result()
        if result is None or not result.success:
            self.counts["chunk_errors"] += 1
            self.chunks.request_failed()
            self.node.get_logger().error(f"base chunk request failed: {getattr(result, 'message', 'no answer')}",
                                         throttle_duration_sec=2.0)
            return
        c = result.chunk
        chunk = np.asarray(c.actions, dtype=np.float64)
        if c.dof != self.robot.dof or chunk.size != c.chunk_length * c.dof or list(c.joint_names) != self.robot.joint_names:
            self.counts["chunk_errors"] += 1
            self.chunks.request_failed()
            self.node.get_logger().error("base chunk has the wrong shape or joint order", throttle_duration_sec=2.0)
            return
        self.chunks.receive(chunk.reshape(c.chunk_length, c.dof), generation)
        self.try_tick()

    def try_tick(self) -> None:
        if self.pending is None or not self.running():
            return
        msg, obs, t_received = self.pending
        decision = self.watchdog.check(self.node.get_clock().now().nanoseconds, obs.stamp_ns)
        if decision.action is not WatchdogAction.COMMAND and decision.age_s < 0:
            # stamped ahead of our clock: in simulation its /clock tick may simply not be here yet.
            # Kept (not acted on) and retried by the watchdog tick; a lockstep simulator sends no other.
            self.watchdog_reason = decision.reason
            return
        if decision.action is not WatchdogAction.COMMAND:
            self.counts["stale_observations"] += 1
            self.watchdog_reason = decision.reason
            self.pending = None
            return
        if self.pacer.behind(self.train_steps, self.training_episode(), time.monotonic()):
            self.counts["paced_waits"] += 1
            return                                 # re-tried when the learner reports progress
        # A chunk request writes the whole observation (64 KB with three cameras) to DDS and starts
        # the base server's inference, which competes for the same few cores: it is sent AFTER
        # this tick's command unless the robot is waiting for that very chunk. It is booked for
        # this tick's observation before the queue advances (the chunk's row 0 belongs to this tick).
        request = None
        if self.chunks.wants_request() and self.chunk_client.service_is_ready():
            request = (msg, self.chunks.request_sent(), self.gate.step == 0)
        base = self.chunks.next_action()
        try:
            if base is None:
                self.counts["chunk_underruns"] += 1
                return                             # re-tried when the chunk arrives (or the next observation)
            self.pending = None
            self.command_tick(obs, base, t_received)
        finally:
            if request is not None:            # whatever happened above: never a booked request unsent
                self.request_chunk(*request)

    def command_tick(self, obs, base: np.ndarray, t_received: float) -> None:
        """This tick's residual, command (published at once) and step record."""
        explore = self.training_episode()
        if self.gate.step == 0:
            # rate-limited from where the robot IS (it was reset and homed since the previous
            # episode's last command); the next exploration draw is a fresh one
            self.control.start_episode(obs.position)
        images = features = None
        # a camera is missing only if weights for other cameras arrived after this observation was
        # checked: the actor then refuses images / features None and the tick is base only
        try:
            if self.policy is not None and self.spec.camera_names:
                images = obs.image_stack(list(self.spec.camera_names))
            if self.policy is not None and self.spec.feature_dim:
                features = self.feature_base.observation_features(obs)
        except (KeyError, ValueError):
            pass
        operator = self.operator.tick(self.node.get_clock().now().nanoseconds, base)
        if operator.hold:               # the operator holds the flag but its device is silent: hold
            self.counts["intervention_holds"] += 1
            operator.target = np.full(self.robot.dof, np.nan)
        result = self.control.step(self.policy, obs.state_vector(), base, obs.position, images=images,
                                   features=features, explore=explore, train_steps=self.train_steps, operator=operator.target)
        if result.intervention and not operator.hold:
            self.counts["intervention_steps"] += 1
        if result.error is not None:                       # never kill the control loop
            self.rejections.reject("residual_error", f"residual not computed ({result.error}): base only this tick")
        residual, command, flags = result.residual, result.command, result.flags
        self.output.send(command)
        latency = time.perf_counter() - t_received
        self.latencies[self.n_latency % len(self.latencies)] = latency
        self.n_latency += 1
        self.counts["ticks"] += 1
        if explore:
            self.train_steps += 1
        record = StepRecord(episode_id=self.gate.episode_id, step=self.gate.step, observation_sequence=obs.sequence,
                            joint_names=self.robot.joint_names, base_action=base.tolist(),
                            residual=np.nan_to_num(residual).tolist(), command=command.tolist(),
                            exploration=explore, training_steps=self.train_steps, weights_version=self.weights_version,
                            safety_flags=int(flags), latency=float(latency))
        record.header.stamp = ns_to_stamp(obs.stamp_ns)
        self.pub_step.publish(record)
        self.gate.step += 1

    def report_state_size(self, observed: int) -> None:
        # every observation is refused until matching weights arrive: say once why, and the fix
        from resfit_ros.learning.from_bags import state_size_mismatch

        if self.state_size_reported != (self.spec.state_dim, observed):
            self.state_size_reported = (self.spec.state_dim, observed)
            self.node.get_logger().error(
                f"residual weights v{self.weights_version} cannot act on this robot's observations "
                "(each one is refused; the watchdog holds the robot): "
                + state_size_mismatch(observed, self.spec.state_dim))

    # -- watchdog and diagnostics --------------------------------------------------------------------
    def on_watchdog(self) -> None:
        if not self.running() or self.last_obs_stamp is None:
            return
        if self.pending is not None:
            self.try_tick()                        # a paced wait ends when the learner went silent
        decision = self.watchdog.check(self.node.get_clock().now().nanoseconds, self.last_obs_stamp)
        if decision.action is WatchdogAction.COMMAND:
            return
        self.watchdog_reason = decision.reason
        self.node.get_logger().warning(f"watchdog: {decision.reason}", throttle_duration_sec=1.0)
        if decision.action is WatchdogAction.BASE_ONLY:
            base = self.chunks.next_action()
            if base is not None:
                self.output.send(self.control.base_only(base, self.last_position))
        # HOLD: send nothing; the controllers keep the last (safe) command

    def publish_diagnostics(self) -> None:
        n = min(self.n_latency, len(self.latencies))
        lat = self.latencies[:n] * 1e3
        values = dict(self.counts)
        values.update(self.rejections.values())
        values.update({"weights_version": self.weights_version, "train_steps": self.train_steps,
                       "tick_latency_p50_ms": float(np.percentile(lat, 50)) if n else float("nan"),
                       "tick_latency_p99_ms": float(np.percentile(lat, 99)) if n else float("nan"),
                       "watchdog": self.watchdog_reason, "estopped": self.gate.estopped,
                       "operator_active": self.operator.active})
        level = DiagnosticStatus.ERROR if self.gate.estopped else (
            DiagnosticStatus.WARN if self.watchdog_reason != "ok" else DiagnosticStatus.OK)
        status = DiagnosticStatus(name=diagnostic_name(self.node), hardware_id="resfit_ros", level=level,
                                  message=self.watchdog_reason if level else f"{self.counts['ticks']} ticks")
        status.values = [KeyValue(key=k, value=str(v)) for k, v in sorted(values.items())]
        diag = DiagnosticArray(status=[status])
        diag.header.stamp = self.node.get_clock().now().to_msg()
        self.pub_diag.publish(diag)
        self.watchdog_reason = "ok"


def base_file_digest(path: str) -> str:
    """The file digest of `base_artifact` ('' when none is set); a missing file stops the node."""
    if path in ("", "none"):
        return ""
    from resfit_ros.learning.from_bags import file_digest

    try:
        return file_digest(path)
    except OSError as exc:
        raise ConfigError(f"base_artifact {path}: {exc}") from None


def load_feature_base(path: str):
    """The base policy whose encoder gives the features; WeightsRejected when it cannot be loaded."""
    from resfit_ros.policy.base import PolicyLoadError, load_base_policy

    try:
        return load_base_policy(path)
    except (PolicyLoadError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsRejected(f"base_artifact {path} cannot give the weights' features: {exc}", "no_base") from None


def main(argv=None) -> int:
    return run(ResidualPolicyNode, argv, events=True)
