"""judge: the simulated operator. Starts episodes, labels them from the simulator's success signal
(or as failures at the step limit), resets the scene, and stops after `max_episodes`.

It only uses the operator's public services, so a simulated run exercises exactly the calls a
person makes on the real robot. All service calls are asynchronous: nothing blocks a callback.
"""
from __future__ import annotations

from dataclasses import dataclass

from std_msgs.msg import Bool

from resfit_ros import names
from resfit_ros.msg import EpisodeStatus
from resfit_ros.nodes.common import STREAM, make_node, node_config, run
from resfit_ros.nodes.episode_loop import EpisodeLoop, EpisodeLoopConfig


@dataclass
class JudgeConfig(EpisodeLoopConfig):
    success_topic: str = names.SIM_SUCCESS     # std_msgs/Bool from the simulator


class Judge:
    def __init__(self):
        self.node = make_node("judge")
        self.cfg = node_config(self.node, JudgeConfig)
        self.success_seen = False
        self.exit_code = 0
        self.loop = EpisodeLoop(self.node, self.cfg, "judge", self.verdict, on_episode=self.on_episode)
        self.node.create_subscription(Bool, self.cfg.success_topic, self.on_success, STREAM)

    @property
    def finished(self) -> bool:
        return self.loop.finished

    def on_episode(self, _episode_id: int) -> None:
        self.success_seen = False

    def on_success(self, msg: Bool) -> None:
        if self.loop.running() and msg.data:
            self.success_seen = True

    def verdict(self, status: EpisodeStatus):
        if self.success_seen:
            return True, "simulator success signal"
        if status.steps >= self.cfg.max_steps:
            return False, f"no success within {self.cfg.max_steps} steps"
        return None


def main(argv=None) -> int:
    return run(Judge, argv, events=True)
