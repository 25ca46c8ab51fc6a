"""Learned success detector: P(task succeeded | observation), trained from hand-labelled episode bags.

Users label every robot episode success/failure. This module turns those labels into a per-step
classifier and a rule that labels episodes from its scores, so a node can do the labelling a
simulator's success signal does in simulation. No rclpy here (nodes/success_detector.py is the
adapter; jobs/train_detector.py the command line).

Inputs: the observation STATE (ObservationData.state_vector(): joint positions, velocities, extra
task values). Images are not used yet; an image detector would add its camera names to the
config, an encoder's weights to the same file and a new FORMAT version.

Samples, per episode, along its timeline (the observation each step acted on, then the one after
the last step: observation t is the state after t steps):
  successful episode  last `positives_last` observations -> 1 (the success moment), observations
                      before its last `margin` -> 0, the ambiguous ones between are left out
  failed episode      every observation -> 0
  aborted episode     not used (no label)
The split into training and held-out data is by EPISODE: neighbouring steps of one episode are
near-copies, a split by step would measure memory instead of generalisation.

The labelling rule (`decide`), per step, on the scores of the episode so far:
  SUCCESS       the last `consecutive` scores are all above success_threshold
  ASK_OPERATOR  the last `consecutive` scores are all >= ask_threshold, not all above
                success_threshold: the detector is unsure, a person decides (also at the step
                limit: an unsure detector does not overrule a possible success with a failure)
  FAILURE       the step limit is reached
  CONTINUE      otherwise
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from resfit_ros.config import ConfigError, require

FORMAT = "resfit_ros.success_detector/1"
STATE_CLIP = 10.0   # |normalised state| limit: an absurd reading must not saturate the network


class DetectorError(ValueError):
    """The episodes cannot train a detector (none labelled, inconsistent state, one class only)."""


class DetectorLoadError(ValueError):
    """A detector file is missing, corrupt, or does not match its own description."""


# --- the labelling rule ----------------------------------------------------------------------------
class Decision(str, Enum):
    CONTINUE = "continue"
    SUCCESS = "success"
    FAILURE = "failure"
    ASK_OPERATOR = "ask_operator"


@dataclass(frozen=True)
class DecisionRule:
    success_threshold: float = 0.9   # SUCCESS when the score stays above this ...
    ask_threshold: float = 0.5       # ASK_OPERATOR when it stays >= this (not all above success_threshold) ...
    consecutive: int = 3             # ... for this many steps in a row

    def __post_init__(self):
        require(0.0 < self.success_threshold < 1.0,
                f"success_threshold must be in (0, 1), got {self.success_threshold}")
        require(0.0 < self.ask_threshold <= self.success_threshold,
                f"ask_threshold must be in (0, success_threshold={self.success_threshold}], got {self.ask_threshold}")
        require(self.consecutive >= 1, f"consecutive must be >= 1, got {self.consecutive}")


def decide(scores: Sequence[float], step: int, max_steps: int, rule: DecisionRule = DecisionRule()) -> Decision:
    """The verdict after `step` steps of an episode whose scores so far are `scores` (oldest first)."""
    recent = list(scores[-rule.consecutive:]) if rule.consecutive <= len(scores) else []
    if recent and all(s > rule.success_threshold for s in recent):
        return Decision.SUCCESS
    if recent and all(s >= rule.ask_threshold for s in recent):   # high, but not surely above the threshold
        return Decision.ASK_OPERATOR
    if step >= max_steps:
        return Decision.FAILURE
    return Decision.CONTINUE


@dataclass
class EpisodeVerdict:
    """What the rule does on one recorded episode (replay_rule)."""

    decision: Decision      # SUCCESS / FAILURE: the label the node would give; ASK_OPERATOR: left to a person
    step: int               # step of that decision
    asked: bool             # the operator was asked at some point before it


def replay_rule(scores: Sequence[float], rule: DecisionRule, max_steps: int | None = None) -> EpisodeVerdict:
    """Run the rule over one episode's scores (score t = observation after t steps). A recorded
    episode ends where it ended, so by default its last step is taken as the step limit."""
    limit = len(scores) - 1 if max_steps is None else max_steps
    asked = False
    for t in range(len(scores)):
        d = decide(scores[max(0, t + 1 - rule.consecutive): t + 1], t, limit, rule)
        if d in (Decision.SUCCESS, Decision.FAILURE):
            return EpisodeVerdict(d, t, asked)
        if d is Decision.ASK_OPERATOR:
            if t >= limit:
                return EpisodeVerdict(d, t, True)
            asked = True
    return EpisodeVerdict(Decision.CONTINUE, len(scores) - 1, asked)


# --- samples ---------------------------------------------------------------------------------------
def state_names(joint_names: list[str], extra_names: list[str], velocity: bool = True) -> list[str]:
    """Names of the state_vector() entries: position/<joint>, velocity/<joint>, extra/<name>."""
    return ([f"position/{j}" for j in joint_names] + ([f"velocity/{j}" for j in joint_names] if velocity else [])
            + [f"extra/{e}" for e in extra_names])


def episode_state_names(ep) -> list[str]:
    return state_names(list(ep.joint_names), list(ep.extra_names), velocity=ep.velocity.shape[1] > 0)


def episode_timeline(ep) -> np.ndarray:
    """(L,) rows of the episode's observation arrays: the observation each step acted on, then
    the one after the last step. Observations after it (the recorder may keep one from after the
    scene reset) are not part of the episode; missing ones (-1) are skipped."""
    rows = ep.step_obs_index[ep.step_obs_index >= 0]
    last = int(ep.next_obs_index[-1]) if len(ep.next_obs_index) else -1
    return np.append(rows, last) if last >= 0 else rows


def timeline_targets(length: int, success: bool, positives_last: int, margin: int) -> np.ndarray:
    """(length,) int8: 1 = success moment, 0 = not succeeded, -1 = left out (ambiguous)."""
    if not success:
        return np.zeros(length, np.int8)
    y = np.full(length, -1, np.int8)
    y[: max(0, length - margin)] = 0
    y[max(0, length - positives_last):] = 1
    return y


@dataclass
class EpisodeSamples:
    path: str
    success: bool
    states: np.ndarray       # (L, S) float32, along the timeline
    targets: np.ndarray      # (L,) int8: 1, 0, or -1 (not trained on, not scored per observation)


def build_samples(episodes: list, positives_last: int = 3, margin: int = 10) -> tuple[list[EpisodeSamples], list[str]]:
    """The labelled episodes as samples, and the state names they share. Aborted episodes are skipped."""
    out: list[EpisodeSamples] = []
    names: list[str] | None = None
    first = None
    for ep in episodes:
        if ep.label not in ("success", "failure"):
            continue
        these = episode_state_names(ep)
        if names is None:
            names, first = these, ep.path
        elif these != names:
            raise DetectorError(f"{ep.path}: its state ({len(these)} values) differs from {first}'s "
                                f"({len(names)}): record all episodes with the same robot and task state")
        rows = episode_timeline(ep)
        if len(rows) == 0:
            continue
        out.append(EpisodeSamples(str(ep.path), ep.success, ep.states()[rows],
                                  timeline_targets(len(rows), ep.success, positives_last, margin)))
    if not out:
        raise DetectorError("no labelled episodes (every one was aborted, empty or unreadable)")
    return out, names or []


def split_episodes(samples: list[EpisodeSamples], holdout_fraction: float, seed: int
                   ) -> tuple[list[EpisodeSamples], list[EpisodeSamples]]:
    """(train, held-out), by episode, per class: round(fraction * n) of each class is held out
    (at least one when the fraction is > 0 and the class has two or more episodes)."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for success in (True, False):
        group = [s for s in samples if s.success == success]
        order = rng.permutation(len(group))
        n_held = round(holdout_fraction * len(group))
        if holdout_fraction > 0 and len(group) >= 2:
            n_held = min(max(n_held, 1), len(group) - 1)
        held += [group[i] for i in sorted(order[:n_held])]
        train += [group[i] for i in sorted(order[n_held:])]
    return train, held


