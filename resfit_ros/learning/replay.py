"""Replay buffer with n-step targets precomputed per transition, separate demo, intervention and
online stores.

Episodes are added whole. For an episode of T actions there are T+1 observations: obs index T is the
final observation after the last action. Reward is sparse: 1 on the last step if the episode
succeeded, else 0 (ResFiT's binary success reward).

How an episode ENDS decides whether the last n-step windows bootstrap:
  * success                        -> terminated: reward 1, no bootstrap.
  * failure labelled by the operator -> terminal with reward 0, no bootstrap.
  * truncated (timeout), no success -> `bootstrap_on_truncation` (default False: terminal, reward 0).
Why the default treats a timeout as terminal (as the reference code does): the operator's verdict is
about the whole episode, and time is not in the state, so "the same state, but 5 s left" and
"the same state, but the episode is about to be cut" look identical to the critic; bootstrapping
through a timeout would credit states that, on this robot, were not followed by success in time.
Set the flag to True for tasks whose state does determine the future (classic partial-episode
bootstrapping); the final observation is then a valid bootstrap state.

Storage: one "slot" per observation; the transition that STARTS at observation t lives in the same
slot (the final observation of an episode has no transition). An episode occupies a contiguous run of
slots (a ring that wraps to 0 when an episode does not fit at the end), so the bootstrap observation
of slot i is slot i + next_offset[i], always inside the same episode. Eviction removes whole episodes,
oldest first (online and intervention stores: demonstrations are never evicted; a full demo store
is an error).

Interventions (an operator drove the robot for some steps of an online episode): the whole episode
goes to the online store as any other; a copy goes to the intervention store, in which only the
operator's steps start a transition. A batch's demonstration share is drawn from the demos and
the interventions together, in proportion to their transitions (HIL-SERL puts interventions with
the demonstrations), and `Batch.intervention` marks the operator's rows.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from resfit_ros.config import require
from resfit_ros.names import OBS_FEATURES, OBS_IMAGES, OBS_STATE

log = logging.getLogger(__name__)

REPLAY_FORMAT_VERSION = 1


@dataclass
class ReplayConfig:
    online_capacity: int = 100_000
    """Observation slots of the online store (about one per env step); oldest episodes evicted."""
    demo_capacity: int = 50_000
    """Observation slots of the demonstration store; demos are never evicted (full = error)."""
    intervention_capacity: int = 20_000
    """Observation slots of the intervention store (copies of the online episodes an operator took
    part in); the oldest evicted."""
    demo_fraction: float = 0.5
    """Fraction of each batch drawn from the demos (ResFiT: 0.5). If one store is empty, all from the other."""
    nstep: int = 3
    """n of the n-step return (ResFiT: 3; 5 on long tasks)."""
    gamma: float = 0.99
    """Discount per step (ResFiT: 0.99; 0.995 on long tasks)."""
    action_repeat: int = 1
    """Online episodes: transitions start only at every action_repeat-th step (the actor's
    decisions, AgentConfig.action_repeat) and their window is nstep decisions (nstep x action_repeat
    steps). Demonstrations have no decisions of their own: every step starts a transition, with
    the same window."""
    bootstrap_on_truncation: bool = False
    """Bootstrap from the final observation of a truncated (timed-out, unsuccessful) episode.
    False (default, as the reference code): a timeout is a failure, terminal with reward 0."""

    def __post_init__(self) -> None:
        require(self.online_capacity >= 2, f"online_capacity must be >= 2, got {self.online_capacity}")
        require(self.demo_capacity >= 2, f"demo_capacity must be >= 2, got {self.demo_capacity}")
        require(self.intervention_capacity >= 2,
                f"intervention_capacity must be >= 2, got {self.intervention_capacity}")
        require(0.0 <= self.demo_fraction <= 1.0, f"demo_fraction must be in [0, 1], got {self.demo_fraction}")
        require(self.nstep >= 1, f"nstep must be >= 1, got {self.nstep}")
        require(isinstance(self.action_repeat, int) and self.action_repeat >= 1,
                f"action_repeat must be an integer >= 1, got {self.action_repeat!r}")
        require(0.0 < self.gamma <= 1.0, f"gamma must be in (0, 1], got {self.gamma}")


class Batch(NamedTuple):
    """One training batch (torch tensors, raw units: the agent normalises)."""
    obs: dict[str, torch.Tensor]       # state (B, S) f32; images (B, ncam, 3, H, W) u8; features (B, F) f32
    base_action: torch.Tensor          # (B, A) f32 base policy's action at obs, joint units
    action: torch.Tensor               # (B, A) f32 executed command (base + residual, clamped), joint units
    nstep_reward: torch.Tensor         # (B,) f32 sum_{i<k} gamma^i r_{t+i}
    nstep_discount: torch.Tensor       # (B,) f32 gamma^k, or 0 when the window must not bootstrap
    next_obs: dict[str, torch.Tensor]  # observation t+k (the bootstrap observation), same keys as obs
    next_base_action: torch.Tensor     # (B, A) f32 base action at observation t+k
    demo: torch.Tensor | None = None   # (B,) bool: from the demonstration share (demos or interventions)
    intervention: torch.Tensor | None = None   # (B,) bool: an operator's step (its command is the operator's)


def nstep_targets(num_steps: int, success: bool, truncated: bool, nstep: int, gamma: float,
                  bootstrap_on_truncation: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n-step reward sums, bootstrap discounts and bootstrap offsets of one episode of T steps.

    Returns (reward_sum (T,) f32, discount (T,) f32, offset (T,) int32) where transition t
    bootstraps from observation t + offset[t] with weight discount[t]:
        k        = min(nstep, T - t)                       # short window at the episode end
        reward   = sum_{i<k} gamma^i r_{t+i},  r = [0, ..., 0, 1 if success]
        discount = gamma^k if obs t+k is not the end, or the end may be bootstrapped; else 0
    """
    T = int(num_steps)
    if T < 1:
        raise ValueError(f"an episode needs at least one step, got {T}")
    rewards = np.zeros(T, dtype=np.float64)
    rewards[-1] = 1.0 if success else 0.0
    # Success is always terminal; a failure label is terminal; a timeout is terminal unless the flag.
    end_bootstraps = (not success) and truncated and bootstrap_on_truncation
    t = np.arange(T)
    k = np.minimum(nstep, T - t)                                   # (T,) window lengths, >= 1
    powers = gamma ** np.arange(nstep, dtype=np.float64)           # (n,) gamma^i
    reward_sum = np.zeros(T, dtype=np.float64)
    for i in range(nstep):                                         # n is small (3..50)
        inside = i < k
        reward_sum[inside] += powers[i] * rewards[t[inside] + i]
    reaches_end = (t + k) == T
    discount = np.where(reaches_end & (not end_bootstraps), 0.0, gamma ** k.astype(np.float64))
    return reward_sum.astype(np.float32), discount.astype(np.float32), k.astype(np.int32)


