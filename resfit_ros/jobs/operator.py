"""`resfit-ros operator`: a keyboard console for the person next to the robot.

    space  start an episode (training; `t` toggles training/evaluation)
    s / f  label the running episode success / failure
    r      reset (robot home; scene reset in simulation)
    a      abort the running episode (no label, excluded from training)
    e      e-stop on/off
    i      take over / hand back (interventions: the residual policy then sends the joint targets of
           resfit/intervention/target, e.g. from a teleoperation device, through its safety layer)
    q      quit

Each key is one call of the episode manager's services; the answer (accepted or the reason it was
refused) and every status change are printed; while an episode runs its step count every few
seconds (the manager publishes a status at every step), with the success detector's score when one
runs (use_detector:=true: label the episodes it is unsure of). Single keys from a terminal (raw mode);
from a pipe it reads characters, so the console can be scripted and tested. `--namespace robot_a`
talks to the graph started with `namespace:=robot_a` (the services and the status are node-relative).
"""
from __future__ import annotations

import argparse
import os
import select
import sys
import termios
import time
import tty

HELP = ("keys: [space] start  [s] success  [f] failure  [r] reset  [a] abort  [e] e-stop  [i] take over/hand back  "
        "[t] train/eval  [q] quit")
STATE_NAMES = {0: "IDLE", 1: "RUNNING", 2: "RESETTING", 3: "ESTOPPED"}
STEPS_EVERY_S = 2.0   # a running episode's step count, at most this often (its status changes 20 times a second)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a service answer")
    parser.add_argument("--eval", action="store_true", help="start evaluation episodes (no exploration)")
    parser.add_argument("--namespace", default="", help="ROS namespace of the graph to operate (its namespace:=, "
                                                        "e.g. robot_a; default: the root)")


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:   # also refuses nan
        print(f"resfit-ros operator: error: --timeout must be > 0, got {args.timeout}", file=sys.stderr)
        return 2
    from resfit_ros.graph import NAMESPACE_ARG, absolute_namespace, arg_problem

    if arg_problem(NAMESPACE_ARG, args.namespace) is not None:
        print(f"resfit-ros operator: error: --namespace {args.namespace!r}: not a ROS namespace", file=sys.stderr)
        return 2
    import rclpy
    from std_msgs.msg import Bool, Float64
    from std_srvs.srv import SetBool, Trigger

    from resfit_ros import names
    from resfit_ros.msg import EpisodeStatus
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.nodes.success_detector import SCORE_TOPIC
    from resfit_ros.srv import LabelEpisode, StartEpisode

    rclpy.init()
    # in the graph's namespace, the node-relative names are the graph's services and status
    node = rclpy.create_node("operator_console", namespace=absolute_namespace(args.namespace) or "/")
    clients = {
        "start": node.create_client(StartEpisode, names.START_EPISODE),
        "label": node.create_client(LabelEpisode, names.LABEL_EPISODE),
        "reset": node.create_client(Trigger, names.RESET),
        "abort": node.create_client(Trigger, names.ABORT_EPISODE),
        "estop": node.create_client(SetBool, names.SET_ESTOP),
    }
    status: list[EpisodeStatus] = []
    shown = {"key": None, "at": 0.0}
    score: list[float] = []                 # the success detector's latest, if one runs
    take_over = node.create_publisher(Bool, names.INTERVENTION_ACTIVE, LATCHED)
    driving = False
    node.create_subscription(Float64, SCORE_TOPIC, lambda m: score.__setitem__(slice(None), [m.data]), STREAM)

    def on_status(msg: EpisodeStatus) -> None:
        status[:] = [msg]
        if msg.state != EpisodeStatus.RUNNING:
            score.clear()                   # a score belongs to the episode that is running
        key = (msg.state, msg.episode_id, msg.label, msg.aborted, msg.ready, msg.episodes_completed,
               msg.successes, msg.message)
        now = time.monotonic()
        if key == shown["key"] and not (msg.state == EpisodeStatus.RUNNING and now - shown["at"] >= STEPS_EVERY_S):
            return          # only the step count changed: the answers stay readable
        shown.update(key=key, at=now)
        # "ready" = reset done and no episode since; an episode manager with require_reset starts only then
        state = STATE_NAMES.get(msg.state, msg.state)
        if msg.state == EpisodeStatus.IDLE:
            state = "IDLE (ready)" if msg.ready else "IDLE (not reset)"
        detector = f" | detector {score[0]:.2f}" if score and msg.state == EpisodeStatus.RUNNING else ""
        print(f"[status] {state} episode {msg.episode_id} steps {msg.steps}{detector} "
              f"| {msg.successes}/{msg.episodes_completed} successes | {msg.message}", flush=True)

    node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, on_status, LATCHED)
    explore = not args.eval

    def call(name: str, request) -> None:
        client = clients[name]
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(f"[{name}] service {client.srv_name} not available (is the episode manager running?)", flush=True)
            return
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done():
            print(f"[{name}] no answer within {args.timeout} s", flush=True)
            return
        r = future.result()
        ok = getattr(r, "success", getattr(r, "accepted", False))
        print(f"[{name}] {'OK' if ok else 'REFUSED'}: {r.message}", flush=True)

    interactive = sys.stdin.isatty()
    old = termios.tcgetattr(sys.stdin) if interactive else None
    print(HELP if node.get_namespace() == "/" else f"{HELP}  (namespace {node.get_namespace()})", flush=True)
    try:
        if interactive:
            tty.setcbreak(sys.stdin.fileno())
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.05)
            ready, _, _ = select.select([sys.stdin], [], [], 0.05)
            if not ready:
                continue
            key = os.read(sys.stdin.fileno(), 1).decode(errors="ignore")
            if key == "":  # end of input (pipe closed)
                break
            if key == " ":
                call("start", StartEpisode.Request(explore=explore, note="operator"))
            elif key in "sf":
                call("label", LabelEpisode.Request(success=key == "s", note="operator"))
            elif key == "r":
                call("reset", Trigger.Request())
            elif key == "a":
                call("abort", Trigger.Request())
            elif key == "e":
                engaged = bool(status) and status[0].state == EpisodeStatus.ESTOPPED
                call("estop", SetBool.Request(data=not engaged))
            elif key == "i":
                driving = not driving
                take_over.publish(Bool(data=driving))
                print("[intervention] you drive: the robot follows resfit/intervention/target" if driving else
                      "[intervention] handed back to the policy", flush=True)
            elif key == "t":
                explore = not explore
                print(f"[mode] {'training' if explore else 'evaluation'} episodes", flush=True)
            elif key == "q":
                break
            elif key in "\r\n":
                continue
            else:
                print(f"unknown key {key!r}; {HELP}", flush=True)
        if driving:                         # never leave the robot to a device nobody watches
            take_over.publish(Bool(data=False))
            print("[intervention] handed back to the policy", flush=True)
        # let the last status arrive before leaving
        for _ in range(10):
            rclpy.spin_once(node, timeout_sec=0.02)
    finally:
        if old is not None:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