def stack(samples: list[EpisodeSamples]) -> tuple[np.ndarray, np.ndarray]:
    """(M, S) states and (M,) 0/1 targets of every trainable observation."""
    keep = [s.targets >= 0 for s in samples]
    states = np.concatenate([s.states[k] for s, k in zip(samples, keep)])
    return states, np.concatenate([s.targets[k] for s, k in zip(samples, keep)]).astype(np.float32)


# --- the model -------------------------------------------------------------------------------------
@dataclass
class DetectorConfig:
    """What a detector takes as input and how large it is (stored in the file)."""

    joint_names: list[str]
    extra_names: list[str]
    velocity: bool                 # the state holds joint velocities (bags may lack them)
    hidden_dims: list[int] = field(default_factory=lambda: [64, 64])

    def __post_init__(self):
        require(len(self.joint_names) > 0, "joint_names must not be empty")
        require(all(isinstance(n, str) for n in self.joint_names + self.extra_names), "state names must be strings")
        require(len(set(self.joint_names)) == len(self.joint_names), "joint_names repeat")
        require(isinstance(self.velocity, bool), f"velocity must be true or false, got {self.velocity!r}")
        require(bool(self.hidden_dims) and all(isinstance(h, int) and h >= 1 for h in self.hidden_dims),
                f"hidden_dims must be positive integers, got {self.hidden_dims}")

    @property
    def state_names(self) -> list[str]:
        return state_names(self.joint_names, self.extra_names, self.velocity)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)


