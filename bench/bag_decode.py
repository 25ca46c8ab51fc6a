"""Episode-bag reading, side by side: the hand-written readers vs the rosbags library, on ONE thread.

Writes `--episodes` synthetic online episodes of `--steps` steps with resfit_ros.bags.EpisodeWriter
(bench/ingest.py's write_episodes: 29 joints, 9 task-state values, raw input topics too), once
state-only and once with one 84x84 camera, then reads the topics an Episode is built from
(/resfit/observation, /resfit/step, /resfit/episode_status) of every bag down to the numpy arrays
of read_episode, two ways:
  (a) project: resfit_ros.bags.read_episode (mcap_scan.read_mcap + cdr_fast batch decoding);
  (b) rosbags: rosbags.rosbag2.Reader + the typestore's deserialize_cdr (msg/*.msg registered by
      resfit_ros.bags.types) + np.stack into the same arrays (asserted equal to (a)'s);
the scan alone (raw CDR bytes of those topics): (a) read_mcap, (b) rosbags' Reader, (c) the
`mcap` library's reader if it is installed; and the decode alone (the Observation and StepRecord
bytes of a bag to arrays): (a) cdr_fast's batch decoders, (b) deserialize_cdr per message + stack
(cdr_fast.rosbags_*, asserted equal). CPU time (time.process_time) and wall are
reported, best of --repeat; messages = the episode topics' messages read, transitions = steps.

    python bench/bag_decode.py [--episodes 20] [--steps 100] [--repeat 3]
    resfit-ros bench bag-decode --episodes 20

The last line is `bag_decode_speedup=<(a) / (b) messages/s, image case, full read, CPU time>`.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
_spec = importlib.util.spec_from_file_location("resfit_bench_ingest", Path(__file__).resolve().parent / "ingest.py")
_ingest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ingest)
write_episodes = _ingest.write_episodes

# Episode fields compared between the two paths (every array read_episode builds).
FIELDS = ("obs_stamp_ns", "obs_sequence", "position", "velocity", "extra", "step", "step_stamp_ns",
          "step_obs_index", "next_obs_index", "base_action", "residual", "command", "exploration",
          "weights_version", "safety_flags", "latency")


def _topics():
    from resfit_ros.bags import EPISODE_TOPICS

    return EPISODE_TOPICS


def read_project(path: Path) -> dict:
    """(a): the project's reader, down to the arrays."""
    from resfit_ros.bags import read_episode

    ep = read_episode(path)
    out = {f: getattr(ep, f) for f in FIELDS}
    out.update(label=ep.label, aborted=ep.aborted, joint_names=ep.joint_names, extra_names=ep.extra_names,
               **{f"images.{c}": v for c, v in ep.images.items()})
    return out


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def read_rosbags(path: Path) -> dict:
    """(b): rosbags' Reader + deserializer, down to the same arrays (as read_episode assembles them)."""
    from rosbags.rosbag2 import Reader

    from resfit_ros.bags import convert, typestore
    from resfit_ros.bags import types as t

    store, topics = typestore(), _topics()
    msgs: dict[str, list] = {tp: [] for tp in topics}
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, _, data in reader.messages(connections=conns):
            msgs[conn.topic].append(store.deserialize_cdr(data, conn.msgtype))
    obs, steps = msgs[t.TOPIC_OBSERVATION], msgs[t.TOPIC_STEP_RECORD]
    final = [s for s in msgs[t.TOPIC_EPISODE_STATUS]
             if s.state != convert.STATE_RUNNING and (s.label != convert.LABEL_NONE or s.aborted)][-1]
    label = None if final.aborted else {convert.LABEL_SUCCESS: "success", convert.LABEL_FAILURE: "failure"}.get(final.label)
    seq = np.array([m.sequence for m in obs], dtype=np.int64)
    order = np.argsort(seq, kind="stable")
    obs = [obs[i] for i in order]
    seq = seq[order]
    out = {"obs_stamp_ns": np.array([_stamp(m) for m in obs], dtype=np.int64), "obs_sequence": seq,
           "position": np.stack([m.position for m in obs]), "velocity": np.stack([m.velocity for m in obs]),
           "extra": np.stack([m.extra for m in obs])}
    for i, cam in enumerate(obs[0].camera_names):
        im = obs[0].images[i]
        data = np.stack([m.images[i].data for m in obs])
        out[f"images.{cam}"] = convert.image_to_rgb(data, im.height, im.width, im.encoding, im.step)
    steps = sorted((m for m in steps if not (label is not None and final.steps > 0) or m.step < final.steps),
                   key=lambda m: m.step)
    oseq = np.array([m.observation_sequence for m in steps], dtype=np.int64)
    idx = np.minimum(np.searchsorted(seq, oseq), len(seq) - 1)
    step_obs = np.where(seq[idx] == oseq, idx, -1)
    nxt = np.full(len(steps), -1, dtype=np.int64)
    nxt[:-1] = step_obs[1:]
    last = np.searchsorted(seq, oseq[-1], side="right")
    nxt[-1] = last if last < len(seq) else -1
    out.update(
        step=np.array([m.step for m in steps], dtype=np.int64),
        step_stamp_ns=np.array([_stamp(m) for m in steps], dtype=np.int64), step_obs_index=step_obs,
        next_obs_index=nxt, base_action=np.stack([m.base_action for m in steps]),
        residual=np.stack([m.residual for m in steps]), command=np.stack([m.command for m in steps]),
        exploration=np.array([m.exploration for m in steps], dtype=bool),
        weights_version=np.array([m.weights_version for m in steps], dtype=np.uint64),
        safety_flags=np.array([m.safety_flags for m in steps], dtype=np.uint32),
        latency=np.array([m.latency for m in steps], dtype=np.float64),
        label=label, aborted=bool(final.aborted), joint_names=list(obs[0].joint_names),
        extra_names=list(obs[0].extra_names))
    return out


