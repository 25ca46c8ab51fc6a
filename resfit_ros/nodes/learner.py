"""learner: demonstrations + recorded online episodes -> residual TD3 updates -> policy weights.

The replay buffer is a cache of episode bags (resfit_ros/learning/from_bags.py): demos from
`demos_dir`, online episodes from `episodes_dir` as the recorder completes them. A training
thread (never a ROS callback: a learner step must not starve the services) runs iterations of
UTD critic updates + 1 actor update, capped by the update schedule (learning/schedule.py: no update
during the random-residual steps, then the critic-only warm-up, then `utd` per training step the
robot has taken; its `steps_allowed` goes out with the metrics for the paced simulator), publishes weights every
`publish_every_updates`, metrics every iteration (LearnerMetrics + TensorBoard under output_dir),
and writes atomic checkpoints; a restarted learner resumes from the newest one and rebuilds the
buffer from the same bags. It may run on another machine on the same ROS_DOMAIN_ID.
"""
from __future__ import annotations

import threading
import time
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resfit_ros import names
from resfit_ros.config import ConfigError, require
from resfit_ros.bags.reader import episode_name
from resfit_ros.core.policy_gate import paced_share
from resfit_ros.core.policy_spec import PolicySpec
from resfit_ros.core.weights import pack_weights
from resfit_ros.learning.from_bags import EXCLUDED_ABORTED
from resfit_ros.learning.offline import OfflineSettings, refit_state_statistics_if_due
from resfit_ros.learning.schedule import UpdateSchedule
from resfit_ros.msg import LearnerMetrics, LearnerStatus, PolicyWeights, StepRecord, Tensor
from resfit_ros.nodes.common import LATCHED, STREAM, Rejections, make_node, node_config, run

# The policy node's training-step count grows by one per step record; a record claiming a larger
# jump than this is malformed (a forged count would lift the learner's update budget for good).
MAX_TRAINING_STEP_JUMP = 10_000
_ROBOT_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass
class LearnerConfig(OfflineSettings):
    """The agent and replay fields are OfflineSettings' (shared with `resfit-ros train-offline`);
    these are the node's own."""
    output_dir: str = "outputs/run"           # checkpoints/, tensorboard/ go here
    demos_dir: str = "outputs/demos/g1_pick_lift"  # demonstration episode bags
    episodes_dir: str = "outputs/run/episodes"  # online episode bags (the recorder's output_dir)
    base_artifact: str = ""                   # frozen base policy: base actions of the demos
    initial_updates: int = 1000               # critic-only updates on the demos before the first step
    publish_every_updates: int = 100          # push weights to the policy node this often
    checkpoint_every_updates: int = 2000      # atomic checkpoint this often
    scan_period_s: float = 1.0                # look for newly completed episodes this often
    num_threads: int = 1                      # torch threads for the updates
    robot_description: str = ""               # unused; accepted so one YAML serves all nodes
    robots: list[str] = field(default_factory=list)  # a fleet: its robots' namespaces relative to this node's (robot_0, ...; [] = one robot here); their steps count together, each gets the weights

    def __post_init__(self):
        super().__post_init__()
        require(self.initial_updates >= 0, f"initial_updates must be >= 0, got {self.initial_updates}")
        require(self.publish_every_updates >= 1, f"publish_every_updates must be >= 1, got {self.publish_every_updates}")
        require(self.checkpoint_every_updates >= 1,
                f"checkpoint_every_updates must be >= 1, got {self.checkpoint_every_updates}")
        for robot in self.robots:
            require(bool(_ROBOT_NAMESPACE.fullmatch(robot)),
                    f"robots: {robot!r} is not a relative ROS namespace (e.g. robot_0)")
        require(len(set(self.robots)) == len(self.robots), f"robots: {self.robots} names a robot twice")


def robot_topic(robot: str, name: str) -> str:
    """A robot's topic seen from the learner: `robot_0/resfit/step` ('' = the learner's own namespace)."""
    return f"{robot}/{name}" if robot else name




