"""Episode bags -> replay transitions: the replay buffer is a cache of the bags on disk.

`episode_arrays(episode, base_actions)` turns one read episode into the arrays of
`ReplayBuffer.add_episode`; `demo_base_actions` runs the frozen base policy over a demonstration
(as it would have executed: chunk by chunk, queue reset at the episode start) and caches the
result next to the demos, keyed by the base artifact's hash; `BagIngest` watches directories and
adds every newly COMPLETED episode exactly once (incomplete and aborted ones are skipped with a
reason). A restarted learner rebuilds the same buffer from the same directories.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resfit_ros.bags import INCOMPLETE_SUFFIX, Episode, read_episode
from resfit_ros.bags.errors import AbortedBeforeFirstStep
from resfit_ros.bags.reader import episode_name, is_episode_dir, is_raw_bag, raw_bag_hint, store_folders
from resfit_ros.core.intervention import intervention_steps

log = logging.getLogger(__name__)


@dataclass
class EpisodeArrays:
    states: np.ndarray        # (T+1, S) float32
    base_actions: np.ndarray  # (T+1, A)
    actions: np.ndarray       # (T, A) executed commands
    success: bool
    images: np.ndarray | None  # (T+1, ncam, 3, H, W) uint8
    intervention: np.ndarray | None = None  # (T,) bool: steps an operator drove (online episodes)


def episode_arrays(ep: Episode, base_actions: np.ndarray | None = None,
                   camera_names: list[str] | None = None) -> EpisodeArrays:
    """Transitions of one episode. Observation t is the one step t acted on; the observation after
    the last step is the next recorded one, or the last step's own when none was recorded (the
    episode ended there: no bootstrap from it unless truncation bootstraps).

    base_actions: (T+1, A) for demonstrations (from `demo_base_actions`); None = the recorded ones.
    """
    T = ep.num_steps
    if T < 1:
        raise ValueError(f"{ep.path}: episode has no steps")
    obs_idx = np.asarray(ep.step_obs_index, dtype=np.int64)
    if np.any(obs_idx < 0):
        raise ValueError(f"{ep.path}: {int(np.sum(obs_idx < 0))} steps have no recorded observation")
    last_next = int(ep.next_obs_index[-1])
    idx = np.concatenate([obs_idx, [last_next if last_next >= 0 else obs_idx[-1]]])  # (T+1,)
    states = ep.states()[idx]
    recorded = base_actions is None
    if base_actions is None:
        if ep.base_action.shape[0] != T:
            raise ValueError(f"{ep.path}: no recorded base actions (a demonstration? pass base_actions)")
        base_actions = np.concatenate([ep.base_action, ep.base_action[-1:]], axis=0)
    if base_actions.shape[0] != T + 1:
        raise ValueError(f"{ep.path}: base_actions has {base_actions.shape[0]} rows for {T} steps")
    images = ep.image_stack(camera_names)[idx] if camera_names else None
    # recorded episodes only (a demonstration is the expert's throughout)
    operator = intervention_steps(ep.safety_flags) if recorded and len(ep.safety_flags) == T else None
    return EpisodeArrays(states.astype(np.float32), np.asarray(base_actions, np.float32),
                         np.asarray(ep.command, np.float32), bool(ep.success), images, operator)


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def demo_base_actions(ep: Episode, base_policy, base_digest: str, cache_root: Path | None = None) -> np.ndarray:
    """(T+1, A): what the frozen base would have commanded at each demo observation when executing
    its chunks open loop from the episode start. Cached in `<cache_root>/<episode>.<digest>.npy`."""
    cache = None
    if cache_root is not None:
        cache = Path(cache_root) / f"{ep.path.name}.{base_digest}.npy"
        if cache.is_file():
            cached = np.load(cache, allow_pickle=False)
            if cached.shape == (ep.num_steps + 1, ep.dof):
                return cached
    T = ep.num_steps
    idx = np.concatenate([ep.step_obs_index, [ep.next_obs_index[-1] if ep.next_obs_index[-1] >= 0
                                              else ep.step_obs_index[-1]]])
    base_policy.reset()
    k = base_policy.chunk_length
    out = np.zeros((T + 1, ep.dof))
    chunk = None
    for t in range(T + 1):
        if t % k == 0:
            chunk = base_policy.predict_chunk(ep.observation(int(idx[t])))
        out[t] = chunk[t % k]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # one temporary file per process: two learners sharing a demos cache must not race on it
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, out, allow_pickle=False)
        tmp.replace(cache)
    return out


EXCLUDED_ABORTED = "aborted or unlabelled"   # the skip reason of an episode left out on purpose


def state_size_mismatch(episode_dim: int, replay_dim: int) -> str:
    """One line for the commonest set-up mistake: demos and robot observe different states."""
    return (f"its observations are {episode_dim}-D, the replay's (built from the demonstrations) {replay_dim}-D: "
            "demonstrations and robot must record the same observation (joint positions + velocities, plus the "
            "task state only in simulation; for a robot record demos with `resfit-ros demos --no-task-state`)")


@dataclass
class IngestStats:
    episodes: int = 0
    transitions: int = 0
    successes: int = 0
    intervention_steps: int = 0      # steps an operator drove (online episodes)
    skipped: dict[str, str] = field(default_factory=dict)   # episode dir -> reason


class BagIngest:
    """Adds each completed episode of the watched directories to `buffer` exactly once.
    With `base_features` the replay holds the frozen base encoder's features of the images (in
    the base's camera order) instead of the images."""

    def __init__(self, buffer, camera_names: list[str] | None = None, base_policy=None,
                 base_artifact: str | Path | None = None, base_features: bool = False):
        if base_features and (base_policy is None or not base_policy.camera_names):
            raise ValueError("base_features needs a base policy with cameras (its image encoder)")
        self.buffer = buffer
        self.camera_names = list(base_policy.camera_names) if base_features else list(camera_names or [])
        self.base_features = base_features
        self.base_policy = base_policy
        self.base_digest = file_digest(base_artifact) if base_artifact else ""
        self.seen: set[Path] = set()
        self.stats = {"demo": IngestStats(), "online": IngestStats()}
        # (episode dir, success, explore, steps, steps an operator drove) per online episode
        self.history: list[tuple[str, bool, bool, int, int]] = []

    def poll(self, root: str | Path, demo: bool) -> list[Path]:
        """Ingest new complete episodes under `root`; returns the directories added."""
        root = Path(root)
        if not root.is_dir():
            return []
        added = []
        kind = "demo" if demo else "online"
        subdirs = sorted(p for folder in store_folders(root) for p in folder.iterdir() if p.is_dir())
        for raw in [root] + [p for p in subdirs if not is_episode_dir(p)]:
            if raw not in self.seen and is_raw_bag(raw):  # `ros2 bag record` output: say once how to import it
                self.seen.add(raw)
                self.stats[kind].skipped[str(raw)] = raw_bag_hint(raw)
                log.warning("skipped %s: %s", raw, raw_bag_hint(raw))
        for path in (p for p in subdirs if is_episode_dir(p)):
            if path in self.seen or path.name.endswith(INCOMPLETE_SUFFIX):
                continue  # done, or still being recorded (it gets its final name when complete)
            self.seen.add(path)
            try:
                ep = read_episode(path, images=bool(self.camera_names))
                if ep.aborted or ep.label is None:
                    raise ValueError(f"{EXCLUDED_ABORTED}: excluded from training")
                if demo and not ep.success:
                    raise ValueError("failed demonstration: excluded")
                base = None
                if demo:
                    if self.base_policy is None:
                        raise ValueError("demonstrations need the base policy to compute base actions")
                    base = demo_base_actions(ep, self.base_policy, self.base_digest, root / ".base_actions")
                arrays = episode_arrays(ep, base, self.camera_names)
                if arrays.states.shape[1] != self.buffer.state_dim:
                    raise ValueError(state_size_mismatch(arrays.states.shape[1], self.buffer.state_dim))
                images, features = arrays.images, None
                if self.base_features:
                    images, features = None, self.base_policy.encode_images(arrays.images)
                self.buffer.add_episode(arrays.states, arrays.base_actions, arrays.actions, arrays.success,
                                        demo=demo, images=images, features=features,
                                        intervention=arrays.intervention)
            except Exception as exc:  # one bad episode never stops the others (reason kept and logged)
                if isinstance(exc, AbortedBeforeFirstStep):
                    exc = ValueError(f"{EXCLUDED_ABORTED}: excluded from training ({exc.problem})")
                self.stats[kind].skipped[str(path)] = str(exc)
                log.warning("skipped episode %s: %s", path, exc)
                continue
            s = self.stats[kind]
            s.episodes += 1
            s.transitions += ep.num_steps
            s.successes += int(ep.success)
            s.intervention_steps += int(arrays.intervention.sum()) if arrays.intervention is not None else 0
            explore = bool(ep.exploration.any()) if ep.exploration.size else False
            if not demo:
                operator = int(arrays.intervention.sum()) if arrays.intervention is not None else 0
                self.history.append((episode_name(path, root), ep.success, explore, ep.num_steps, operator))
            added.append(path)
        return added