class DetectorNet(torch.nn.Module):
    """Raw state (B, S) -> success logit (B,): z-score (frozen statistics), clip, MLP."""

    def __init__(self, state_dim: int, hidden_dims: list[int]):
        super().__init__()
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        layers: list[torch.nn.Module] = []
        width = state_dim
        for h in hidden_dims:
            layers += [torch.nn.Linear(width, h), torch.nn.LayerNorm(h), torch.nn.ReLU()]
            width = h
        layers.append(torch.nn.Linear(width, 1))
        self.mlp = torch.nn.Sequential(*layers)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        z = ((state - self.state_mean) / self.state_std).clamp(-STATE_CLIP, STATE_CLIP)   # (B, S)
        return self.mlp(z).squeeze(-1)                                                     # (B,)


class SuccessDetector:
    """A trained detector: score = P(success | state), and the rule that labels episodes from it."""

    def __init__(self, net: DetectorNet, config: DetectorConfig, rule: DecisionRule, report: dict | None = None):
        self.net = net.eval()
        self.config = config
        self.rule = rule
        self.report = report or {}

    @property
    def state_names(self) -> list[str]:
        return self.config.state_names

    def scores(self, states: np.ndarray) -> np.ndarray:
        """(B, S) raw states -> (B,) float64 probabilities of success."""
        states = np.asarray(states, dtype=np.float32)
        if states.ndim != 2 or states.shape[1] != self.config.state_dim:
            raise ValueError(f"detector takes (B, {self.config.state_dim}) states, got {states.shape}")
        with torch.no_grad():
            return torch.sigmoid(self.net(torch.from_numpy(states))).double().numpy()

    def state_of(self, obs) -> np.ndarray:
        """(S,) float32 state of an ObservationData, joints put in the detector's order; ValueError
        when it lacks a joint, has other task values, or no velocities where the detector needs them."""
        joints = list(obs.joint_names)
        if joints == self.config.joint_names:
            order = slice(None)
        else:
            index = {n: i for i, n in enumerate(joints)}
            missing = [n for n in self.config.joint_names if n not in index]
            if missing:
                raise ValueError(f"observation lacks joints the detector needs: {missing[:5]}")
            order = np.array([index[n] for n in self.config.joint_names])
        if list(obs.extra_names) != self.config.extra_names:
            raise ValueError(f"observation task values {list(obs.extra_names)} differ from the detector's "
                             f"{self.config.extra_names}")
        parts = [np.asarray(obs.position, np.float64)[order]]
        if self.config.velocity:
            velocity = np.asarray(obs.velocity, np.float64)
            if velocity.shape != (len(joints),):
                raise ValueError("observation has no joint velocities; the detector was trained with them")
            parts.append(velocity[order])
        parts.append(np.asarray(obs.extra, np.float64))
        return np.concatenate(parts).astype(np.float32)

    def score(self, obs) -> float:
        """P(success) of one ObservationData."""
        return float(self.scores(self.state_of(obs)[None])[0])