class _Store:
    """Preallocated arrays of one store (demo or online) + its episode bookkeeping."""

    def __init__(self, name: str, capacity: int, state_dim: int, action_dim: int, n_cameras: int,
                 image_size: tuple[int, int], feature_dim: int, evict: bool):
        self.name, self.capacity, self.evict = name, capacity, evict
        self.state = np.zeros((capacity, state_dim), np.float32)
        self.base_action = np.zeros((capacity, action_dim), np.float32)
        self.action = np.zeros((capacity, action_dim), np.float32)          # transition from slot i
        self.nstep_reward = np.zeros(capacity, np.float32)
        self.nstep_discount = np.zeros(capacity, np.float32)
        self.next_offset = np.zeros(capacity, np.int32)                    # 0 = no transition here
        self.images = (np.zeros((capacity, n_cameras, 3, *image_size), np.uint8)
                       if n_cameras > 0 else None)
        self.features = np.zeros((capacity, feature_dim), np.float32) if feature_dim > 0 else None
        self.episodes: list[tuple[int, int]] = []     # (first slot, number of obs slots), oldest first
        self.cursor = 0                               # next free slot
        self.high_water = 0                           # slots ever written (for save)
        self.valid_slots = np.zeros(0, np.int64)      # slots holding a transition (sampling set)
        self.episodes_added = 0

    @staticmethod
    def bytes_per_slot(state_dim: int, action_dim: int, n_cameras: int, image_size: tuple[int, int],
                       feature_dim: int) -> int:
        return (4 * state_dim + 8 * action_dim + 4 + 4 + 4 + n_cameras * 3 * image_size[0] * image_size[1]
                + 4 * feature_dim)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"state": self.state, "base_action": self.base_action, "action": self.action,
               "nstep_reward": self.nstep_reward, "nstep_discount": self.nstep_discount,
               "next_offset": self.next_offset}
        if self.images is not None:
            out["images"] = self.images
        if self.features is not None:
            out["features"] = self.features
        return out

    @property
    def num_transitions(self) -> int:
        return int(self.valid_slots.shape[0])

    def _rebuild_valid(self) -> None:
        self.valid_slots = np.flatnonzero(self.next_offset[: self.high_water] > 0)

    def claim(self, length: int) -> int:
        """Reserve `length` contiguous slots; evicts the oldest episodes in the way. Returns start."""
        if length > self.capacity:
            raise ValueError(f"{self.name} store: an episode of {length} observations does not fit in "
                             f"capacity {self.capacity}")
        start = self.cursor
        claimed = [(start, start + length)]
        if start + length > self.capacity:
            # Wrap: the tail [cursor, capacity) holds the OLDEST episodes; drop them with the head.
            claimed = [(start, self.capacity), (0, length)]
            start = 0
        overlapping = [ep for ep in self.episodes
                       if any(ep[0] < hi and lo < ep[0] + ep[1] for lo, hi in claimed)]
        if overlapping and not self.evict:
            raise ValueError(f"{self.name} store is full ({self.capacity} observation slots): "
                             "demonstrations are never evicted; raise demo_capacity")
        for first, n in overlapping:
            self.next_offset[first: first + n] = 0
        self.episodes = [ep for ep in self.episodes if ep not in overlapping]
        if start == 0 and self.cursor != 0:
            self.next_offset[self.cursor:] = 0
        self.cursor = start + length
        self.high_water = max(self.high_water, self.cursor)
        return start


