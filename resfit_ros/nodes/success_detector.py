"""success_detector: episodes labelled by a learned detector instead of a person (or the simulator).

Scores every observation of a running episode with the detector trained by `resfit-ros
train-detector` (learning/detector.py) and labels the episode when the rule says SUCCESS, or
FAILURE at the step limit, through the operator's services (nodes/episode_loop.py, the judge's
loop). On the robot (`start_episodes: false`, train_real's use_detector:=true) a person resets and
starts each episode; in simulation (train_sim) it also starts and resets them. When the rule is
unsure (ASK_OPERATOR) it labels nothing: it logs one line asking the operator, who labels from the
console (`resfit-ros operator`), and goes on scoring. Every score is published on `score_topic`
(std_msgs/Float64) for the operator console.
"""
from __future__ import annotations

from dataclasses import dataclass

from std_msgs.msg import Float64

from resfit_ros import names
from resfit_ros.config import ConfigError, require
from resfit_ros.msg import EpisodeStatus, Observation
from resfit_ros.nodes.common import STREAM, make_node, node_config, run
from resfit_ros.nodes.convert import ObservationError, msg_to_observation
from resfit_ros.nodes.episode_loop import EpisodeLoop, EpisodeLoopConfig

SCORE_TOPIC = "resfit/success_detector/score"   # std_msgs/Float64: P(success) of the latest observation


@dataclass
class SuccessDetectorConfig(EpisodeLoopConfig):
    detector: str = ""             # detector file (.safetensors from `resfit-ros train-detector`)
    success_threshold: float = 0.0  # SUCCESS when the score stays above this; 0 = the detector file's
    ask_threshold: float = 0.0     # ask the operator when it stays >= this but not surely above; 0 = the file's
    consecutive: int = 0           # steps in a row the score must stay so for either; 0 = the file's
    score_topic: str = SCORE_TOPIC  # where every score is published (std_msgs/Float64)

    def __post_init__(self):
        super().__post_init__()
        require(self.detector not in ("", "none"),
                "detector must name the success detector file (resfit-ros train-detector)")
        require(0.0 <= self.success_threshold < 1.0, f"success_threshold must be in [0, 1), got {self.success_threshold}")
        require(0.0 <= self.ask_threshold < 1.0, f"ask_threshold must be in [0, 1), got {self.ask_threshold}")
        require(self.consecutive >= 0, f"consecutive must be >= 0, got {self.consecutive}")
        require(bool(self.score_topic), "score_topic must not be empty")


class SuccessDetectorNode:
    def __init__(self):
        self.node = make_node("success_detector")
        self.cfg = cfg = node_config(self.node, SuccessDetectorConfig)
        import torch

        from resfit_ros.learning.detector import DecisionRule, DetectorLoadError, load_detector

        torch.set_num_threads(1)   # a tiny MLP per step: leave the cores to the policy and the learner
        try:
            self.detector = load_detector(cfg.detector)
            file_rule = self.detector.rule
            self.rule = DecisionRule(cfg.success_threshold or file_rule.success_threshold,
                                     cfg.ask_threshold or file_rule.ask_threshold,
                                     cfg.consecutive or file_rule.consecutive)
        except DetectorLoadError as exc:
            raise ConfigError(f"cannot load the success detector: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"thresholds (given or from {cfg.detector}): {exc}") from None
        self.scores: list[float] = []    # of the running episode
        self.asked = False               # the operator was asked about this episode
        self.exit_code = 0
        self.score_pub = self.node.create_publisher(Float64, cfg.score_topic, STREAM)
        # rejected/<reason> on /diagnostics: status_invalid, observation_* (malformed or not the detector's state)
        self.loop = EpisodeLoop(self.node, cfg, "success_detector", self.verdict, on_episode=self.on_episode,
                                diagnostics=lambda: {"scored": len(self.scores)})
        self.node.create_subscription(Observation, names.OBSERVATION, self.on_observation, STREAM)
        r = self.rule
        self.node.get_logger().info(
            f"success detector {cfg.detector}: {self.detector.config.state_dim} state values, success when "
            f"score > {r.success_threshold:g} for {r.consecutive} steps, ask the operator at >= "
            f"{r.ask_threshold:g}, failure at {cfg.max_steps} steps")

    @property
    def finished(self) -> bool:
        return self.loop.finished

    def on_episode(self, _episode_id: int) -> None:
        self.scores, self.asked = [], False

    def on_observation(self, msg: Observation) -> None:
        if not self.loop.running():
            return   # between episodes (homing, reset): nothing to judge
        try:
            score = self.detector.score(msg_to_observation(msg))
        except ObservationError as exc:
            return self.loop.rejections.reject(f"observation_{exc.reason}", f"observation: {exc}")
        except ValueError as exc:   # another robot or task state than the detector was trained on
            return self.loop.rejections.reject("observation_state", f"observation: {exc}")
        self.scores.append(score)
        self.score_pub.publish(Float64(data=score))

    def verdict(self, status: EpisodeStatus):
        from resfit_ros.learning.detector import Decision, decide

        recent = self.scores[-self.rule.consecutive:]
        decision = decide(recent, status.steps, self.cfg.max_steps, self.rule)
        if decision is Decision.ASK_OPERATOR and not self.asked:
            self.asked = True
            self.node.get_logger().warning(
                f"episode {status.episode_id} step {status.steps}: unsure whether it succeeded (scores "
                f"{', '.join(f'{x:.2f}' for x in recent)}: >= {self.rule.ask_threshold:g}, not all above "
                f"{self.rule.success_threshold:g}); operator, please label it (resfit-ros operator)")
        if decision is Decision.SUCCESS:
            return True, f"score > {self.rule.success_threshold:g} for {self.rule.consecutive} steps"
        if decision is Decision.FAILURE:
            return False, f"no success within {self.cfg.max_steps} steps"
        return None


def main(argv=None) -> int:
    return run(SuccessDetectorNode, argv, events=True)