# --- training --------------------------------------------------------------------------------------
@dataclass
class DetectorTrainConfig:
    """How `train-detector` builds its data and trains."""

    positives_last: int = 3          # K: the last K observations of a successful episode are positives
    margin: int = 10                 # ... and its observations before the last `margin` are negatives
    holdout_fraction: float = 0.2    # share of each class's episodes held out for the report
    seed: int = 0                    # seed of the split, initialisation and batches
    steps: int = 2000                # gradient steps
    batch_size: int = 256            # observations per step
    lr: float = 1e-3                 # AdamW learning rate (cosine decay to 10 %)
    weight_decay: float = 1e-4       # AdamW weight decay
    hidden_dims: list[int] = field(default_factory=lambda: [64, 64])   # MLP hidden sizes
    state_std_floor: float = 0.01    # floor of the normaliser's std: guards dimensions that never vary
    threads: int = 1                 # torch threads (a shared 2-core machine runs 1 thread fastest)
    rule: DecisionRule = field(default_factory=DecisionRule)            # stored with the detector

    def __post_init__(self):
        require(self.positives_last >= 1, f"positives_last must be >= 1, got {self.positives_last}")
        require(self.margin >= self.positives_last,
                f"margin must be >= positives_last ({self.positives_last}), got {self.margin}")
        require(0.0 <= self.holdout_fraction < 1.0, f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(self.state_std_floor > 0, f"state_std_floor must be > 0, got {self.state_std_floor}")
        require(self.threads >= 1, f"threads must be >= 1, got {self.threads}")


def train_detector(episodes: list, cfg: DetectorTrainConfig = DetectorTrainConfig(),
                   log: Callable[[str], None] | None = None) -> tuple[SuccessDetector, list[EpisodeSamples]]:
    """Train on the labelled `episodes` (Episode objects). Returns the detector (its report holds
    the held-out evaluation) and the held-out episodes' samples (for plots)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    samples, names = build_samples(episodes, cfg.positives_last, cfg.margin)
    train, held = split_episodes(samples, cfg.holdout_fraction, cfg.seed)
    n_success = sum(s.success for s in train)
    if n_success == 0 or n_success == len(train):
        raise DetectorError(f"the training episodes are all {'successes' if n_success else 'failures'} "
                            f"({len(train)} of them): label some of each")
    first = next(ep for ep in episodes if ep.label in ("success", "failure"))
    config = DetectorConfig(joint_names=list(first.joint_names), extra_names=list(first.extra_names),
                            velocity=bool(first.velocity.shape[1] > 0), hidden_dims=list(cfg.hidden_dims))
    assert config.state_names == names

    x, y = stack(train)                                                   # (M, S), (M,)
    net = DetectorNet(config.state_dim, config.hidden_dims)
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), cfg.state_std_floor)
    with torch.no_grad():
        net.state_mean.copy_(torch.from_numpy(mean))
        net.state_std.copy_(torch.from_numpy(std.astype(np.float32)))
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    # class balance: a positive weighs n_neg / n_pos negatives (success moments are few)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(n_neg / max(n_pos, 1)))
    if log:
        log(f"train-detector: {len(train)} training episodes ({n_success} successes), {len(held)} held out; "
            f"{n_pos} positive and {n_neg} negative observations, state {config.state_dim}")

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    losses: list[float] = []
    net.train()
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        idx = torch.from_numpy(rng.integers(0, len(y), size=min(cfg.batch_size, len(y))))
        loss = loss_fn(net(xt[idx]), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    net.eval()
    detector = SuccessDetector(net, config, cfg.rule)
    detector.report = {
        "train_config": {k: v for k, v in asdict(cfg).items() if k != "rule"},
        "train_episodes": len(train), "train_successes": n_success,
        "train_positives": n_pos, "train_negatives": n_neg,
        "train_seconds": time.perf_counter() - t0, "final_loss": float(np.mean(losses[-50:])),
        "heldout": evaluate(detector, held) if held else None,
    }
    return detector, held


# --- evaluation ------------------------------------------------------------------------------------
def observation_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float) -> dict:
    """Per-observation confusion table and precision/recall of `score > threshold` (targets 0/1)."""
    pred = scores > threshold
    truth = targets == 1
    tp, fp = int(np.sum(pred & truth)), int(np.sum(pred & ~truth))
    fn, tn = int(np.sum(~pred & truth)), int(np.sum(~pred & ~truth))
    return {"threshold": threshold, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": tp / (tp + fp) if tp + fp else None,     # None: nothing predicted / nothing to find
            "recall": tp / (tp + fn) if tp + fn else None}


def evaluate(detector: SuccessDetector, held: list[EpisodeSamples]) -> dict:
    """Held-out report: per-observation metrics (at 0.5 and at the rule's success threshold) on
    the trainable observations, and the rule's per-episode labels."""
    scores = [detector.scores(s.states) for s in held]
    keep = [s.targets >= 0 for s in held]
    flat = np.concatenate([sc[k] for sc, k in zip(scores, keep)])
    targets = np.concatenate([s.targets[k] for s, k in zip(held, keep)])
    episodes = []
    for s, sc in zip(held, scores):
        v = replay_rule(sc, detector.rule)
        episodes.append({"path": s.path, "success": s.success, "decision": v.decision.value, "step": v.step,
                         "asked": v.asked, "steps": len(sc) - 1})
    labelled = [e for e in episodes if e["decision"] in ("success", "failure")]
    correct = sum((e["decision"] == "success") == e["success"] for e in labelled)
    return {
        "episodes": len(held), "successes": sum(s.success for s in held),
        "observations": {"at_0.5": observation_metrics(flat, targets, 0.5),
                         "at_success_threshold": observation_metrics(flat, targets, detector.rule.success_threshold)},
        "rule": asdict(detector.rule),
        "episode_accuracy": correct / len(held),     # right labels over ALL held-out episodes
        "labelled": len(labelled), "labelled_correct": correct,
        "asked_at_end": sum(e["decision"] == "ask_operator" for e in episodes),
        "asked_during": sum(e["asked"] for e in episodes),
        "false_success": sum(e["decision"] == "success" and not e["success"] for e in episodes),
        "missed_success": sum(e["decision"] == "failure" and e["success"] for e in episodes),
        "per_episode": episodes,
    }


def format_report(heldout: dict | None) -> list[str]:
    """The held-out report as a few printable lines."""
    if not heldout:
        return ["no held-out episodes (--holdout-fraction 0): nothing measured"]
    lines = []
    for key, m in heldout["observations"].items():
        p, r = (("n/a" if v is None else f"{v:.3f}") for v in (m["precision"], m["recall"]))
        lines.append(f"held-out observations, score > {m['threshold']:g}: precision {p} recall {r}   "
                     f"confusion: tp {m['tp']} fp {m['fp']} fn {m['fn']} tn {m['tn']}")
    r = heldout["rule"]
    lines.append(f"held-out episodes ({heldout['episodes']}, {heldout['successes']} successes), rule "
                 f"success>{r['success_threshold']:g} / ask>={r['ask_threshold']:g} x{r['consecutive']}: "
                 f"accuracy {heldout['episode_accuracy']:.3f} ({heldout['labelled_correct']} right of "
                 f"{heldout['labelled']} labelled; {heldout['asked_at_end']} left to the operator, "
                 f"{heldout['false_success']} false successes, {heldout['missed_success']} missed successes)")
    return lines


def plot_scores(detector: SuccessDetector, held: list[EpisodeSamples], path: str | Path, per_class: int = 3) -> Path:
    """Score over the steps of up to `per_class` held-out successes and failures, with the thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for success, colour in ((True, "tab:green"), (False, "tab:red")):
        for i, s in enumerate([s for s in held if s.success == success][:per_class]):
            sc = detector.scores(s.states)
            ax.plot(np.arange(len(sc)), sc, color=colour, alpha=0.8, lw=1.2,
                    label=("success" if success else "failure") if i == 0 else None)
            v = replay_rule(sc, detector.rule)
            ax.plot([v.step], [sc[v.step]], marker="o" if v.decision is Decision.SUCCESS else "x", color=colour)
    ax.axhline(detector.rule.success_threshold, ls="--", color="k", lw=0.8)
    ax.axhline(detector.rule.ask_threshold, ls=":", color="k", lw=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("P(success | state)")
    ax.set_title("success detector on held-out episodes (marker: the rule's decision)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- the file --------------------------------------------------------------------------------------
def save_detector(detector: SuccessDetector, path: str | Path) -> Path:
    """One .safetensors file: weights + normaliser as tensors; config, rule and report as json
    metadata. Written to a temporary name first, so a crash never leaves half a file at `path`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in detector.net.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(asdict(detector.config)),
                "rule": json.dumps(asdict(detector.rule)), "report": json.dumps(detector.report)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def load_detector(path: str | Path) -> SuccessDetector:
    """The detector stored at `path`; DetectorLoadError (path + what is wrong) otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise DetectorLoadError(f"{path}: no such detector file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DetectorLoadError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise DetectorLoadError(f"{path}: not a success detector (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        config = DetectorConfig(**json.loads(meta["config"]))
        rule = DecisionRule(**json.loads(meta["rule"]))
        report = json.loads(meta.get("report", "{}"))
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise DetectorLoadError(f"{path}: bad detector description in the file: {exc}") from None
    net = DetectorNet(config.state_dim, config.hidden_dims)
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise DetectorLoadError(f"{path}: weights do not match the file's description "
                                f"({config.state_dim} state values, hidden {config.hidden_dims}): "
                                f"{' '.join(x.strip() for x in first[:3])}") from None
    bad = [k for k, v in net.state_dict().items() if not torch.all(torch.isfinite(v))]
    if bad:
        raise DetectorLoadError(f"{path}: non-finite values in {bad[:3]}")
    if not torch.all(net.state_std > 0):
        raise DetectorLoadError(f"{path}: the normaliser's std must be > 0")
    return SuccessDetector(net, config, rule, report)