class Learner:
    def __init__(self):
        self.node = make_node("learner")
        cfg = self.cfg = node_config(self.node, LearnerConfig)
        import torch

        torch.set_num_threads(cfg.num_threads)
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.robots = list(cfg.robots) or [""]
        self.robot_steps = dict.fromkeys(self.robots, 0)    # training steps each robot took (StepRecords)
        self.robot_records = dict.fromkeys(self.robots, 0)  # step records accepted per robot
        self.lock = threading.Lock()
        self.pub_weights = [self.node.create_publisher(PolicyWeights, robot_topic(r, names.POLICY_WEIGHTS), LATCHED)
                            for r in self.robots]
        self.pub_metrics = {r: self.node.create_publisher(LearnerMetrics, robot_topic(r, names.LEARNER_METRICS),
                                                          STREAM) for r in self.robots}
        self.pub_status = self.node.create_publisher(LearnerStatus, names.LEARNER_STATUS, LATCHED)
        self.rejections = Rejections(self.node)   # rejected/step_jump on /diagnostics
        self.rejections.start_diagnostics(1.0, extra=lambda: {"steps_seen": self.steps_seen})
        for r in self.robots:
            self.node.create_subscription(StepRecord, robot_topic(r, names.STEP_RECORD),
                                          lambda msg, r=r: self.on_step(msg, r), STREAM)
        self.skipped_reported: set[str] = set()
        self.setup()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.train_loop, name="learner", daemon=True)
        self.thread.start()

    # -- set-up: resume or start from the demonstrations -------------------------------------------
    def setup(self) -> None:
        # The same construction as `resfit-ros train-offline` (resfit_ros/learning/offline.py), so
        # an offline warm-up and a live run share one definition of normaliser, agent and buffer.
        from resfit_ros.learning.offline import OfflineSettings, SetupError, build_setup

        cfg = self.cfg
        log = self.node.get_logger()
        if not cfg.base_artifact:
            raise ConfigError("base_artifact must name the frozen base (it gives the demos' base actions)")
        settings = OfflineSettings.from_object(cfg)
        resume = self.ckpt_dir if (self.ckpt_dir / "latest").is_file() else None
        try:
            setup = build_setup(cfg.demos_dir, [cfg.episodes_dir], cfg.base_artifact, settings, resume_from=resume)
        except SetupError as exc:
            if resume is None:
                raise ConfigError(str(exc)) from None
            log.error(f"cannot resume ({exc}); starting from the demonstrations")
            setup = build_setup(cfg.demos_dir, [cfg.episodes_dir], cfg.base_artifact, settings)
        for reason in setup.refused_checkpoints:
            log.error(f"refused checkpoint: {reason}")
        if setup.resumed_from is not None:
            log.info(f"resumed from {setup.resumed_from} at {setup.agent.critic_updates} critic updates")
        self.resumed_from, self.resumed_updates = setup.resumed_from, setup.agent.critic_updates
        self.refused_checkpoints = list(setup.refused_checkpoints)
        self.agent, self.buffer, self.ingest = setup.agent, setup.buffer, setup.ingest
        cameras = setup.cameras
        a = self.agent
        self.spec = PolicySpec.of_agent(a, self.ingest.base_digest)
        online = self.ingest.history
        log.info(f"replay: {self.buffer.num_demo_transitions} demo + {self.buffer.num_online_transitions} "
                 f"online transitions; {self.spec.state_dim}-D state, cameras {cameras or 'none'}"
                 + (f" (read as the base encoder's {a.feature_dim} features)" if a.feature_dim else "") + "; "
                 f"{len(online)} online episodes" + (f", newest {online[-1][0]}" if online else ""))
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(self.out / "tensorboard"))
        self.version = max(1, a.critic_updates + 1)
        self.updates_at_start = a.critic_updates
        self.schedule = UpdateSchedule.of(cfg)
        self.publish_weights()
        self.log_skipped()
        self.publish_status()

    # -- ROS side -----------------------------------------------------------------------------------
    @property
    def steps_seen(self) -> int:
        """Training steps the robots took together."""
        return sum(self.robot_steps.values())

    def on_step(self, msg: StepRecord, robot: str = "") -> None:
        # the policy node's own running count: steps taken before this learner subscribed count too
        steps = int(msg.training_steps)
        with self.lock:
            seen = self.robot_steps[robot]
            # the first record sets the count (the policy may have run long before this learner)
            if self.robot_records[robot] and steps > seen + MAX_TRAINING_STEP_JUMP:
                jump = steps - seen
            else:
                jump = 0
                self.robot_records[robot] += 1
                self.robot_steps[robot] = max(seen, steps)
        if jump:
            where = f" of {robot}" if robot else ""
            self.rejections.reject("step_jump", f"step record{where} claims {steps} training steps, {jump} more "
                                   f"than the {seen} seen (at most {MAX_TRAINING_STEP_JUMP})")

    def publish_weights(self) -> None:
        msg = PolicyWeights(version=self.version, learner_step=self.agent.critic_updates,
                            env_steps=self.steps_seen, spec=self.spec.to_json())
        msg.tensors = [Tensor(name=t.name, shape=list(t.shape), data=t.data)
                       for t in pack_weights(self.agent.get_weights())]
        msg.header.stamp = self.node.get_clock().now().to_msg()
        for pub in self.pub_weights:      # every robot of a fleet runs the same policy
            pub.publish(msg)
        self.version += 1

    def publish_metrics(self, stats: dict) -> None:
        """To each robot: the stats with its own step count and its share of the pace."""
        with self.lock:
            steps = dict(self.robot_steps)
        total = sum(steps.values())
        stamp = self.node.get_clock().now().to_msg()
        for robot, pub in self.pub_metrics.items():
            values = dict(stats)
            if names.PACE_STEPS_ALLOWED in values:
                values[names.PACE_STEPS_ALLOWED] = float(paced_share(int(values[names.PACE_STEPS_ALLOWED]), total,
                                                                     steps[robot]))
            msg = LearnerMetrics(learner_step=self.agent.critic_updates, env_steps=steps[robot],
                                 names=list(values), values=[float(v) for v in values.values()])
            msg.header.stamp = stamp
            pub.publish(msg)

    # -- the training thread --------------------------------------------------------------------------
    def updates_this_run(self) -> int:
        # relative to where this run started: a learner resumed from a checkpoint (or an offline
        # warm-up) at N updates does not wait for N/utd robot steps before updating again
        return self.agent.critic_updates - self.updates_at_start

    def pace_metrics(self) -> dict:
        with self.lock:
            steps = self.steps_seen
        done = self.updates_this_run()
        return {names.ACHIEVED_UTD: self.schedule.achieved_utd(done, steps),
                names.PACE_STEPS_ALLOWED: float(self.schedule.steps_allowed(done))}

    def train_loop(self) -> None:
        from resfit_ros.learning.agent import train_iteration

        cfg = self.cfg
        log = self.node.get_logger()
        last_scan = 0.0
        last_ckpt = self.agent.critic_updates
        last_pub = self.agent.critic_updates
        t_start, updates_start = time.monotonic(), self.agent.critic_updates
        try:
            while not self.stop.is_set():
                if time.monotonic() - last_scan > cfg.scan_period_s:
                    last_scan = time.monotonic()
                    added = self.ingest.poll(cfg.episodes_dir, demo=False)
                    for path in added:
                        self.log_episode(path)
                    if self.log_skipped() or added:
                        self.publish_status()
                with self.lock:
                    budget = self.schedule.budget(self.steps_seen)
                if self.updates_this_run() + cfg.utd > budget:
                    self.publish_metrics(self.pace_metrics())
                    self.stop.wait(0.01)
                    continue
                if refit_state_statistics_if_due(self.agent, self.buffer, cfg):
                    log.info(f"state statistics refit on {len(self.buffer)} transitions' states "
                             f"(demos + {self.buffer.num_online_transitions} online)")
                    self.publish_weights()
                stats = train_iteration(self.agent, self.buffer, cfg.utd)
                stats.update(self.pace_metrics())
                stats["charts/updates_per_s"] = (self.agent.critic_updates - updates_start) / max(
                    1e-6, time.monotonic() - t_start)
                self.publish_metrics(stats)
                step = self.agent.critic_updates
                if step - last_pub >= cfg.publish_every_updates:
                    self.publish_weights()
                    last_pub = step
                    for k, v in stats.items():
                        self.tb.add_scalar(k, v, step)
                if step - last_ckpt >= cfg.checkpoint_every_updates:
                    self.agent.save_checkpoint(self.ckpt_dir)
                    last_ckpt = step
        except Exception as exc:  # the thread must not die silently: say why and stop the node
            log.fatal(f"training thread failed: {type(exc).__name__}: {exc}")
            self.exit_code = 1
            self.finished = True

    def log_skipped(self) -> bool:
        """Log each refused online episode once (an error unless it was meant to be left out:
        aborted); True if there was a new one."""
        log = self.node.get_logger()
        new = False
        for path, reason in self.ingest.stats["online"].skipped.items():
            if path not in self.skipped_reported:
                self.skipped_reported.add(path)
                new = True
                text = f"episode {Path(path).name} not trained on: {reason}"
                # two call sites: rclpy refuses a second severity from one logging line
                if reason.startswith(EXCLUDED_ABORTED):
                    log.info(text)
                else:
                    log.error(text)
        return new

    def publish_status(self) -> None:
        msg = LearnerStatus(
            resumed_from=str(self.resumed_from or ""), resumed_critic_updates=int(self.resumed_updates),
            refused_checkpoints=list(self.refused_checkpoints),
            demo_transitions=int(self.buffer.num_demo_transitions),
            online_transitions=int(self.buffer.num_online_transitions),
            online_episodes=[h[0] for h in self.ingest.history],
            skipped_episodes=[f"{Path(p).name}: {why}" for p, why in self.ingest.stats["online"].skipped.items()
                              if not why.startswith(EXCLUDED_ABORTED)])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub_status.publish(msg)

    def log_episode(self, path: Path) -> None:
        # this episode's entry (one poll may ingest several: the newest is not necessarily this one)
        name, success, explore, steps, operator = next(
            h for h in reversed(self.ingest.history) if h[0] == episode_name(path, self.cfg.episodes_dir))
        window = [s for (_, s, e, _, _) in self.ingest.history[-20:] if e == explore]
        rate = float(np.mean(window)) if window else 0.0
        kind = "training" if explore else "eval"
        self.tb.add_scalar(f"{names.SUCCESS_RATE}_{kind}", rate, len(self.ingest.history))
        self.tb.add_scalar(names.EPISODE_LENGTH, steps, len(self.ingest.history))
        online = self.ingest.stats["online"]
        share = online.intervention_steps / max(1, online.transitions)
        self.tb.add_scalar(names.INTERVENTION_SHARE, share, len(self.ingest.history))
        self.node.get_logger().info(
            f"ingested {name} ({kind}, {'success' if success else 'failure'}, {steps} steps"
            + (f", {operator} driven by the operator" if operator else "") + "); "
            f"{self.buffer.num_online_transitions} online transitions; recent {kind} success {rate:.2f}"
            + (f"; interventions {share:.1%} of the online steps" if online.intervention_steps else ""))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        if self.agent.critic_updates > 0:
            self.agent.save_checkpoint(self.ckpt_dir)
        self.tb.close()


def main(argv=None) -> int:
    return run(Learner, argv, events=True)
