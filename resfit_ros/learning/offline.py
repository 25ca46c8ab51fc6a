"""ROS-free core of training the residual from episode bags: build normaliser + agent + replay
buffer from demo / online episode directories (or resume them from a checkpoint), and a train
loop with checkpointing. Used by `resfit-ros train-offline`; the learner node builds the same
things the same way (see `build_setup`), so it can call this instead of its own copy.

Resuming is exact: a checkpoint written by `save_offline_checkpoint` is an ordinary
`ResidualAgent` checkpoint (same files, loadable by `ResidualAgent.from_checkpoint` and
`resfit-ros eval --residual`) whose meta.json carries one more entry, `offline`: the iteration
count and the replay buffer's sampling RNG state. The buffer itself is rebuilt from the same bags
(in sorted order, so its contents are identical), then the RNG is restored: the next batch, and
therefore the next update, equals the one an uninterrupted run would have made.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from resfit_ros.config import ConfigError, require
from resfit_ros.core.command import DEFAULT_RESIDUAL_BOUND
from resfit_ros.learning.config import AgentConfig
from resfit_ros.learning.normaliser import MAX_RESIDUAL_BOUND, NormaliserConfig

log = logging.getLogger(__name__)

OFFLINE_KEY = "offline"


def parse_residual_gains(entries: list[str], action_scale: float) -> list[tuple[str, float]]:
    """["right_hand_=10", "right_=0.3"] -> [(prefix, gain)]; ConfigError naming a bad entry."""
    rules = []
    for entry in entries:
        prefix, sep, value = entry.partition("=")
        try:
            gain = float(value) if sep and prefix else float("nan")
        except ValueError:
            gain = float("nan")
        require(0.0 <= gain <= 10.0 and gain * action_scale <= MAX_RESIDUAL_BOUND,
                f"residual_gains entry '{entry}' must be PREFIX=GAIN with GAIN in [0, 10] and "
                f"action_scale ({action_scale:g}) * GAIN <= {MAX_RESIDUAL_BOUND:g}")
        rules.append((prefix, gain))
    return rules


class SetupError(ValueError):
    """The inputs cannot make a learner (no demos, bad base, no cameras, bad checkpoint, ...)."""


_AGENT = AgentConfig()   # the agent fields' defaults are AgentConfig's (one definition)
_NORMALISER = NormaliserConfig()   # likewise the normaliser fields'


@dataclass
class OfflineSettings:
    """Agent + replay settings: `resfit-ros train-offline`'s, and the learner node's (its
    LearnerConfig extends this class). Each agent field's meaning: resfit_ros/learning/config.py."""
    use_cameras: bool = False                 # learn from the episode's camera images (else state only)
    # 7x the critic updates per CPU-second of an encoder of the residual's own, trained by the critic
    base_features: bool = False               # with use_cameras: the residual reads the frozen base's image-encoder features (the base's cameras), not the images
    feature_projection_dim: int = _AGENT.feature_projection_dim  # with base_features: width of the critic-trained projection of those features (0: actor and critic read them unchanged)
    seed: int = 0                             # agent, replay sampling
    device: str = "cpu"                       # where the agent trains: cpu or cuda (refused when no GPU is there)
    utd: int = 4                              # critic updates per decision (per environment step when action_repeat is 1)
    action_repeat: int = _AGENT.action_repeat  # the actor decides every N control steps; the residual is held in between
    action_scale: float = _AGENT.action_scale  # residual bound in normalised action units
    # per-joint residual reach: "PREFIX=GAIN" entries, the first whose prefix starts a joint's name
    # wins, 1 elsewhere (0 = no residual on that joint); e.g. ["right_hand_=10", "right_=0.25"]
    residual_gains: list[str] = field(default_factory=list)
    residual_bound: list[float] = field(default_factory=lambda: [DEFAULT_RESIDUAL_BOUND])  # rad (1 or dof values): the residual node's residual_bound, which the actor never exceeds (the robot would not execute it)
    residual_penalty: float = _AGENT.residual_penalty  # actor loss weight of |residual / bound|^2
    demo_bc_weight: float = _AGENT.demo_bc_weight  # actor loss weight of its regression onto the demos' residual
    actor_pessimism: float = _AGENT.actor_pessimism  # the actor maximises the heads' mean Q less this many of their std (0: the mean)
    intervention_bc_weight: float = _AGENT.intervention_bc_weight  # ... onto the operator's correction (interventions)
    exploration_std: float = _AGENT.exploration_std  # Gaussian exploration (and target smoothing) std, normalised units
    random_warmup_steps: int = _AGENT.random_warmup_steps  # first N training steps: random residual, no update (then the critic warm-up)
    random_warmup_fraction: float = _AGENT.random_warmup_fraction  # ... uniform over this fraction of each joint's bound
    # joint-name prefixes those random residuals move, the others stay at the base (empty: every joint)
    random_warmup_joints: list[str] = field(default_factory=list)
    actor_lr: float = _AGENT.actor_lr
    critic_lr: float = _AGENT.critic_lr
    hidden_dim: int = 256                     # width of actor and critic hidden layers
    critic_layer_norm: bool = _AGENT.critic_layer_norm  # off only for the ablation
    critic_sees_base: bool = _AGENT.critic_sees_base  # the critic also reads the base's action
    num_critic_heads: int = _AGENT.num_critic_heads
    critic_warmup_updates: int = _AGENT.critic_warmup_updates  # critic-only updates before the actor trains
    batch_size: int = _AGENT.batch_size
    demo_fraction: float = 0.5                # share of each batch drawn from the demonstrations
    nstep: int = 3                            # n-step returns
    gamma: float = 0.99
    online_capacity: int = 200_000            # online transitions kept (oldest evicted)
    demo_capacity: int = 50_000               # demonstration transitions kept
    intervention_capacity: int = 20_000       # operator (intervention) transitions kept (oldest evicted)
    state_min_std: float = _NORMALISER.state_min_std  # floor of each state dimension's std, state units (m, rad, rad/s)
    refit_state_statistics: bool = True       # refit them on demos + online states (the warm-up's) before the first update

    def __post_init__(self) -> None:
        require(self.utd >= 1, f"utd must be >= 1, got {self.utd}")
        require(self.use_cameras or not self.base_features,
                "base_features reads the base's features of the camera images: it needs use_cameras: true")
        require(self.hidden_dim >= 8, f"hidden_dim must be >= 8, got {self.hidden_dim}")
        from resfit_ros.learning.agent import check_device
        try:
            check_device(self.device)
        except ValueError as exc:
            require(False, str(exc))
        self.residual_gains = [str(entry) for entry in self.residual_gains]
        self.random_warmup_joints = [str(prefix) for prefix in self.random_warmup_joints]
        require(all(self.random_warmup_joints), "random_warmup_joints entries must be non-empty joint-name prefixes")
        require(self.state_min_std > 0, f"state_min_std must be > 0, got {self.state_min_std}")
        require(len(self.residual_bound) >= 1 and all(np.isfinite(b) and b >= 0 for b in self.residual_bound),
                f"residual_bound must be one or more finite values >= 0 (rad), got {self.residual_bound!r}")
        self.residual_bound = [float(b) for b in self.residual_bound]
        self._gain_rules = parse_residual_gains(self.residual_gains, self.action_scale)
        self.agent_config()   # validates the agent fields (ConfigError)
        self.replay_config()  # validates the replay fields

    def agent_config(self, joint_names: list[str] | None = None):
        """The AgentConfig of these settings; with the joint names, random_warmup_joints become its
        random_warmup_mask (SetupError for a prefix that matches no joint)."""
        from resfit_ros.learning.config import AgentConfig

        mask = ()
        if joint_names is not None and self.random_warmup_joints:
            unmatched = [p for p in self.random_warmup_joints if not any(n.startswith(p) for n in joint_names)]
            if unmatched:
                raise SetupError(f"random_warmup_joints: {unmatched} match none of the joints {list(joint_names)}")
            mask = tuple(float(any(n.startswith(p) for p in self.random_warmup_joints)) for n in joint_names)
        return AgentConfig(action_scale=self.action_scale, exploration_std=self.exploration_std,
                           residual_penalty=self.residual_penalty, demo_bc_weight=self.demo_bc_weight,
                           actor_pessimism=self.actor_pessimism,
                           intervention_bc_weight=self.intervention_bc_weight,
                           random_warmup_steps=self.random_warmup_steps,
                           random_warmup_fraction=self.random_warmup_fraction, random_warmup_mask=mask,
                           action_repeat=self.action_repeat,
                           actor_lr=self.actor_lr, critic_lr=self.critic_lr,
                           actor_hidden_dims=(self.hidden_dim, self.hidden_dim),
                           critic_hidden_dims=(self.hidden_dim, self.hidden_dim),
                           num_critic_heads=self.num_critic_heads, critic_layer_norm=self.critic_layer_norm,
                           critic_sees_base=self.critic_sees_base,
                           critic_warmup_updates=self.critic_warmup_updates, batch_size=self.batch_size,
                           feature_projection_dim=self.feature_projection_dim)

    def residual_gain_vector(self, joint_names: list[str]) -> np.ndarray:
        """(A,) per-joint residual gain (Normaliser.from_demonstrations): the gain of the FIRST
        `residual_gains` entry whose prefix starts the joint's name, 1 for a joint none matches."""
        unmatched = [prefix for prefix, _ in self._gain_rules if not any(n.startswith(prefix) for n in joint_names)]
        if unmatched:
            raise SetupError(f"residual_gains: {unmatched} match none of the joints {list(joint_names)}")
        return np.array([next((g for prefix, g in self._gain_rules if n.startswith(prefix)), 1.0) for n in joint_names])

    def residual_limit_vector(self, joint_names: list[str]) -> np.ndarray:
        """(A,) residual_bound per joint (Normaliser.from_demonstrations' residual_limit)."""
        if len(self.residual_bound) not in (1, len(joint_names)):
            raise SetupError(f"residual_bound has {len(self.residual_bound)} values for {len(joint_names)} joints")
        return np.broadcast_to(np.asarray(self.residual_bound, dtype=np.float64), (len(joint_names),)).copy()

    def replay_config(self):
        from resfit_ros.learning.replay import ReplayConfig

        return ReplayConfig(online_capacity=self.online_capacity, demo_capacity=self.demo_capacity,
                            intervention_capacity=self.intervention_capacity,
                            demo_fraction=self.demo_fraction, nstep=self.nstep, gamma=self.gamma,
                            action_repeat=self.action_repeat)

    @classmethod
    def from_object(cls, obj) -> "OfflineSettings":
        """Settings from any object with the same attribute names (e.g. the learner's config)."""
        names = [f for f in cls.__dataclass_fields__]
        return cls(**{n: getattr(obj, n) for n in names if hasattr(obj, n)})