class ReplayBuffer:
    """Demo + online replay of whole episodes with precomputed n-step targets. Thread-safe."""

    def __init__(self, config: ReplayConfig, state_dim: int, action_dim: int, n_cameras: int = 0,
                 image_size: tuple[int, int] | int = (84, 84), feature_dim: int = 0, seed: int = 0):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        require(state_dim >= 1 and action_dim >= 1,
                f"state_dim and action_dim must be >= 1, got {state_dim}, {action_dim}")
        require(n_cameras >= 0 and feature_dim >= 0,
                f"n_cameras and feature_dim must be >= 0, got {n_cameras}, {feature_dim}")
        self.config = config
        self.state_dim, self.action_dim = state_dim, action_dim
        self.n_cameras, self.image_size, self.feature_dim = n_cameras, tuple(image_size), feature_dim
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        per_slot = _Store.bytes_per_slot(state_dim, action_dim, n_cameras, self.image_size, feature_dim)
        self.memory_bytes = per_slot * (config.online_capacity + config.demo_capacity
                                        + config.intervention_capacity)
        # np.zeros is lazily backed by the OS: pages are committed as the buffer fills, so the
        # estimate is what a FULL buffer will use. Say it loudly if that exceeds this machine's RAM.
        log.info("replay buffer: %d online + %d demo + %d intervention slots x %d B = %.2f GiB when full",
                 config.online_capacity, config.demo_capacity, config.intervention_capacity, per_slot,
                 self.memory_bytes / 2**30)
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            ram = 0
        if ram and self.memory_bytes > 0.8 * ram:
            log.warning("replay buffer needs %.1f GiB when full, this machine has %.1f GiB of RAM",
                        self.memory_bytes / 2**30, ram / 2**30)
        args = (state_dim, action_dim, n_cameras, self.image_size, feature_dim)
        self._demo = _Store("demo", config.demo_capacity, *args, evict=False)
        self._online = _Store("online", config.online_capacity, *args, evict=True)
        self._intervention = _Store("intervention", config.intervention_capacity, *args, evict=True)
        self._stores = (self._demo, self._online, self._intervention)

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def num_demo_transitions(self) -> int:
        return self._demo.num_transitions

    @property
    def num_online_transitions(self) -> int:
        return self._online.num_transitions

    @property
    def num_intervention_transitions(self) -> int:
        """Operator steps held (copies of online steps: not counted again in len())."""
        return self._intervention.num_transitions

    def __len__(self) -> int:
        return self.num_demo_transitions + self.num_online_transitions

    def states(self) -> np.ndarray:
        """(N, S) float32 copy of the state of every stored transition, demos and online."""
        with self._lock:
            return np.concatenate([store.state[store.valid_slots] for store in (self._demo, self._online)])

    def online_episodes(self) -> list[tuple[int, int]]:
        """(first slot, observation count) of the stored online episodes, oldest first."""
        with self._lock:
            return list(self._online.episodes)

    # --- add -----------------------------------------------------------------------------------
    def add_episode(self, states: np.ndarray, base_actions: np.ndarray, actions: np.ndarray,
                    success: bool, demo: bool, images: np.ndarray | None = None,
                    features: np.ndarray | None = None, truncated: bool = False,
                    intervention: np.ndarray | None = None) -> None:
        """Add one whole episode of T steps.

        states (T+1, S), base_actions (T+1, A) (the base policy's action at every observation,
        including the final one: the target may bootstrap there), actions (T, A) executed commands
        in joint units, images (T+1, ncam, 3, H, W) uint8, features (T+1, F) float32,
        intervention (T,) bool: the steps an operator drove (online episodes only).
        """
        states = np.asarray(states, dtype=np.float32)
        base_actions = np.asarray(base_actions, dtype=np.float32)
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim or actions.shape[0] < 1:
            raise ValueError(f"actions must be (T, {self.action_dim}) with T >= 1, got {actions.shape}")
        T = actions.shape[0]
        if states.shape != (T + 1, self.state_dim):
            raise ValueError(f"states must be (T+1, S) = {(T + 1, self.state_dim)}, got {states.shape}")
        if base_actions.shape != (T + 1, self.action_dim):
            raise ValueError(f"base_actions must be (T+1, A) = {(T + 1, self.action_dim)}, "
                             f"got {base_actions.shape}")
        for name, arr in (("states", states), ("base_actions", base_actions), ("actions", actions)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contain NaN or inf")
        if self.n_cameras > 0:
            want = (T + 1, self.n_cameras, 3, *self.image_size)
            if images is None or images.shape != want or images.dtype != np.uint8:
                got = None if images is None else (images.shape, images.dtype)
                raise ValueError(f"images must be uint8 {want}, got {got}")
        elif images is not None:
            raise ValueError("this buffer has no cameras but images were given")
        if self.feature_dim > 0:
            if features is None or np.shape(features) != (T + 1, self.feature_dim):
                raise ValueError(f"features must be (T+1, F) = {(T + 1, self.feature_dim)}, "
                                 f"got {None if features is None else np.shape(features)}")
            features = np.asarray(features, dtype=np.float32)
            if not np.all(np.isfinite(features)):
                raise ValueError("features contain NaN or inf")
        elif features is not None:
            raise ValueError("this buffer has feature_dim 0 but features were given")

        operator = None
        if intervention is not None:
            operator = np.asarray(intervention, dtype=bool).reshape(-1)
            if operator.shape != (T,):
                raise ValueError(f"intervention must be (T,) = ({T},), got {np.shape(intervention)}")
            if demo and operator.any():
                raise ValueError("a demonstration has no intervention steps (the whole episode is the expert's)")

        cfg = self.config
        repeat = cfg.action_repeat
        reward_sum, discount, offset = nstep_targets(T, bool(success), bool(truncated), cfg.nstep * repeat,
                                                     cfg.gamma, cfg.bootstrap_on_truncation)
        # the copy in the intervention store: a transition starts at each operator step (every
        # step is the operator's own decision) and nowhere else
        operator_offset = None if operator is None or not operator.any() else np.where(operator, offset, 0)
        if not demo and repeat > 1:
            offset[np.arange(T) % repeat != 0] = 0    # between decisions: no transition starts here
        with self._lock:
            self._write(self._demo if demo else self._online, states, base_actions, actions, images, features,
                        reward_sum, discount, offset)
            if operator_offset is not None:
                self._write(self._intervention, states, base_actions, actions, images, features,
                            reward_sum, discount, operator_offset.astype(np.int32))

    @staticmethod
    def _write(store: _Store, states, base_actions, actions, images, features, reward_sum, discount,
               offset) -> None:
        """One episode into `store` (the caller holds the lock)."""
        T = actions.shape[0]
        start = store.claim(T + 1)
        obs_slots = slice(start, start + T + 1)
        step_slots = slice(start, start + T)
        store.state[obs_slots] = states
        store.base_action[obs_slots] = base_actions
        if store.images is not None:
            store.images[obs_slots] = images
        if store.features is not None:
            store.features[obs_slots] = features
        store.action[step_slots] = actions
        store.nstep_reward[step_slots] = reward_sum
        store.nstep_discount[step_slots] = discount
        store.next_offset[step_slots] = offset
        store.next_offset[start + T] = 0       # the final observation starts no transition
        store.action[start + T] = 0
        store.nstep_reward[start + T] = 0
        store.nstep_discount[start + T] = 0
        store.episodes.append((start, T + 1))
        store.episodes_added += 1
        store._rebuild_valid()

    # --- sample --------------------------------------------------------------------------------
    def sample(self, batch_size: int) -> Batch:
        """A batch with round(batch_size * demo_fraction) transitions from the demos and the
        interventions (uniform over both together; all from the other side when one is empty),
        the rest uniformly from the online store. Rows: demos, interventions, online."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        with self._lock:
            n_demo_avail = self._demo.num_transitions + self._intervention.num_transitions
            n_online_avail = self._online.num_transitions
            if n_demo_avail == 0 and n_online_avail == 0:
                raise ValueError("cannot sample from an empty replay buffer")
            if n_online_avail == 0:
                n_demo = batch_size
            elif n_demo_avail == 0:
                n_demo = 0
            else:
                n_demo = int(round(batch_size * self.config.demo_fraction))
            # uniform over demos + interventions: how many of the draws fall on the interventions
            n_operator = 0
            if n_demo > 0 and self._intervention.num_transitions > 0:
                n_operator = int((self._rng.integers(0, n_demo_avail, n_demo) >= self._demo.num_transitions).sum())
            parts = []
            for store, count in ((self._demo, n_demo - n_operator), (self._intervention, n_operator),
                                 (self._online, batch_size - n_demo)):
                if count > 0:
                    slots = store.valid_slots[self._rng.integers(0, store.num_transitions, count)]
                    parts.append(self._gather(store, slots))
        # Concatenate outside the lock: the gathered arrays are private copies.
        cat = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        as_t = torch.from_numpy
        rows = torch.arange(batch_size)

        def obs(prefix: str) -> dict[str, torch.Tensor]:
            out = {OBS_STATE: as_t(cat[prefix + "state"])}
            if self.n_cameras > 0:
                out[OBS_IMAGES] = as_t(cat[prefix + "images"])
            if self.feature_dim > 0:
                out[OBS_FEATURES] = as_t(cat[prefix + "features"])
            return out

        return Batch(obs=obs(""), base_action=as_t(cat["base_action"]), action=as_t(cat["action"]),
                     nstep_reward=as_t(cat["nstep_reward"]), nstep_discount=as_t(cat["nstep_discount"]),
                     next_obs=obs("next_"), next_base_action=as_t(cat["next_base_action"]),
                     demo=rows < n_demo, intervention=(rows >= n_demo - n_operator) & (rows < n_demo))

    @staticmethod
    def _gather(store: _Store, slots: np.ndarray) -> dict[str, np.ndarray]:
        next_slots = slots + store.next_offset[slots]          # bootstrap observation, same episode
        out = {
            "state": store.state[slots], "next_state": store.state[next_slots],
            "base_action": store.base_action[slots], "next_base_action": store.base_action[next_slots],
            "action": store.action[slots], "nstep_reward": store.nstep_reward[slots],
            "nstep_discount": store.nstep_discount[slots],
        }
        if store.images is not None:
            out["images"] = store.images[slots]
            out["next_images"] = store.images[next_slots]
        if store.features is not None:
            out["features"] = store.features[slots]
            out["next_features"] = store.features[next_slots]
        return out

    # --- persistence (npz, no pickle) ----------------------------------------------------------
    def _meta(self) -> dict:
        return {"format_version": REPLAY_FORMAT_VERSION, "state_dim": self.state_dim,
                "action_dim": self.action_dim, "n_cameras": self.n_cameras,
                "image_size": list(self.image_size), "feature_dim": self.feature_dim,
                "nstep": self.config.nstep, "gamma": self.config.gamma,
                "action_repeat": self.config.action_repeat,
                "bootstrap_on_truncation": self.config.bootstrap_on_truncation}

    def save(self, path: str | Path) -> None:
        """Write the contents (both stores, bookkeeping, sampling RNG) to `path` (.npz) atomically:
        a temporary file in the same directory, fsync, then rename over the old file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            meta = self._meta()
            meta["rng"] = self._rng.bit_generator.state
            arrays: dict[str, np.ndarray] = {}
            for store in self._stores:
                meta[store.name] = {"episodes": store.episodes, "cursor": store.cursor,
                                    "high_water": store.high_water, "episodes_added": store.episodes_added}
                for key, arr in store.arrays().items():
                    arrays[f"{store.name}/{key}"] = arr[: store.high_water]
            arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, path: str | Path) -> None:
        """Replace the contents with those saved at `path`; dimensions and n-step settings must match."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                contents = {key: data[key] for key in data.files}
            meta = json.loads(bytes(contents.pop("meta")).decode())
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read replay buffer file {path}: {exc}") from None
        meta.setdefault("action_repeat", 1)           # files written before action_repeat existed
        mine = self._meta()
        for key, value in mine.items():
            if meta.get(key) != value:
                raise ValueError(f"replay file {path}: {key} is {meta.get(key)!r}, this buffer has {value!r}")
        with self._lock:
            for store in self._stores:
                if store.name not in meta:             # a file written before the intervention store existed
                    meta[store.name] = {"episodes": [], "cursor": 0, "high_water": 0, "episodes_added": 0}
                    contents.update({f"{store.name}/{key}": arr[:0] for key, arr in store.arrays().items()})
                info = meta[store.name]
                high = int(info["high_water"])
                if high > store.capacity:
                    raise ValueError(f"replay file {path}: {store.name} store holds {high} slots, "
                                     f"capacity is {store.capacity}")
                for key, arr in store.arrays().items():
                    saved = contents[f"{store.name}/{key}"]
                    if saved.shape[0] != high or saved.shape[1:] != arr.shape[1:]:
                        raise ValueError(f"replay file {path}: {store.name}/{key} has shape {saved.shape}")
                    arr[:high] = saved
                    arr[high:] = 0
                store.episodes = [tuple(ep) for ep in info["episodes"]]
                store.cursor = int(info["cursor"]) if int(info["cursor"]) <= store.capacity else 0
                store.high_water = high
                store.episodes_added = int(info["episodes_added"])
                store._rebuild_valid()
            self._rng.bit_generator.state = meta["rng"]
