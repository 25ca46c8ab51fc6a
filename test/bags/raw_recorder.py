"""A tiny stand-in for `ros2 bag record -o OUT TOPIC...` (not installable here), for tests.

    python -m test.bags.raw_recorder OUT /topic:pkg/msg/Type [...]

Subscribes with raw=True (CDR bytes, no decoding) and writes every message with rosbags into a
plain rosbag2 directory (mcap, metadata.yaml; no project writer). The log time is the receive
time the middleware reports (MessageInfo.received_timestamp, system clock), as rosbag2 records it
without --use-sim-time. Publishers' durability is matched like rosbag2 does for the latched
episode status (transient local). Prints "recording" once subscribed; SIGINT/SIGTERM close the
bag (footer, metadata.yaml) and exit 0.
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading
import time


def main(argv: list[str]) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from rosbags.rosbag2 import StoragePlugin, Writer

    from resfit_ros.bags.types import typestore

    out, specs = argv[0], [a.rsplit(":", 1) for a in argv[1:]]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(f"raw_recorder_{int(time.time() * 1000) % 100000}")
    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    store = typestore()
    deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    lock = threading.Lock()
    for topic, msgtype in specs:
        pkg, _, name = msgtype.split("/")
        cls = getattr(importlib.import_module(f"{pkg}.msg"), name)
        conn = writer.add_connection(topic, msgtype, typestore=store)
        qos = latched if topic == "/resfit/episode_status" else deep

        def on_message(data, info, conn=conn):
            stamp = int(info.get("received_timestamp") or 0) or time.time_ns()
            with lock:
                writer.write(conn, stamp, data)

        node.create_subscription(cls, topic, on_message, qos, raw=True)
    print("recording", flush=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
    finally:
        with lock:
            writer.close()
        node.destroy_node()
        rclpy.shutdown()
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
