"""A fleet of simulated robots feeding one learner: env steps per minute for N = 1, 2, 4 robots.

For each N, train_sim with robots:=N (the main job's demos and base, its 120-step episodes) runs
for --minutes; the warm-up is shortened (--warmup-steps random-residual steps, as many critic-only
updates) so the window measured is the training phase, where every robot waits for the learner's
update schedule (UTD of config/sim.yaml). Measured over the window after --settle minutes:
env steps and episodes per minute (from the episode store), the learner's updates per second (its
checkpoint counter) and where the CPU goes (seconds of CPU per node type, from /proc).

    resfit-ros bench fleet [--robots 1 2 4] [--minutes 6] [--settle 2] [--json FILE]
Ends with one line per N: `robots=<N> env_steps_per_min=... episodes_per_min=... updates_per_s=...`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_time import cpu_seconds, node_pids  # noqa: E402


def store_steps(store: Path) -> tuple[int, int]:
    """(env steps, episodes) of the labelled episodes in the store so far."""
    from resfit_ros.jobs.main_job import _episodes

    eps = _episodes(store)
    return sum(n for *_, n in eps), len(eps)


def learner_updates(metrics: list) -> int:
    return max((m.learner_step for m in metrics), default=0)


def measure(n: int, args, demos: Path, base: Path, config: Path, work: Path) -> dict:
    import rclpy

    from resfit_ros import names
    from resfit_ros.graph import GRAPHS
    from resfit_ros.msg import LearnerMetrics
    from resfit_ros.nodes.common import STREAM
    from resfit_ros.runner import GraphRunner

    out = work / f"robots{n}"
    domain = random.SystemRandom().randint(1, 100)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    log = open(work / f"robots{n}.log", "w")
    runner = GraphRunner(GRAPHS["train_sim"], {
        "base_artifact": str(base), "demos_dir": str(demos), "output_dir": str(out), "config": str(config),
        "max_steps": "120", "robots": str(n)}, env=dict(os.environ), output=log, pid_dir=out / "pids")
    rclpy.init()
    node = rclpy.create_node("fleet_bench")
    metrics: list = []
    node.create_subscription(LearnerMetrics, names.resolve(names.LEARNER_METRICS, "robot_0" if n > 1 else ""),
                             metrics.append, STREAM)
    runner.start()
    t0 = time.monotonic()
    load = []

    def spin_until(t_end: float) -> None:
        while time.monotonic() < t_end and runner.poll():
            rclpy.spin_once(node, timeout_sec=0.2)
            load.append(os.getloadavg()[0])

    try:
        spin_until(t0 + args.settle * 60)
        start_steps, start_eps = store_steps(out / "episodes")
        start_updates, start_t = learner_updates(metrics), time.monotonic()
        cpu0 = {k: cpu_seconds(p) for k, p in node_pids(out / "pids").items()}
        spin_until(t0 + args.minutes * 60)
        cpu = {k: (cpu_seconds(p) or 0.0) - (cpu0.get(k) or 0.0) for k, p in node_pids(out / "pids").items()}
        window = (time.monotonic() - start_t) / 60
        steps, eps = store_steps(out / "episodes")
        updates = learner_updates(metrics)
        alive = runner.poll()
    finally:
        runner.shutdown()
        log.close()
        node.destroy_node()
        rclpy.shutdown()
    by_type: dict[str, float] = defaultdict(float)
    for key, seconds in cpu.items():
        by_type[key.split(".")[-1]] += seconds
    total_cpu = sum(by_type.values())
    return {"robots": n, "window_min": round(window, 2), "graph_alive": alive,
            "env_steps_per_min": (steps - start_steps) / window, "episodes_per_min": (eps - start_eps) / window,
            "updates_per_s": (updates - start_updates) / (window * 60), "load_average": sum(load) / max(1, len(load)),
            "cpu_share": {k: round(v / total_cpu, 3) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
            "cpu_cores_used": total_cpu / (window * 60)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--robots", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--minutes", type=float, default=6.0, help="run length per fleet size")
    p.add_argument("--settle", type=float, default=2.0, help="minutes before the window (start-up, warm-up)")
    p.add_argument("--warmup-steps", type=int, default=600, help="random-residual steps and critic-only updates")
    p.add_argument("--data", default="outputs/main_job_data", help="the main job's demos30/ and base (made by main-job)")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    data = Path(args.data)
    demos, base = data / "demos30", data / "base_d5_s2000.safetensors"
    if not base.is_file():
        print(f"error: no main-job data in {data} (run `resfit-ros main-job` once)", file=sys.stderr)
        return 2
    from resfit_ros.robot import config_dir

    work = Path(tempfile.mkdtemp(prefix="fleet_bench_"))
    config = yaml.safe_load((config_dir() / "sim.yaml").read_text())
    config["/**/learner"]["ros__parameters"].update(random_warmup_steps=args.warmup_steps,
                                                    critic_warmup_updates=args.warmup_steps)
    (work / "sim.yaml").write_text(yaml.safe_dump(config))
    print(f"bench fleet: robots {args.robots}, {args.minutes:g} min each (window after {args.settle:g} min), "
          f"load average {os.getloadavg()[0]:.1f}; logs in {work}", flush=True)
    results = []
    for n in args.robots:
        r = measure(n, args, demos, base, work / "sim.yaml", work)
        results.append(r)
        print(f"robots={n} env_steps_per_min={r['env_steps_per_min']:.0f} episodes_per_min={r['episodes_per_min']:.1f} "
              f"updates_per_s={r['updates_per_s']:.1f} cpu_cores_used={r['cpu_cores_used']:.2f} "
              f"load={r['load_average']:.1f} graph_alive={r['graph_alive']}", flush=True)
        print("  cpu share: " + ", ".join(f"{k} {v:.0%}" for k, v in r["cpu_share"].items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
