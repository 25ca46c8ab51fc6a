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
`--robots N` operates a fleet (train_sim robots:=N): the keys act on one robot at a time, the digit
keys 0-9 pick it (robot_0 first); each robot keeps its own mode and take-over.
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
FLEET_HELP = "  [0-9] pick a robot"
STATE_NAMES = {0: "IDLE", 1: "RUNNING", 2: "RESETTING", 3: "ESTOPPED"}
STEPS_EVERY_S = 2.0   # a running episode's step count, at most this often (its status changes 20 times a second)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a service answer")
    parser.add_argument("--eval", action="store_true", help="start evaluation episodes (no exploration)")
    parser.add_argument("--namespace", default="", help="ROS namespace of the graph to operate (its namespace:=, "
                                                        "e.g. robot_a; default: the root)")
    parser.add_argument("--robots", type=int, default=0, help="operate a fleet of this many robots (train_sim "
                        "robots:=N; keys 0-9 pick robot_0 ... ; default: one robot, not a fleet)")


class Station:
    """One robot's side of the console: its services, status, detector score and take-over."""

    def __init__(self, node, robot: str, explore: bool):
        from std_msgs.msg import Bool, Float64
        from std_srvs.srv import SetBool, Trigger

        from resfit_ros import names
        from resfit_ros.msg import EpisodeStatus
        from resfit_ros.nodes.common import LATCHED, STREAM
        from resfit_ros.nodes.success_detector import SCORE_TOPIC
        from resfit_ros.srv import LabelEpisode, StartEpisode

        at = (lambda name: f"{robot}/{name}") if robot else (lambda name: name)
        self.robot, self.explore, self.driving = robot, explore, False
        self.clients = {
            "start": node.create_client(StartEpisode, at(names.START_EPISODE)),
            "label": node.create_client(LabelEpisode, at(names.LABEL_EPISODE)),
            "reset": node.create_client(Trigger, at(names.RESET)),
            "abort": node.create_client(Trigger, at(names.ABORT_EPISODE)),
            "estop": node.create_client(SetBool, at(names.SET_ESTOP)),
        }
        self.status: list[EpisodeStatus] = []
        self.score: list[float] = []        # the success detector's latest, if one runs
        self.shown = {"key": None, "at": 0.0}
        self.take_over = node.create_publisher(Bool, at(names.INTERVENTION_ACTIVE), LATCHED)
        self.selected = lambda: True        # the console prints the status of the robot it operates
        node.create_subscription(Float64, at(SCORE_TOPIC), lambda m: self.score.__setitem__(slice(None), [m.data]),
                                 STREAM)
        node.create_subscription(EpisodeStatus, at(names.EPISODE_STATUS), self.on_status, LATCHED)

    def on_status(self, msg) -> None:
        from resfit_ros.msg import EpisodeStatus

        self.status[:] = [msg]
        if msg.state != EpisodeStatus.RUNNING:
            self.score.clear()              # a score belongs to the episode that is running
        key = (msg.state, msg.episode_id, msg.label, msg.aborted, msg.ready, msg.episodes_completed,
               msg.successes, msg.message)
        now = time.monotonic()
        if key == self.shown["key"] and not (msg.state == EpisodeStatus.RUNNING
                                             and now - self.shown["at"] >= STEPS_EVERY_S):
            return          # only the step count changed: the answers stay readable
        self.shown.update(key=key, at=now)
        if self.selected():
            self.print_status(msg)

    def print_status(self, msg) -> None:
        from resfit_ros.msg import EpisodeStatus

        # "ready" = reset done and no episode since; an episode manager with require_reset starts only then
        state = STATE_NAMES.get(msg.state, msg.state)
        if msg.state == EpisodeStatus.IDLE:
            state = "IDLE (ready)" if msg.ready else "IDLE (not reset)"
        detector = f" | detector {self.score[0]:.2f}" if self.score and msg.state == EpisodeStatus.RUNNING else ""
        who = f"{self.robot} " if self.robot else ""
        print(f"[status] {who}{state} episode {msg.episode_id} steps {msg.steps}{detector} "
              f"| {msg.successes}/{msg.episodes_completed} successes | {msg.message}", flush=True)


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:   # also refuses nan
        print(f"resfit-ros operator: error: --timeout must be > 0, got {args.timeout}", file=sys.stderr)
        return 2
    from resfit_ros.graph import NAMESPACE_ARG, absolute_namespace, arg_problem

    if arg_problem(NAMESPACE_ARG, args.namespace) is not None:
        print(f"resfit-ros operator: error: --namespace {args.namespace!r}: not a ROS namespace", file=sys.stderr)
        return 2
    if not 0 <= args.robots <= 10:
        print(f"resfit-ros operator: error: --robots must be 0-10 (keys 0-9 pick one), got {args.robots}",
              file=sys.stderr)
        return 2
    import rclpy
    from std_msgs.msg import Bool
    from std_srvs.srv import SetBool, Trigger

    from resfit_ros.msg import EpisodeStatus
    from resfit_ros.srv import LabelEpisode, StartEpisode

    rclpy.init()
    # in the graph's namespace, the node-relative names are the graph's services and status
    node = rclpy.create_node("operator_console", namespace=absolute_namespace(args.namespace) or "/")
    robots = [f"robot_{i}" for i in range(args.robots)] if args.robots else [""]
    stations = [Station(node, robot, explore=not args.eval) for robot in robots]
    here = {"station": stations[0]}
    for station in stations:
        station.selected = lambda station=station: here["station"] is station

    def call(name: str, request) -> None:
        client = here["station"].clients[name]
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
    help_text = HELP + (FLEET_HELP if args.robots else "")
    print(help_text if node.get_namespace() == "/" else f"{help_text}  (namespace {node.get_namespace()})", flush=True)
    if args.robots:
        print(f"[robot] robot_0 of {args.robots}", flush=True)
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
            station = here["station"]
            if key == " ":
                call("start", StartEpisode.Request(explore=station.explore, note="operator"))
            elif key in "sf":
                call("label", LabelEpisode.Request(success=key == "s", note="operator"))
            elif key == "r":
                call("reset", Trigger.Request())
            elif key == "a":
                call("abort", Trigger.Request())
            elif key == "e":
                engaged = bool(station.status) and station.status[0].state == EpisodeStatus.ESTOPPED
                call("estop", SetBool.Request(data=not engaged))
            elif key == "i":
                station.driving = not station.driving
                station.take_over.publish(Bool(data=station.driving))
                print("[intervention] you drive: the robot follows resfit/intervention/target" if station.driving else
                      "[intervention] handed back to the policy", flush=True)
            elif key == "t":
                station.explore = not station.explore
                print(f"[mode] {'training' if station.explore else 'evaluation'} episodes", flush=True)
            elif key.isdigit() and args.robots:
                if int(key) >= args.robots:
                    print(f"[robot] no robot_{key}: the fleet has robot_0 ... robot_{args.robots - 1}", flush=True)
                    continue
                here["station"] = stations[int(key)]
                print(f"[robot] robot_{key} of {args.robots}", flush=True)
                if here["station"].status:
                    here["station"].print_status(here["station"].status[0])
            elif key == "q":
                break
            elif key in "\r\n":
                continue
            else:
                print(f"unknown key {key!r}; {HELP}", flush=True)
        for station in stations:            # never leave a robot to a device nobody watches
            if station.driving:
                station.take_over.publish(Bool(data=False))
                print(f"[intervention] {station.robot or 'the robot'} handed back to the policy", flush=True)
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
