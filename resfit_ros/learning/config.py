"""Configuration of the residual agent (networks + TD3 update). One dataclass, validated once.

Replay settings live in replay.ReplayConfig, normalisation settings in normaliser.NormaliserConfig.
Defaults follow the ResFiT paper / reference code except where a comment says otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

from resfit_ros.config import require


@dataclass
class AgentConfig:
    # --- residual ------------------------------------------------------------------------------
    action_scale: float = 0.1
    """Bound of the residual in normalised action units (ResFiT: 0.1 for 7-DoF arms, 0.2 for 24-DoF
    hands). The normaliser widens the demo action range so that this bound stays reachable at the
    demos' extremes (normaliser.py): use the same value."""
    exploration_std: float = 0.05
    """Std of the Gaussian exploration noise on the residual (normalised units); also the std of
    TD3's target policy smoothing noise (ResFiT: 0.05; 0.025 on harder tasks)."""
    residual_penalty: float = 0.0
    """Weight of sum_j (residual_j / bound_j)^2 (bound_j = action_scale * the joint's residual gain;
    mean over the batch) in the actor loss (0: plain TD3, as ResFiT).
    Why: Adam moves every actor weight by ~actor_lr per update whatever the size of the critic's
    action gradient, so a critic that barely knows better still drives the residual to its bound
    within a few thousand updates (measured: half the bound after ~4,000). The penalty keeps the
    residual at 0 (the base policy) until the critic's slope outweighs it: the residual then settles
    where dQ/dr_j = 2 * residual_penalty * r_j / bound_j^2 (normalised units)."""
    demo_bc_weight: float = 0.0
    """Weight of the actor's regression onto the demonstrations' own residual, (demo command -
    base action) in normalised units clamped to each joint's bound, on the demo transitions of
    each batch: mean over them of sum_j ((r_j - target_j) / bound_j)^2 (0: plain TD3, as ResFiT).
    Why: the demos show where the base departs from the expert (here: 30 demos against a base
    trained on 5); the critic alone sees that only through the few successes it causes."""
    actor_pessimism: float = 0.0
    """The actor maximises, per transition, the mean over the critic heads minus this many of their
    standard deviations (0: the mean, as ResFiT). Why: where the heads disagree the critic is
    guessing; a pessimistic actor moves only where they agree, and cannot follow a few heads'
    slope into actions the buffer has not shown them."""
    intervention_bc_weight: float = 0.0
    """Weight of the actor's regression onto what an operator did beyond the base, (operator
    command - base action) in normalised units clamped to each joint's bound, on the intervention
    transitions of each batch (same loss as demo_bc_weight). Why: an intervention is a correction
    at a state the base itself reached, the residual's own job (the demos' states are the
    expert's, where the base's error is another one)."""
    random_warmup_steps: int = 0
    """The first this many training steps act with a uniform random residual (no actor), and the
    learner makes no update during them; then `critic_warmup_updates` critic-only updates on that
    finished buffer, then normal training (ResFiT: 10,000 steps, then 10,000 updates). The policy
    node reads this from the weights it runs, so learner and robot share one value."""
    random_warmup_fraction: float = 1.0
    """Those random residuals are uniform over this fraction of each joint's bound (ResFiT: the
    whole bound): the critic sees what a residual near its bound does before the actor moves."""
    random_warmup_mask: tuple[float, ...] = ()
    """(A,) 1 for a joint those random residuals move, 0 for one they leave at the base (empty:
    every joint). Why: a random offset on every arm joint breaks most grasps (the warm-up's
    success falls from the base's ~0.35 to 0.06-0.19), so the critic sees few successes and little
    of what a finger offset during the grasp does. Set from OfflineSettings.random_warmup_joints."""
    action_repeat: int = 1
    """The actor decides a residual every this many control steps and the control step holds it
    (joint units) in between, in evaluation as in training; the learner's online transitions start
    at those decision steps and bootstrap `nstep` decisions later (1: every step, as ResFiT).
    Why: a residual held for one step barely changes a position-controlled robot, and TD learning
    values a one-step deviation followed by the policy, so at 20 Hz the critic hardly sees the
    sustained offsets that pay (a finger squeeze through the grasp); a decision per 0.5 s sees them
    whole, and the learner makes its updates per decision, not per control step."""
    target_noise_clip: float = 0.3
    """Clip of the target policy smoothing noise (ResFiT: 0.3). The smoothed residual is further
    clamped to +-action_scale, as executed."""
    # --- networks ------------------------------------------------------------------------------
    actor_hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden widths of the residual actor MLP (Linear -> LayerNorm -> ReLU each)."""
    critic_hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden widths of every critic head (Linear -> LayerNorm -> ReLU each). The paper uses 1024;
    256 is 12x cheaper per update on CPU, which lets the learner keep UTD 4 at a real robot's
    control rate (bench/learner.py); raise it where the learner is fast enough."""
    critic_sees_base: bool = False
    """Also give the critic the base's action (normalised), not only the executed one (ResFiT: no).
    Why one might: the base runs its chunks open loop, so its action is not a function of the
    current state; without it the critic cannot tell a residual from the base's own variation."""
    critic_layer_norm: bool = True
    """LayerNorm after every hidden Linear of the critic (ResFiT: required; off only to measure that)."""
    num_critic_heads: int = 10
    """Critic ensemble size N (REDQ-style, ResFiT: 10)."""
    num_target_heads: int = 2
    """The TD target is the min over this many randomly chosen target heads (ResFiT: 2)."""
    # --- vision --------------------------------------------------------------------------------
    encoder_channels: tuple[int, ...] = (16, 32, 32)
    """Output channels of the conv layers of each camera's encoder."""
    encoder_kernels: tuple[int, ...] = (8, 4, 3)
    """Kernel sizes of the conv layers (same length as encoder_channels)."""
    encoder_strides: tuple[int, ...] = (4, 2, 1)
    """Strides of the conv layers (same length as encoder_channels)."""
    camera_feature_dim: int = 64
    """Features per camera after the encoder trunk (Linear -> LayerNorm -> tanh)."""
    feature_projection_dim: int = 0
    """Width of a projection of precomputed features (obs key 'features'), trained by the critic
    loss; 0 (default) feeds those frozen features to actor and critic unchanged.
    Why 0: the actor reads the projection's output but learns 100x slower than the critic trains
    it, so a projection moves the actor's input under it and the residual drifts with the critic."""
    augment_pad: int = 4
    """Random-shift augmentation: replicate-pad by this many pixels, random crop (0 disables)."""
    # --- optimisation --------------------------------------------------------------------------
    critic_lr: float = 1e-4
    """AdamW learning rate of the critic ensemble (ResFiT: 1e-4)."""
    encoder_lr: float = 1e-4
    """AdamW learning rate of the observation encoder, trained by the critic loss (ResFiT: 1e-4)."""
    actor_lr: float = 3e-6
    """AdamW learning rate of the residual actor: tiny on purpose (ResFiT: 1e-6 to 5e-6; the first
    probe on the G1 collapsed with 3e-5)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (torch default)."""
    grad_clip_norm: float = 1.0
    """Max global gradient norm, separately for (critic + encoder) and actor."""
    tau: float = 0.005
    """Polyak factor of the critic and actor targets."""
    critic_warmup_updates: int = 10_000
    """Critic-only phase: no actor update, and no target smoothing noise, until this many critic
    updates were made (ResFiT: 10k)."""
    batch_size: int = 256
    """Transitions per update (ResFiT: 256)."""

    def __post_init__(self) -> None:
        require(0.0 < self.action_scale <= 0.5, f"action_scale must be in (0, 0.5], got {self.action_scale}")
        require(self.random_warmup_steps >= 0, f"random_warmup_steps must be >= 0, got {self.random_warmup_steps}")
        require(0.0 <= self.random_warmup_fraction <= 1.0,
                f"random_warmup_fraction must be in [0, 1], got {self.random_warmup_fraction}")
        require(self.exploration_std >= 0, f"exploration_std must be >= 0, got {self.exploration_std}")
        require(self.residual_penalty >= 0, f"residual_penalty must be >= 0, got {self.residual_penalty}")
        require(self.demo_bc_weight >= 0, f"demo_bc_weight must be >= 0, got {self.demo_bc_weight}")
        require(self.actor_pessimism >= 0, f"actor_pessimism must be >= 0, got {self.actor_pessimism}")
        require(self.intervention_bc_weight >= 0,
                f"intervention_bc_weight must be >= 0, got {self.intervention_bc_weight}")
        require(isinstance(self.action_repeat, int) and self.action_repeat >= 1,
                f"action_repeat must be an integer >= 1, got {self.action_repeat!r}")
        require(self.target_noise_clip >= 0, f"target_noise_clip must be >= 0, got {self.target_noise_clip}")
        self.random_warmup_mask = tuple(float(m) for m in self.random_warmup_mask)
        require(all(m in (0.0, 1.0) for m in self.random_warmup_mask),
                f"random_warmup_mask must hold only 0 and 1, got {list(self.random_warmup_mask)}")
        self.actor_hidden_dims = tuple(self.actor_hidden_dims)
        self.critic_hidden_dims = tuple(self.critic_hidden_dims)
        self.encoder_channels = tuple(self.encoder_channels)
        self.encoder_kernels = tuple(self.encoder_kernels)
        self.encoder_strides = tuple(self.encoder_strides)
        for name in ("actor_hidden_dims", "critic_hidden_dims", "encoder_channels", "encoder_kernels",
                     "encoder_strides"):
            dims = getattr(self, name)
            require(len(dims) >= 1 and all(isinstance(d, int) and d >= 1 for d in dims),
                    f"{name} must be a non-empty list of positive integers, got {list(dims)}")
        require(len(self.encoder_channels) == len(self.encoder_kernels) == len(self.encoder_strides),
                f"encoder_channels, encoder_kernels and encoder_strides must have the same length, got "
                f"{list(self.encoder_channels)}, {list(self.encoder_kernels)}, {list(self.encoder_strides)}")
        require(self.num_critic_heads >= 1, f"num_critic_heads must be >= 1, got {self.num_critic_heads}")
        require(1 <= self.num_target_heads <= self.num_critic_heads,
                f"num_target_heads must be in [1, num_critic_heads={self.num_critic_heads}], "
                f"got {self.num_target_heads}")
        require(self.camera_feature_dim >= 1, f"camera_feature_dim must be >= 1, got {self.camera_feature_dim}")
        require(self.feature_projection_dim >= 0,
                f"feature_projection_dim must be >= 0, got {self.feature_projection_dim}")
        require(self.augment_pad >= 0, f"augment_pad must be >= 0, got {self.augment_pad}")
        for name in ("critic_lr", "encoder_lr", "actor_lr"):
            require(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(self.grad_clip_norm > 0, f"grad_clip_norm must be > 0, got {self.grad_clip_norm}")
        require(0.0 < self.tau <= 1.0, f"tau must be in (0, 1], got {self.tau}")
        require(self.critic_warmup_updates >= 0,
                f"critic_warmup_updates must be >= 0, got {self.critic_warmup_updates}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