@dataclass
class OfflineSetup:
    agent: object                 # ResidualAgent
    buffer: object                # ReplayBuffer
    ingest: object                # BagIngest
    cameras: list[str]
    image_size: tuple[int, int]
    iterations: int = 0           # training iterations already done (resumed)
    resumed_from: Path | None = None
    problems: dict[str, str] = field(default_factory=dict)   # episode dir -> why it was skipped
    refused_checkpoints: list[str] = field(default_factory=list)  # why newer checkpoints were not used
    settings: OfflineSettings | None = None   # what it was built with


def demo_normaliser(states: np.ndarray, commands: np.ndarray, base_actions: np.ndarray,
                    settings: OfflineSettings, joint_names: list[str]):
    """The normaliser of a run: demo states (N, S); every action the critic sees as executed in the
    demos: the demo commands (N, A) and the base's actions on the demo observations (M, A).
    The learner, train-offline and the in-process trainer all build it here."""
    from resfit_ros.learning.normaliser import Normaliser

    actions = np.concatenate([np.asarray(commands, dtype=np.float64), np.asarray(base_actions, dtype=np.float64)])
    return Normaliser.from_demonstrations(states, actions, settings.action_scale,
                                          NormaliserConfig(state_min_std=settings.state_min_std),
                                          residual_gain=settings.residual_gain_vector(joint_names),
                                          residual_limit=settings.residual_limit_vector(joint_names))


