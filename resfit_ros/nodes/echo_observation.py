"""echo_observation: relays resfit_ros/Observation from ~/in to ~/out and counts them.

A diagnostic tool (is the observation stream alive, what rate?) and the smallest real node the
runner and DDS tests use. Parameters: none required.
"""
from __future__ import annotations

from resfit_ros.msg import Observation
from resfit_ros.nodes.common import STREAM, make_node, run


class EchoObservation:
    def __init__(self):
        self.node = make_node("echo_observation")
        self.count = 0
        self.pub = self.node.create_publisher(Observation, "~/out", STREAM)
        self.node.create_subscription(Observation, "~/in", self.on_observation, STREAM)
        self.node.get_logger().info("relaying ~/in -> ~/out")

    def on_observation(self, msg: Observation) -> None:
        self.count += 1
        self.pub.publish(msg)


def main(argv=None) -> int:
    return run(EchoObservation, argv)
