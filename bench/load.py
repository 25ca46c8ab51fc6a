"""Load: three 84x84 rgb8 cameras at 30 Hz and joint states at 200 Hz into the REAL synchronizer,
base chunk server and residual policy processes for minutes (bench/control_loop.py's LoopRig).

This process plays the robot: the humanoid's 29 joints split over two JointState topics
(joint_states/body: waist and arms, joint_states/hands) at 200 Hz each, three cameras
(head, left_wrist, right_wrist) at 30 Hz, all stamped with the wall clock when published; a
RUNNING episode and residual weights with one image encoder per camera, so the actor's three-camera
path runs on every 20 Hz control tick. Measured:

  control latency   per tick, to the command's publication (the DDS source timestamp of its last
                    controller group's message, paired with the tick's step record, which follows
                    at once and names the observation): (a) from the observation's stamp (the
                    reference joint state), (b) from the newest input of its synchronised set (the
                    moment the set was complete: the synchronizer cannot emit earlier). Goal p99 <= 10 ms.
  memory            RSS of each node process every 5 s; growth = least-squares slope (MB/min) over the
                    run after the first minute (imports, first allocations), first and last values.
  drops             the synchronizer's /diagnostics counters by reason (ApproximateTime keeps one of
                    the ~10 joint messages per observation: `superseded` is the normal fate of the
                    others), observations published vs control ticks expected, residual node ticks.

    resfit-ros bench load [--minutes 10]
Ends with `load_minutes=<m> control_p99_ms=<(a)> rss_growth_mb=<max over nodes> dropped=<ticks missed>`.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CAMERA_HZ = 30.0
# The cameras' clock runs 100 ppm slow against the joints' (as free-running devices do): over 10
# minutes their frames pass through every phase of the 5 ms joint period a dozen times and of the
# 50 ms control grid once. With one clock, the phase set by when the bench started would fix how
# long each set waits for its camera frame (the `inputs` stage: 0 to 3.3 ms) for the whole run.
CAMERA_CLOCK_DRIFT = 100e-6
JOINT_HZ = 200.0
CONTROL_HZ = 20.0
CAMERAS = ("head", "left_wrist", "right_wrist")


def load_robot_file(work: Path) -> Path:
    """config/robots/g1_sim.yaml with three cameras and the joints split over two topics."""
    import yaml

    from resfit_ros import names
    from resfit_ros.robot import config_dir

    doc = yaml.safe_load((config_dir() / "robots" / "g1_sim.yaml").read_text())
    doc["cameras"] = {c: names.CAMERA_TOPIC.format(name=c) for c in CAMERAS}
    doc["joint_state_topics"] = [f"{names.JOINT_STATES}/body", f"{names.JOINT_STATES}/hands"]
    path = work / "g1_load.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Publisher(threading.Thread):
    """Publishes every topic on its own schedule (absolute deadlines: lateness never accumulates),
    stamped with the wall clock."""

    def __init__(self, rig, realtime_priority: int = 0):
        super().__init__(daemon=True, name="robot")
        self.rig = rig
        self.realtime_priority = realtime_priority
        self.stop_event = threading.Event()
        self.sent = {"joints": 0, "images": 0}
        self.late_ms: list[float] = []

    def run(self) -> None:
        rig = self.rig
        if self.realtime_priority:   # this thread only (Linux: 0 is the calling thread)
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.realtime_priority))
            except PermissionError:
                print(f"warning: cannot set the stand-in robot's realtime priority {self.realtime_priority} "
                      "(needs CAP_SYS_NICE or an rtprio limit): it runs normally scheduled", file=sys.stderr)
        clock = rig.node.get_clock()
        t0 = time.monotonic()
        # name -> (messages by topic, their publishers, period, next deadline)
        streams = {"joints": [rig.joint_messages(), rig.pub_joints, 1.0 / JOINT_HZ, t0],
                   "images": [rig.image_messages(), rig.pub_images,
                              (1.0 + CAMERA_CLOCK_DRIFT) / CAMERA_HZ, t0]}
        while not self.stop_event.is_set():
            now = time.monotonic()
            due = min(s[3] for s in streams.values())
            if now < due:
                time.sleep(min(due - now, 0.002))
                continue
            self.late_ms.append((now - due) * 1e3)
            stamp = clock.now().to_msg()
            for name, stream in streams.items():
                msgs, pubs, period, next_t = stream
                if now < next_t:
                    continue
                for key, msg in msgs.items():
                    msg.header.stamp = stamp
                    pubs[key].publish(msg)
                self.sent[name] += 1
                # fell far behind (machine stalled): do not burst
                stream[3] = next_t + period if now - (next_t + period) <= 0.1 else now + period


def command_times(records: list[tuple[int, int]], cmd_sent: list[int], max_gap_ns: int = 20_000_000) -> np.ndarray:
    """Each tick's command publication (ns): the last command message sent at or before the tick's
    step record (sent right after the command; ticks are 50 ms apart); -1 where there is none
    within max_gap_ns (a lost message: that tick is left out, never paired with an older command)."""
    sent = np.sort(np.asarray(cmd_sent, dtype=np.int64))
    rec = np.array([t for _, t in records], dtype=np.int64)
    idx = np.searchsorted(sent, rec, side="right") - 1
    out = sent[np.maximum(idx, 0)] if len(sent) else np.full(len(rec), -1, dtype=np.int64)
    out[(idx < 0) | (rec - out > max_gap_ns)] = -1
    return out


def print_stages(rig, recs: list[tuple[int, int]], commands: np.ndarray, total_ms: np.ndarray) -> None:
    """Where each tick's latency went, from the DDS source timestamps of the observation and the
    command and the tick's own latency field:
      inputs     stamp -> the newest input of the set (the sync cannot emit before it exists)
      sync       newest input -> observation sent (matching, assembly, serialisation, scheduling)
      hop        observation sent -> the residual node starts its tick (DDS + executor + decode)
      tick       the residual node's tick up to the command (its own clock)
    and which stage grows in the slowest 1 % of ticks; and the latency by position in the base
    chunk (a chunk request at position 0 shares the cores with the next ticks)."""
    rows = []
    for (stamp, _), command, total in zip(recs, commands, total_ms):
        if stamp in rig.obs_sent_by_stamp and stamp in rig.obs_newest_by_stamp and stamp in rig.tick_by_stamp:
            step, tick_s = rig.tick_by_stamp[stamp]
            newest, obs_sent = rig.obs_newest_by_stamp[stamp], rig.obs_sent_by_stamp[stamp]
            inputs = (newest - stamp) / 1e6
            sync = (obs_sent - newest) / 1e6
            rest = (command - obs_sent) / 1e6                                # hop + tick
            rows.append((step, total, inputs, sync, rest - tick_s * 1e3, tick_s * 1e3))
    if not rows:
        print("stages: no tick with all timestamps (observations not watched?)")
        return
    r = np.array(rows)
    names_ = ("inputs", "sync", "hop", "tick")
    print("stages, ms (p50 / p99; mean over the slowest 1 % of ticks):")
    slow = r[:, 1] >= np.percentile(r[:, 1], 99)
    for i, name in enumerate(names_, start=2):
        print(f"  {name:13s} {np.percentile(r[:, i], 50):6.2f} / {np.percentile(r[:, i], 99):6.2f};  "
              f"slowest 1 %: {r[slow, i].mean():6.2f}")
    print(f"  total         {np.percentile(r[:, 1], 50):6.2f} / {np.percentile(r[:, 1], 99):6.2f};  "
          f"slowest 1 %: {r[slow, 1].mean():6.2f}  ({int(slow.sum())} ticks)")
    chunk = 20                                      # the hold base's chunk length (resfit_ros_testing.hold_base)
    phase = r[:, 0].astype(int) % chunk
    worst = sorted(((np.percentile(r[phase == k, 1], 99), k) for k in range(chunk) if (phase == k).sum() > 10),
                   reverse=True)[:3]
    print("  p99 by position in a 20-step chunk, worst three: "
          + ", ".join(f"step {k}: {v:.2f} ms" for v, k in worst))


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    t = np.array([s[0] for s in samples]) / 60.0
    y = np.array([s[1] for s in samples])
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    return float(np.polyfit(t[ok], y[ok], 1)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resfit-ros bench load", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measurement time (default 10)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period (default 5 s)")
    cl = runpy.run_path(str(Path(__file__).with_name("control_loop.py")), run_name="bench_control_loop")
    cl["add_priority_arguments"](parser)
    parser.add_argument("--robot-realtime", type=int, default=0, metavar="PRIO",
                        help="SCHED_FIFO priority of the stand-in robot's publishing thread (default 0: normal). "
                             "Its stamps are taken before it publishes, so when training starves it, the wait "
                             "counts as control latency; a robot's drivers stamp at capture and run on their own")
    args = parser.parse_args(argv)
    if not 0 <= args.robot_realtime <= 99:
        parser.error("--robot-realtime must be in [0, 99]")
    if args.minutes <= 0:
        parser.error("--minutes must be > 0")

    LoopRig, sync_drops = cl["LoopRig"], cl["sync_drops"]
    work = Path(tempfile.mkdtemp(prefix="bench_load_"))
    # a set spans at most one camera period; older than 0.2 s is stale
    rig = LoopRig(load_robot_file(work), work, sync_params=["-p", "slop_s:=0.02", "-p", "max_age_s:=0.2",
                                                            "-p", "queue_size:=20"], control_rate_hz=CONTROL_HZ,
                  watch_observations=True, control_params=cl["priority_params"](args))
    print(f"load bench: {len(CAMERAS)} cameras 84x84 at {CAMERA_HZ:g} Hz + {rig.robot.dof} joints on "
          f"{len(rig.robot.joint_state_topics)} topics at {JOINT_HZ:g} Hz, control {CONTROL_HZ:g} Hz, "
          f"{args.minutes:g} min; load average {os.getloadavg()[0]:.1f}; control path: "
          f"{cl['priority_text'](args)}; stand-in robot: "
          f"{f'realtime_priority {args.robot_realtime}' if args.robot_realtime else 'normal scheduling'}; "
          f"logs in {work}", flush=True)
    rig.start()
    pub = Publisher(rig, args.robot_realtime)
    try:
        rig.start_episode()
        pub.start()
        if not rig.wait_records(20, 90):
            print("error: the control loop did not start; logs in", work, file=sys.stderr)
            return 1
        start_rec = len(rig.records)
        diag0 = {k: dict(v) for k, v in rig.diags.items()}
        t_start = time.monotonic()
        cpu0, own0 = rig.cpu(), time.process_time()
        end = t_start + args.minutes * 60
        rss: dict[str, list[tuple[float, float]]] = {n: [] for n in rig.procs}
        next_sample, next_report, minute_start = t_start, t_start + 60, start_rec
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                for n, mb in rig.rss().items():
                    rss[n].append((now - t_start, mb))
                next_sample += args.sample_s
            if now >= next_report:
                n_ticks = len(rig.records) - start_rec
                # this minute's latency: a disturbance (another VM, a cron job) shows when it happened
                minute = rig.records[minute_start:]
                minute_cmd = command_times(minute, rig.cmd_sent)
                minute_ms = [(c - st) / 1e6 for (st, _), c in zip(minute, minute_cmd) if c >= 0]
                minute_start += len(minute)
                p99 = f"{np.percentile(minute_ms, 99):.2f} ms" if minute_ms else "-"
                print(f"  {(now - t_start) / 60:4.1f} min: {n_ticks} ticks (this minute's p99 {p99}), RSS "
                      + ", ".join(f"{n} {v[-1][1]:.0f} MB" for n, v in rss.items()) + f", load {os.getloadavg()[0]:.1f}",
                      flush=True)
                next_report += 60
            if rig.alive() != list(rig.procs):
                print(f"error: a node died: alive {rig.alive()}; logs in {work}", file=sys.stderr)
                return 1
            rig.spin(0.05)
        seconds = time.monotonic() - t_start
        cpu = {n: (c - cpu0[n]) / seconds * 100 for n, c in rig.cpu().items()}
        cpu["this process (robot + measurements)"] = (time.process_time() - own0) / seconds * 100
        pub.stop_event.set()
        pub.join(timeout=5)
        rig.spin(0.5)

        ticks = rig.records[start_rec:]
        commands_all = command_times(ticks, rig.cmd_sent)
        unpaired = int((commands_all < 0).sum())
        recs = [r for r, c in zip(ticks, commands_all) if c >= 0]
        commands = commands_all[commands_all >= 0]
        stamps = np.array([s for s, _ in recs], dtype=np.int64)
        lat_a = (commands - stamps) / 1e6
        lat_record = np.array([(t - s) / 1e6 for s, t in recs])
        # (b): the step record carries the observation's stamp; that observation names its inputs' stamps
        lat_b = np.array([(c - rig.obs_newest_by_stamp[s]) / 1e6 for (s, _), c in zip(recs, commands)
                          if s in rig.obs_newest_by_stamp])

        expected = int(seconds * CONTROL_HZ)
        sync = rig.diags.get("resfit_ros: synchronizer", {})
        res = rig.diags.get("resfit_ros: residual_policy", {})
        drops = sync_drops(sync)
        drops0 = sync_drops(diag0.get("resfit_ros: synchronizer", {}))
        drops = {k: v - drops0.get(k, 0) for k, v in drops.items()}
        published = int(float(sync.get("published", 0))) - int(float(diag0.get("resfit_ros: synchronizer", {}).get(
            "published", 0)))
        missed = max(0, expected - len(ticks))
        print(f"\n{len(ticks)} control ticks in {seconds / 60:.1f} min (expected {expected}); robot messages sent: "
              f"{pub.sent['joints']} joint-state rounds, {pub.sent['images']} camera rounds "
              f"(publisher late p99 {np.percentile(pub.late_ms, 99):.1f} ms)")
        print(f"commands paired with their step record: {len(recs)} of {len(ticks)} ticks ({unpaired} unpaired)")
        for label, lat in (("stamp -> command", lat_a), ("set complete -> command", lat_b),
                           ("stamp -> step record", lat_record)):
            if len(lat):
                print(f"latency {label}: p50 {np.percentile(lat, 50):.2f} ms  p90 {np.percentile(lat, 90):.2f} ms  "
                      f"p99 {np.percentile(lat, 99):.2f} ms  max {lat.max():.2f} ms")
        print_stages(rig, recs, commands, lat_a)
        print(f"residual node tick: p50 {res.get('tick_latency_p50_ms', '?')} ms, p99 {res.get('tick_latency_p99_ms', '?')} ms"
              f" (last 1000 ticks); stale observations {res.get('stale_observations', '?')}, chunk underruns "
              f"{res.get('chunk_underruns', '?')}")
        print("CPU (% of one core): " + ", ".join(f"{n} {v:.0f}" for n, v in cpu.items()))
        print(f"synchronizer: observation age at emission p50 {float(sync.get('age_p50_s', 'nan')) * 1e3:.1f} ms, "
              f"p99 {float(sync.get('age_p99_s', 'nan')) * 1e3:.1f} ms")
        print(f"synchronizer: published {published} observations; by reason: "
              + (", ".join(f"{k}={v}" for k, v in sorted(drops.items()) if v) or "no drops"))
        growth = {}
        for n, samples in rss.items():
            late = [s for s in samples if s[0] >= min(60.0, seconds / 3)]
            slope = slope_mb_per_min(late)
            growth[n] = slope * (seconds / 60.0)
            half = [s for s in samples if s[0] >= seconds / 2]
            print(f"RSS {n:18s} first {samples[0][1]:7.1f} MB  after warm-up {late[0][1]:7.1f} MB  last "
                  f"{samples[-1][1]:7.1f} MB  slope {slope:+.3f} MB/min, second half {slope_mb_per_min(half):+.3f} "
                  f"MB/min ({len(samples)} samples)")
        worst = max(growth.values())
        print(f"load average {os.getloadavg()[0]:.1f}")
        print(f"load_minutes={seconds / 60:.1f} control_p99_ms={np.percentile(lat_a, 99):.2f} "
              f"rss_growth_mb={worst:.1f} dropped={missed}")
        return 0
    finally:
        pub.stop_event.set()
        rig.stop()


if __name__ == "__main__":
    raise SystemExit(main())