def refit_state_statistics_if_due(agent, buffer, settings) -> bool:
    """Before the critic's first update, once: the state normaliser refit on every stored state,
    demos and online (normaliser.py says why). In a run with a random warm-up that first update
    comes after the warm-up, so its states are in; offline, every ingested episode's are. Nothing
    learnt is lost (no update yet, the actor's output is 0) and the refit reaches the robot with
    the next weights. True if it refit now (the caller may publish weights at once)."""
    if not (settings.refit_state_statistics and agent.critic_updates == 0 and not agent.state_statistics_refit
            and buffer.num_online_transitions > 0):
        return False
    agent.refit_state_statistics(buffer.states(), settings.state_min_std)
    return True


def agent_from_demos(demos, demo_base_actions: list[np.ndarray], settings: OfflineSettings, cameras: list[str],
                     image_size: tuple[int, int], feature_dim: int = 0):
    """A fresh ResidualAgent whose normaliser comes from the demonstrations: every recorded
    observation's state, every demo command and the base's action at each demo step."""
    from resfit_ros.learning.agent import ResidualAgent

    states = np.concatenate([d.states() for d in demos])
    normaliser = demo_normaliser(states, np.concatenate([d.command for d in demos]),
                                 np.concatenate(demo_base_actions), settings, demos[0].joint_names)
    return ResidualAgent(settings.agent_config(demos[0].joint_names), states.shape[1], normaliser.action_dim,
                         cameras, image_size, feature_dim,
                         normaliser, seed=settings.seed, device=settings.device)