def scan_project(path: Path) -> int:
    from resfit_ros.bags.mcap_scan import read_mcap

    topics = set(_topics())
    return sum(len(v) for f in path.glob("*.mcap") for v in read_mcap(f, topics).messages.values())


def scan_rosbags(path: Path) -> int:
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic in _topics()]
        return sum(1 for _ in reader.messages(connections=conns))


def scan_mcap_lib(path: Path) -> int:
    from mcap.reader import make_reader

    n = 0
    for f in path.glob("*.mcap"):
        with open(f, "rb") as fh:
            n += sum(len(m.data) >= 0 for _, _, m in make_reader(fh).iter_messages(topics=list(_topics())))
    return n


def raw_batches(path: Path) -> tuple[list, list]:
    """The Observation and StepRecord CDR bytes of one bag (read_mcap), for the decode-only part."""
    from resfit_ros.bags import types as t
    from resfit_ros.bags.mcap_scan import read_mcap

    msgs = read_mcap(next(path.glob("*.mcap")), {t.TOPIC_OBSERVATION, t.TOPIC_STEP_RECORD}).messages
    return [d for _, d in msgs[t.TOPIC_OBSERVATION]], [d for _, d in msgs[t.TOPIC_STEP_RECORD]]


def decode_project(raw: tuple[list, list]) -> tuple:
    from resfit_ros.bags.cdr_fast import decode_observations, decode_step_records

    return decode_observations(raw[0]), decode_step_records(raw[1])


def decode_rosbags(raw: tuple[list, list]) -> tuple:
    """deserialize_cdr per message, stacked into the same Batch arrays (cdr_fast's reference decoder)."""
    from resfit_ros.bags.cdr_fast import rosbags_observations, rosbags_step_records

    return rosbags_observations(raw[0]), rosbags_step_records(raw[1])


