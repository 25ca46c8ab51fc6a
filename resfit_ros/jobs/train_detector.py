"""`resfit-ros train-detector`: train the success detector from hand-labelled episode bags.

    resfit-ros train-detector --episodes data/demos/pick_lift data/episodes --out data/detector.safetensors \
        --png data/detector_scores.png

Reads every loadable episode under each --episodes directory (bad ones are listed and skipped;
aborted ones carry no label and are not used), holds out --holdout-fraction of each class's
episodes, trains the classifier (resfit_ros/learning/detector.py) and writes:
  <out>.safetensors        weights, normaliser, state names, thresholds, training report (no pickle)
  <out stem>_report.json   the same training report, readable
  --png FILE               the detector's score over time on a few held-out episodes
and prints held-out precision/recall, the confusion table and the rule's per-episode accuracy.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from resfit_ros.jobs.sim_episodes import ArgumentError, fail, positive_int

VERB = "train-detector"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", required=True, nargs="+", metavar="DIR",
                        help="directories of labelled episode bags (successes and failures)")
    parser.add_argument("--out", required=True, help="detector file to write (.safetensors)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2,
                        help="share of each class's episodes held out for the report (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, initialisation and batches (default 0)")
    parser.add_argument("--steps", type=positive_int, default=2000, help="gradient steps (default 2000)")
    parser.add_argument("--png", default=None, help="plot the score of a few held-out episodes to this PNG")
    parser.add_argument("--positives-last", type=positive_int, default=3,
                        help="K: the last K observations of a successful episode are positives (default 3)")
    parser.add_argument("--margin", type=positive_int, default=10,
                        help="a successful episode's observations before its last MARGIN are negatives (default 10)")
    parser.add_argument("--success-threshold", type=float, default=0.9,
                        help="the rule labels success when the score stays above this (default 0.9)")
    parser.add_argument("--ask-threshold", type=float, default=0.5,
                        help="the rule asks the operator when the score stays >= this, not all above the "
                             "success threshold (default 0.5)")
    parser.add_argument("--consecutive", type=positive_int, default=3,
                        help="... for this many steps in a row (default 3)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")


def _config(args):
    from resfit_ros.config import ConfigError
    from resfit_ros.learning.detector import DecisionRule, DetectorTrainConfig

    dirs = [Path(d) for d in args.episodes]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ArgumentError(f"--episodes {' '.join(missing)}: not a directory")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ArgumentError(f"--out must end in .safetensors, got '{out.name}'")
    if out.is_dir():
        raise ArgumentError(f"--out {out} is a directory")
    if args.png is not None and not args.png.endswith(".png"):
        raise ArgumentError(f"--png must end in .png, got '{args.png}'")
    try:
        rule = DecisionRule(args.success_threshold, args.ask_threshold, args.consecutive)
        cfg = DetectorTrainConfig(positives_last=args.positives_last, margin=args.margin,
                                  holdout_fraction=args.holdout_fraction, seed=args.seed, steps=args.steps,
                                  threads=args.threads, rule=rule)
    except ConfigError as exc:
        raise ArgumentError(str(exc)) from None
    return dirs, out, cfg


def run(args) -> int:
    try:
        dirs, out, cfg = _config(args)
    except ArgumentError as exc:
        return fail(VERB, str(exc))

    from resfit_ros.bags import BagError, load_episodes
    from resfit_ros.learning.detector import (DetectorError, format_report, plot_scores, save_detector,
                                              train_detector)

    episodes, problems = [], []
    for d in dirs:
        try:
            episodes += load_episodes(d, images=False, on_problem=lambda p, why: problems.append(f"  skipped {p}: {why}"))
        except BagError as exc:
            return fail(VERB, str(exc))
    for line in problems:
        print(line)
    try:
        detector, held = train_detector(episodes, cfg, log=print)
    except DetectorError as exc:
        return fail(VERB, str(exc))
    detector.report["episode_dirs"] = [str(d) for d in dirs]
    save_detector(detector, out)
    report_path = out.with_name(out.stem + "_report.json")
    report_path.write_text(json.dumps(detector.report, indent=1) + "\n")
    for line in format_report(detector.report["heldout"]):
        print("train-detector: " + line)
    written = [str(out), str(report_path)]
    if args.png is not None:
        if held:
            written.append(str(plot_scores(detector, held, args.png)))
        else:
            print("train-detector: no held-out episodes to plot; --png not written")
    print(f"train-detector: wrote {', '.join(written)} ({cfg.steps} steps in "
          f"{detector.report['train_seconds']:.0f} s, final loss {detector.report['final_loss']:.4g})")
    return 0