def load_demos(demos_dir: str | Path, use_cameras: bool):
    """(successful demos, problems) of `demos_dir`; SetupError when there is none or no camera."""
    from resfit_ros.bags import load_episodes

    problems: dict[str, str] = {}
    demos_dir = Path(demos_dir)
    if not demos_dir.is_dir():
        raise SetupError(f"demos directory {demos_dir} does not exist")
    demos = load_episodes(demos_dir, success_only=True, images=use_cameras,
                          on_problem=lambda p, why: problems.__setitem__(str(p), why))
    if not demos:
        raise SetupError(f"demos directory {demos_dir}: no successful demonstration episodes"
                         + (f" ({len(problems)} unreadable)" if problems else ""))
    if use_cameras and not demos[0].camera_names:
        raise SetupError(f"demos directory {demos_dir}: use_cameras is set but the demos have no camera images")
    return demos, problems


def build_setup(demos_dir: str | Path, episodes_dirs: list[str | Path], base_artifact: str | Path,
                settings: OfflineSettings, resume_from: str | Path | None = None,
                base_policy=None) -> OfflineSetup:
    """Normaliser + agent + replay buffer + BagIngest from the bags, the learner node's way:
    demos (successful ones; base actions from the frozen base, cached per base hash next to the
    demos) into the demo store, then every completed online episode of `episodes_dirs`.
    resume_from: a checkpoint root/directory to continue from (agent, iteration count, replay RNG);
    of a root, the newest checkpoint that reads back intact is used (checkpoint_candidates): a
    corrupt newest one is refused (reason in `refused_checkpoints`) and the one before it used.
    settings.base_features (with use_cameras): the agent reads the frozen base encoder's features
    of the images, not the images.
    Raises SetupError for unusable inputs (nothing written except the base-action cache)."""
    from resfit_ros.learning.agent import ResidualAgent
    from resfit_ros.learning.checkpoint import CheckpointError, checkpoint_candidates, read_checkpoint
    from resfit_ros.learning.from_bags import BagIngest
    from resfit_ros.learning.replay import ReplayBuffer

    if base_policy is None:
        from resfit_ros.policy.base import PolicyLoadError, load_base_policy

        try:
            base_policy = load_base_policy(base_artifact)
        except (PolicyLoadError, OSError) as exc:
            raise SetupError(f"base policy {base_artifact}: {exc}") from None
    demos, problems = load_demos(demos_dir, settings.use_cameras)
    cameras = list(demos[0].camera_names) if settings.use_cameras else []
    image_size = tuple(demos[0].images[cameras[0]].shape[1:3]) if cameras else (84, 84)
    feature_dim, base_features = 0, settings.base_features
    if base_features:
        if not (cameras and base_policy.camera_names and base_policy.feature_dim):
            raise SetupError("base_features needs use_cameras, demos with images and a base with an image "
                             f"encoder (base cameras {base_policy.camera_names}, demo cameras {cameras})")
        feature_dim = base_policy.feature_dim
    agent_cameras = [] if base_features else cameras       # what the agent's own encoder reads
    iterations, replay_rng, resumed, refused = 0, None, None, []
    if resume_from is not None:
        for directory in checkpoint_candidates(resume_from):
            try:
                state, _ = read_checkpoint(directory)
                agent = ResidualAgent.from_checkpoint(directory, device=settings.device)
                break
            except CheckpointError as exc:
                refused.append(str(exc))
        else:
            raise SetupError("cannot resume: " + ("; ".join(refused) or f"no checkpoint in {resume_from}"))
        extra = state.get(OFFLINE_KEY) or {}
        iterations = int(extra.get("iterations", agent.critic_updates // settings.utd))
        replay_rng = extra.get("replay_rng")
        resumed = directory
        if list(agent.camera_names) != agent_cameras or agent.state_dim != demos[0].states().shape[1] \
                or agent.feature_dim != feature_dim:
            raise SetupError(f"cannot resume from {directory}: it is for cameras {agent.camera_names}, "
                             f"{agent.feature_dim} features and {agent.state_dim}-D states, this set-up gives "
                             f"{agent_cameras}, {feature_dim} and {demos[0].states().shape[1]}-D")
    else:
        from resfit_ros.learning.from_bags import demo_base_actions, file_digest

        digest = file_digest(base_artifact)
        bases = [demo_base_actions(d, base_policy, digest, Path(demos_dir) / ".base_actions") for d in demos]
        agent = agent_from_demos(demos, bases, settings, agent_cameras, image_size, feature_dim)
    buffer = ReplayBuffer(settings.replay_config(), agent.state_dim, agent.action_dim, len(agent_cameras),
                          image_size, feature_dim, seed=settings.seed)
    ingest = BagIngest(buffer, cameras, base_policy, base_artifact, base_features=base_features)
    ingest.poll(demos_dir, demo=True)
    for d in episodes_dirs:
        ingest.poll(d, demo=False)
        problems.update(incomplete_episodes(d))
    for stats in ingest.stats.values():
        problems.update(stats.skipped)
    if buffer.num_demo_transitions == 0 and buffer.num_online_transitions == 0:
        raise SetupError("no usable transitions: " + "; ".join(f"{Path(p).name}: {w}" for p, w in problems.items()))
    if replay_rng is not None:
        buffer._rng.bit_generator.state = replay_rng   # noqa: SLF001 (exact resume; see module doc)
    return OfflineSetup(agent, buffer, ingest, cameras, image_size, iterations, resumed, problems, refused, settings)


def incomplete_episodes(root: str | Path) -> dict[str, str]:
    """BagIngest silently waits for `.incomplete` episodes (the recorder may still be writing);
    offline, they are problems worth reporting."""
    from resfit_ros.bags import INCOMPLETE_SUFFIX

    root = Path(root)
    if not root.is_dir():
        return {}
    return {str(p): "incomplete episode (still being written, or the writer crashed)"
            for p in sorted(root.iterdir()) if p.is_dir() and p.name.startswith("episode_")
            and p.name.endswith(INCOMPLETE_SUFFIX)}


def save_offline_checkpoint(setup: OfflineSetup, ckpt_dir: str | Path, keep_last: int = 2) -> Path:
    """An ordinary ResidualAgent checkpoint + the `offline` entry (iterations, replay RNG)."""
    from resfit_ros.learning.checkpoint import write_checkpoint

    state = setup.agent.state_dict()
    state[OFFLINE_KEY] = {"iterations": int(setup.iterations),
                          "replay_rng": setup.buffer._rng.bit_generator.state}   # noqa: SLF001
    return write_checkpoint(ckpt_dir, state, keep_last=keep_last)


def train(setup: OfflineSetup, total_iterations: int, utd: int, ckpt_dir: str | Path | None = None,
          checkpoint_every_updates: int = 2000, on_iteration: Callable[[int, dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, keep_last: int = 2) -> dict[str, float]:
    """Run training iterations (utd critic updates, the last also updating the actor once the
    agent's critic warm-up is over, exactly as the learner node) until `setup.iterations` reaches
    `total_iterations`. Checkpoints every `checkpoint_every_updates` critic updates and at the end
    (if any iteration ran and ckpt_dir is given). Returns the last iteration's statistics."""
    from resfit_ros.learning.agent import train_iteration

    agent = setup.agent
    stats: dict[str, float] = {}
    last_ckpt = agent.critic_updates
    t0, updates0 = time.monotonic(), agent.critic_updates
    ran = False
    while setup.iterations < total_iterations and not (should_stop and should_stop()):
        if setup.settings is not None:
            refit_state_statistics_if_due(agent, setup.buffer, setup.settings)
        stats = train_iteration(agent, setup.buffer, utd)
        setup.iterations += 1
        ran = True
        stats["charts/updates_per_s"] = (agent.critic_updates - updates0) / max(1e-6, time.monotonic() - t0)
        if on_iteration is not None:
            on_iteration(setup.iterations, stats)
        if ckpt_dir is not None and agent.critic_updates - last_ckpt >= checkpoint_every_updates:
            save_offline_checkpoint(setup, ckpt_dir, keep_last)
            last_ckpt = agent.critic_updates
    if ran and ckpt_dir is not None and agent.critic_updates != last_ckpt:
        save_offline_checkpoint(setup, ckpt_dir, keep_last)
    return stats


def settings_dict(settings: OfflineSettings) -> dict:
    return asdict(settings)


__all__ = ["ConfigError", "OfflineSettings", "OfflineSetup", "SetupError", "agent_from_demos", "build_setup", "demo_normaliser",
           "incomplete_episodes", "load_demos", "refit_state_statistics_if_due", "save_offline_checkpoint", "train"]