def check_same(a: dict, b: dict, where: Path) -> None:
    assert a.keys() == b.keys(), (where, sorted(a.keys() ^ b.keys()))
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (where, k, a[k].dtype, b[k].dtype)
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{where}: {k}")
        else:
            assert a[k] == b[k], (where, k, a[k], b[k])


def timed(fn, bags: list[Path], repeat: int) -> tuple[float, float]:
    """(cpu s, wall s) of fn over every bag, best of `repeat` by CPU time."""
    best = None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        for b in bags:
            fn(b)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        best = (cpu, wall) if best is None or cpu < best[0] else best
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/bag_decode.py", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20, help="episodes per case (default 20)")
    parser.add_argument("--steps", type=int, default=100, help="steps per episode (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per path; the best counts (default 3)")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.steps < 1 or args.repeat < 1:
        print("bench/bag_decode.py: error: --episodes, --steps and --repeat must be >= 1", file=sys.stderr)
        return 2
    try:
        import mcap  # noqa: F401
        have_mcap = True
    except ImportError:
        have_mcap = False
    print(f"bag decode bench: {args.episodes} episodes x {args.steps} steps, 1 thread, "
          f"load average {os.getloadavg()[0]:.2f}")
    speedup = 0.0
    with tempfile.TemporaryDirectory(prefix="resfit_bag_decode_") as tmp:
        for name, cameras in (("state", ()), ("1cam84", ("head",))):
            root = Path(tmp) / name
            write_episodes(root, args.episodes, args.steps, cameras)
            bags = sorted(p for p in root.iterdir() if p.is_dir())
            n_msgs = sum(scan_project(b) for b in bags)          # also warms caches
            n_trans = args.episodes * args.steps
            for b in bags:                                       # equal work: identical arrays
                check_same(read_project(b), read_rosbags(b), b)
            assert sum(scan_rosbags(b) for b in bags) == n_msgs
            raws = [raw_batches(b) for b in bags]
            for b, raw in zip(bags, raws):
                for x, y in zip(decode_project(raw), decode_rosbags(raw)):
                    check_same({"meta": x.meta, **x.fields}, {"meta": y.meta, **y.fields}, b)
            mib = sum(f.stat().st_size for f in root.rglob("*.mcap")) / 2**20
            print(f"{name}: {len(bags)} bags, {mib:.1f} MiB, {n_msgs} episode-topic messages, "
                  f"{n_trans} transitions; (a) and (b) arrays identical")
            paths = [("read", "project", read_project), ("read", "rosbags", read_rosbags),
                     ("scan", "project", scan_project), ("scan", "rosbags", scan_rosbags),
                     ("decode", "project", decode_project), ("decode", "rosbags", decode_rosbags)]
            if have_mcap:
                paths.append(("scan", "mcap lib", scan_mcap_lib))
            rates: dict[tuple[str, str], float] = {}
            n_decoded = sum(len(o) + len(s) for o, s in raws)  # no EpisodeStatus in the decode part
            for part, who, fn in paths:
                cpu, wall = timed(fn, raws if part == "decode" else bags, args.repeat)
                n = n_decoded if part == "decode" else n_msgs
                rates[part, who] = n / cpu
                print(f"  {part:6s} {who:8s} cpu {cpu * 1e3:6.1f} ms = {n / cpu:8,.0f} msg/s "
                      f"{n_trans / cpu:8,.0f} transitions/s | wall {wall * 1e3:6.1f} ms = {n / wall:8,.0f} msg/s")
            for part in ("read", "scan", "decode"):
                print(f"  {part}: project / rosbags = {rates[part, 'project'] / rates[part, 'rosbags']:.1f}x (CPU)"
                      + (f", project / mcap lib = {rates[part, 'project'] / rates[part, 'mcap lib']:.1f}x"
                         if (part, "mcap lib") in rates else ""))
            if not have_mcap:
                print("  scan mcap lib: not installed (skipped)")
            speedup = rates["read", "project"] / rates["read", "rosbags"]
    print(f"bag_decode_speedup={speedup:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
