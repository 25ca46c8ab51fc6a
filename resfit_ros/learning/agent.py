"""The residual TD3 agent (ResFiT): critic ensemble + residual actor on top of a frozen base policy.

One `update(batch, update_actor)` is one critic update and, if asked (and past the critic-only
warm-up), one actor update on the same batch. `train_iteration` is the learner's unit of work:
UTD critic updates, the last of which also updates the actor (ResFiT: UTD 4, 1 actor update per
env step).

Read top to bottom; shapes: B batch, N critic heads, S state, A action, E encoder features.

Decisions worth knowing (ResFiT = paper + reference code; see shared notes/resfit-algorithm.md):
  * Critic input = [encoder features, normalised state, COMBINED action] where the combined action
    is clamp(normalised base + residual, -1, 1), exactly as executed; demo transitions therefore
    store the demo command as action. The critic does not see the base action.
  * Actor loss = -mean over heads of Q(s, combined) [+ residual_penalty * sum_j (r_j / bound_j)^2,
    off by default; see AgentConfig.residual_penalty for why the main job's recipe uses it].
  * Critic loss = sum over heads of each head's MSE to the shared TD target. The reference squares
    the mean-over-heads absolute error instead, which couples the heads (every head's gradient then
    depends on the other heads' errors) and divides the effective learning rate by ~N. Per-head MSE
    trains each head as if alone (REDQ), keeping the ensemble's independence that the min-over-2
    target relies on. The logged `losses/critic` is the MEAN over heads (comparable across N).
  * TD target: min over `num_target_heads` (2) random heads of the TARGET critic, evaluated on those
    heads only. Target action: target actor + clipped Gaussian smoothing noise (std =
    exploration_std, times the joint's residual gain; none during the critic warm-up, as ResFiT),
    residual clamped to +-action_scale * gain, combined clamped to [-1, 1].
  * One encoder, no target encoder: the target critic reads the online encoder's features of the
    next observation (computed without gradient). Obs and next obs get independent random shifts.
  * Only the critic loss trains the encoder; the actor sees DETACHED features. The actor update
    reuses the features computed for the critic update of the same batch (as DrQ-v2 does), saving
    one encoder pass per iteration.
  * All randomness of an update (augmentation, smoothing noise, head choice) comes from the
    agent's own torch.Generator, which is checkpointed: a resumed agent makes the identical update.
"""
from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resfit_ros.config import config_from_dict, config_to_dict
from resfit_ros.learning.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from resfit_ros.learning.config import AgentConfig
from resfit_ros.learning.networks import CriticEnsemble
from resfit_ros.learning.normaliser import Normaliser, residual_bounds
from resfit_ros.learning.policy import (build_actor, build_encoder, expected_weight_shapes, export_weights,
                                        load_modules, validate_weights)
from resfit_ros.learning.replay import Batch, ReplayBuffer
from resfit_ros.names import LOSS_ACTOR, LOSS_CRITIC, OBS_STATE, Q_MEAN

# Extra learner metrics (same naming scheme as resfit_ros/names.py).
TARGET_MEAN = "values/target_mean"
RESIDUAL_ABS_MEAN = "values/residual_abs_mean"      # mean |residual| in normalised units
CRITIC_GRAD_NORM = "grad_norms/critic"              # before clipping
ACTOR_GRAD_NORM = "grad_norms/actor"                # before clipping
LOSS_DEMO_BC = "losses/demo_bc"                     # the actor's regression onto the demos' residual
LOSS_INTERVENTION_BC = "losses/intervention_bc"     # ... onto the operator's corrections
CRITIC_UPDATES = "counters/critic_updates"
ACTOR_UPDATES = "counters/actor_updates"

CHECKPOINT_KIND = "resfit_residual_agent"


class ResidualAgent:
    """Residual TD3 learner. Not thread-safe: one learner thread calls update()."""

    def __init__(self, config: AgentConfig, state_dim: int, action_dim: int,
                 camera_names: list[str] | tuple[str, ...], image_size: tuple[int, int] | int,
                 feature_dim: int, normaliser: Normaliser, seed: int = 0, device: str = "cpu"):
        self.device = check_device(device)
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if normaliser.state_dim != state_dim or normaliser.action_dim != action_dim:
            raise ValueError(f"normaliser is for state/action dims {normaliser.state_dim}/{normaliser.action_dim}, "
                             f"agent has {state_dim}/{action_dim}")
        if abs(normaliser.action_scale - config.action_scale) > 1e-6 * max(1.0, config.action_scale):
            raise ValueError(f"normaliser was widened with action_scale {normaliser.action_scale:g}, "
                             f"config.action_scale is {config.action_scale:g}: use the same value")
        self.config = config
        self.state_dim, self.action_dim = state_dim, action_dim
        self.camera_names = list(camera_names)
        self.image_size = tuple(image_size)
        self.feature_dim = feature_dim
        self.seed = seed
        self.critic_updates = 0
        self.actor_updates = 0
        self.state_statistics_refit = False   # learning/offline.refit_state_statistics_if_due

        # Networks are initialised from `seed` without touching the global torch RNG.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.encoder = build_encoder(config, len(self.camera_names), self.image_size, feature_dim)
            encoder_dim = self.encoder.output_dim
            self.actor = build_actor(config, encoder_dim, state_dim, action_dim)
            # critic input: [encoder features, normalised state, (normalised base action,) combined action]
            critic_dim = encoder_dim + state_dim + action_dim * (2 if config.critic_sees_base else 1)
            self.critic = CriticEnsemble(critic_dim, config.critic_hidden_dims,
                                         config.num_critic_heads, config.critic_layer_norm)
        for module in (self.encoder, self.actor, self.critic):
            module.to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self._generator = torch.Generator(device=self.device).manual_seed(seed + 1)   # every random draw of update()
        self._set_normaliser(normaliser)

        critic_groups = [{"params": list(self.critic.parameters()), "lr": config.critic_lr}]
        encoder_params = list(self.encoder.parameters())
        if encoder_params:
            critic_groups.append({"params": encoder_params, "lr": config.encoder_lr})
        # fused: one kernel per parameter for the whole AdamW step (2.6x faster than foreach on CPU
        # for the 10-head critic; ~5 % of a critic update).
        self.critic_optimizer = torch.optim.AdamW(critic_groups, weight_decay=config.weight_decay, fused=True)
        self.actor_optimizer = torch.optim.AdamW(self.actor.parameters(), lr=config.actor_lr,
                                                 weight_decay=config.weight_decay, fused=True)
        self._critic_params = list(self.critic.parameters()) + encoder_params
        self._expected_weights = expected_weight_shapes(self.encoder, self.actor, state_dim, action_dim)

    # --- normalisation (torch) ----------------------------------------------------------------
    def _set_normaliser(self, normaliser: Normaliser) -> None:
        self.normaliser = normaliser

        def on_device(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(array, dtype=np.float32)).to(self.device)

        self._state_mean = on_device(normaliser.state_mean)                  # (S,)
        self._state_std = on_device(normaliser.state_std)                    # (S,)
        self._action_center = on_device(normaliser.action_center)            # (A,)
        self._action_half_range = on_device(normaliser.action_half_range)    # (A,)
        self._residual_gain = on_device(normaliser.residual_gain)            # (A,)
        bounds = residual_bounds(self.config.action_scale, normaliser)       # (A,)
        self._residual_scale = on_device(bounds)
        scale = self._residual_scale
        self._inverse_residual_scale = torch.where(scale > 0, 1.0 / scale.clamp(min=1e-12), torch.zeros_like(scale))
        for actor in (self.actor, self.actor_target):
            actor.set_residual_scale(bounds)

    def refit_state_statistics(self, states: np.ndarray, state_min_std: float) -> None:
        """Replace the state statistics with those of `states` (N, S); actions are unchanged."""
        self._set_normaliser(self.normaliser.with_state_statistics(states, state_min_std))
        self.state_statistics_refit = True

    def _normalise_state(self, state: torch.Tensor) -> torch.Tensor:
        clip = self.normaliser.state_clip
        return ((state - self._state_mean) / self._state_std).clamp_(-clip, clip)     # (B, S)

    def _critic_input(self, features, state, base, action) -> torch.Tensor:
        """(B, E + S [+ A] + A): the base's own action too when critic_sees_base (see AgentConfig)."""
        parts = [features, state, base.clamp(-1.0, 1.0), action] if self.config.critic_sees_base \
            else [features, state, action]
        return torch.cat(parts, dim=1)

    def _normalise_action(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self._action_center) / self._action_half_range              # (B, A), unclamped

    # --- the update -----------------------------------------------------------------------------
    def update(self, batch: Batch, update_actor: bool) -> dict[str, float]:
        """One critic update, then (if update_actor and the critic warm-up is over) one actor update.
        Returns scalar statistics keyed by metric name."""
        cfg = self.config
        gen = self._generator
        if self.device != "cpu":
            batch = batch_to(batch, self.device)
        self.encoder.train()
        self.actor.train()

        state = self._normalise_state(batch.obs[OBS_STATE])                      # (B, S)
        next_state = self._normalise_state(batch.next_obs[OBS_STATE])            # (B, S)
        base = self._normalise_action(batch.base_action)                         # (B, A)
        next_base = self._normalise_action(batch.next_base_action)               # (B, A)
        action = self._normalise_action(batch.action).clamp_(-1.0, 1.0)          # (B, A) executed
        reward, discount = batch.nstep_reward, batch.nstep_discount              # (B,), (B,)

        # Encoder pass WITH gradient: the critic loss is the only thing that trains the encoder.
        features = self.encoder(batch.obs, augment=True, generator=gen)          # (B, E)

        # ---- TD target: r + gamma^k * min over 2 random target heads of Q'(s', a') ----
        with torch.no_grad():
            # A second, gradient-free pass for the next observation: cheaper than one pass over
            # [obs; next obs] with gradient (no stored activations, no conv backward over 2B images).
            next_features = self.encoder(batch.next_obs, augment=True, generator=gen)  # (B, E)
            next_residual = self.actor_target(
                torch.cat([next_features, next_state, next_base.clamp(-1.0, 1.0)], dim=1))  # (B, A)
            noise = (torch.randn(next_residual.shape, generator=gen, device=self.device) * cfg.exploration_std).clamp_(
                -cfg.target_noise_clip, cfg.target_noise_clip) * self._residual_gain
            if self.critic_updates < cfg.critic_warmup_updates:
                noise.zero_()   # critic warm-up: value the base's own next action (drawn anyway: same RNG stream)
            next_residual = torch.clamp(next_residual + noise, -self._residual_scale, self._residual_scale)
            next_action = (next_base + next_residual).clamp_(-1.0, 1.0)          # (B, A) as executed
            target_heads = torch.randperm(cfg.num_critic_heads, generator=gen, device=self.device)[: cfg.num_target_heads]
            next_q = self.critic_target(self._critic_input(next_features, next_state, next_base, next_action),
                                        heads=target_heads)                      # (2, B)
            # Every return here lies in [0, 1] (one reward of 1, on a success's last step), so a
            # target outside it is the critic's own error fed back: clamped, a head that dips below 0
            # cannot drag the others down through the min.
            target = (reward + discount * next_q.min(dim=0).values).clamp_(0.0, 1.0)   # (B,)

        # ---- critic: per-head MSE, summed over heads ----
        q = self.critic(self._critic_input(features, state, base, action))       # (N, B)
        per_head_mse = (q - target.unsqueeze(0)).pow(2).mean(dim=1)              # (N,)
        critic_loss = per_head_mse.sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_grad_norm = nn.utils.clip_grad_norm_(self._critic_params, cfg.grad_clip_norm, foreach=True)
        self.critic_optimizer.step()
        self._polyak(self.critic_target, self.critic)
        self.critic_updates += 1

        stats = {LOSS_CRITIC: per_head_mse.mean().item(), Q_MEAN: q.mean().item(),
                 TARGET_MEAN: target.mean().item(), CRITIC_GRAD_NORM: critic_grad_norm.item(),
                 CRITIC_UPDATES: float(self.critic_updates)}

        # ---- actor: maximise the mean over ALL heads of Q(s, clamp(base + residual)), less their spread ----
        if update_actor and self.critic_updates > cfg.critic_warmup_updates:
            detached = features.detach()          # the actor never trains the encoder
            residual = self.actor(torch.cat([detached, state, base.clamp(-1.0, 1.0)], dim=1))  # (B, A)
            combined = (base + residual).clamp(-1.0, 1.0)                        # (B, A) as executed
            q_pi = self.critic(self._critic_input(detached, state, base, combined))  # (N, B)
            # maximise Q; optionally pay for leaving the base (AgentConfig.residual_penalty)
            fraction_of_bound = residual * self._inverse_residual_scale                 # (B, A) in [-1, 1]
            actor_loss = (-actor_objective(q_pi, cfg.actor_pessimism).mean()
                          + cfg.residual_penalty * fraction_of_bound.pow(2).sum(dim=1).mean())
            bc_loss = operator_loss = None
            none = torch.zeros(residual.shape[0], dtype=torch.bool)
            operator = batch.intervention if batch.intervention is not None else none    # (B,) operator's steps
            demo = (batch.demo if batch.demo is not None else none) & ~operator          # (B,) the demos' own
            if cfg.demo_bc_weight > 0 and bool(demo.any()):
                bc_loss = self._regression_onto_command(residual, base, action, demo)
                actor_loss = actor_loss + cfg.demo_bc_weight * bc_loss
            if cfg.intervention_bc_weight > 0 and bool(operator.any()):
                operator_loss = self._regression_onto_command(residual, base, action, operator)
                actor_loss = actor_loss + cfg.intervention_bc_weight * operator_loss
            self.actor_optimizer.zero_grad(set_to_none=True)
            # inputs=: gradients only for the actor; the critic's weights get none.
            actor_loss.backward(inputs=list(self.actor.parameters()))
            actor_grad_norm = nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.grad_clip_norm, foreach=True)
            self.actor_optimizer.step()
            self._polyak(self.actor_target, self.actor)
            self.actor_updates += 1
            stats.update({LOSS_ACTOR: actor_loss.item(), ACTOR_GRAD_NORM: actor_grad_norm.item(),
                          RESIDUAL_ABS_MEAN: residual.detach().abs().mean().item()})
            if bc_loss is not None:
                stats[LOSS_DEMO_BC] = bc_loss.item()
            if operator_loss is not None:
                stats[LOSS_INTERVENTION_BC] = operator_loss.item()
        stats[ACTOR_UPDATES] = float(self.actor_updates)
        return stats

    def _regression_onto_command(self, residual: torch.Tensor, base: torch.Tensor, action: torch.Tensor,
                                 rows: torch.Tensor) -> torch.Tensor:
        """Mean over `rows` of sum_j ((r_j - target_j) / bound_j)^2, target = what the executed
        command did beyond the base (normalised), clamped to the residual's bound."""
        target = torch.clamp(action[rows] - base[rows].clamp(-1.0, 1.0),
                             -self._residual_scale, self._residual_scale)                  # (D, A)
        return ((residual[rows] - target) * self._inverse_residual_scale).pow(2).sum(dim=1).mean()

    def _polyak(self, target: nn.Module, online: nn.Module) -> None:
        # target <- target + tau * (online - target), one vectorised kernel over all tensors
        with torch.no_grad():
            torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), self.config.tau)

    # --- weights for the policy node --------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Everything an inference-only ResidualPolicy needs: actor, encoder, normaliser (float32)."""
        return export_weights(self.encoder, self.actor, self.normaliser)

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Replace actor (and its target), encoder and normaliser. Validates first: on ValueError
        (wrong names, shapes, dtype, non-finite values) nothing changes."""
        normaliser = validate_weights(weights, self._expected_weights, self.config.action_scale)
        load_modules(weights, self.encoder, self.actor)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self._set_normaliser(normaliser)

    # --- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Full learner state (nested, tensors + plain data): networks, targets, optimisers,
        normaliser, counters, RNG states (agent, torch, numpy, python global) and config."""
        np_state = np.random.get_state()
        return {
            "kind": CHECKPOINT_KIND,
            "config": config_to_dict(self.config),
            "dims": {"state_dim": self.state_dim, "action_dim": self.action_dim,
                     "camera_names": list(self.camera_names), "image_size": list(self.image_size),
                     "feature_dim": self.feature_dim, "seed": self.seed},
            "modules": {"encoder": self.encoder.state_dict(), "actor": self.actor.state_dict(),
                        "actor_target": self.actor_target.state_dict(), "critic": self.critic.state_dict(),
                        "critic_target": self.critic_target.state_dict()},
            "optimisers": {"critic": self.critic_optimizer.state_dict(),
                           "actor": self.actor_optimizer.state_dict()},
            "normaliser": self.normaliser.to_arrays(),
            "counters": {"critic_updates": self.critic_updates, "actor_updates": self.actor_updates,
                         "state_statistics_refit": self.state_statistics_refit},
            "rng": {"agent": self._generator.get_state(), "torch": torch.get_rng_state(),
                    "numpy": [np_state[0], np_state[1].astype(np.int64), int(np_state[2]), int(np_state[3]),
                              float(np_state[4])],
                    "python": random.getstate()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict() (also restores the global torch/numpy/python RNG states)."""
        if state.get("kind") != CHECKPOINT_KIND:
            raise CheckpointError(f"not a residual agent checkpoint (kind {state.get('kind')!r})")
        mine = {"state_dim": self.state_dim, "action_dim": self.action_dim,
                "camera_names": list(self.camera_names), "image_size": list(self.image_size),
                "feature_dim": self.feature_dim}
        theirs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in state["dims"].items() if k in mine}
        if theirs != mine:
            raise CheckpointError(f"checkpoint is for {theirs}, this agent is {mine}")
        try:
            for name, module in (("encoder", self.encoder), ("actor", self.actor),
                                 ("actor_target", self.actor_target), ("critic", self.critic),
                                 ("critic_target", self.critic_target)):
                module.load_state_dict(state["modules"][name], strict=True)
            self.critic_optimizer.load_state_dict(state["optimisers"]["critic"])
            self.actor_optimizer.load_state_dict(state["optimisers"]["actor"])
            normaliser = Normaliser.from_arrays(state["normaliser"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not fit this agent's architecture: {exc}") from None
        # The optimisers' learning rates come from THIS agent's config (deliberate change on resume).
        groups = self.critic_optimizer.param_groups
        groups[0]["lr"] = self.config.critic_lr
        if len(groups) > 1:
            groups[1]["lr"] = self.config.encoder_lr
        self.actor_optimizer.param_groups[0]["lr"] = self.config.actor_lr
        self._set_normaliser(normaliser)
        self.critic_updates = int(state["counters"]["critic_updates"])
        self.actor_updates = int(state["counters"]["actor_updates"])
        # checkpoints from before the refit existed: their critic learnt on those statistics, keep them
        self.state_statistics_refit = bool(state["counters"].get("state_statistics_refit", True))
        rng = state["rng"]
        self._generator.set_state(rng["agent"])
        torch.set_rng_state(rng["torch"])
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((kind, np.asarray(keys).astype(np.uint32), pos, has_gauss, cached))
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))

    def save_checkpoint(self, directory: str | Path, keep_last: int = 2) -> Path:
        """Atomic checkpoint under `directory` (see checkpoint.py); returns the written subdirectory."""
        return write_checkpoint(directory, self.state_dict(), keep_last=keep_last)

    def load_checkpoint(self, directory: str | Path) -> Path:
        """Load the latest checkpoint under `directory` (or that checkpoint directory itself).
        Raises CheckpointError if it is missing, corrupt or for another architecture."""
        state, path = read_checkpoint(directory)
        self.load_state_dict(state)
        return path

    @classmethod
    def from_checkpoint(cls, directory: str | Path, device: str = "cpu") -> "ResidualAgent":
        """A new agent built from the config and dims stored in the checkpoint, then loaded."""
        state, _ = read_checkpoint(directory)
        try:
            config = config_from_dict(AgentConfig, state["config"], source=f"checkpoint {directory}")
            dims = state["dims"]
            agent = cls(config, dims["state_dim"], dims["action_dim"], dims["camera_names"],
                        tuple(dims["image_size"]), dims["feature_dim"],
                        Normaliser.from_arrays(state["normaliser"]), seed=dims["seed"], device=device)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {directory}: cannot rebuild the agent ({exc})") from None
        agent.load_state_dict(state)
        return agent


def actor_objective(q: torch.Tensor, pessimism: float) -> torch.Tensor:
    """What the actor maximises per transition: q (N heads, B) -> mean over heads - pessimism * std (B,).
    With one head there is no spread to measure: the mean."""
    value = q.mean(dim=0)
    if pessimism > 0 and q.shape[0] > 1:
        value = value - pessimism * q.std(dim=0)
    return value


def check_device(device: str) -> str:
    """'cpu' or 'cuda' (the first GPU); ValueError naming the problem for anything else, or for
    cuda on a machine (or torch build) without one."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device 'cuda' asked for, but torch {torch.__version__} sees no CUDA device "
                         "on this machine: use device cpu, or run the learner where a GPU is")
    return device


def batch_to(batch: Batch, device: str) -> Batch:
    """The batch's tensors on `device` (the replay buffer gathers on the CPU)."""
    def move(value):
        if isinstance(value, dict):
            return {key: tensor.to(device, non_blocking=True) for key, tensor in value.items()}
        return None if value is None else value.to(device, non_blocking=True)
    return Batch(*(move(value) for value in batch))


def train_iteration(agent: ResidualAgent, buffer: ReplayBuffer, utd: int, update_actor: bool = True,
                    batch_size: int | None = None) -> dict[str, float]:
    """One learner iteration: `utd` critic updates on fresh batches; the LAST one also updates the
    actor (if update_actor; the agent itself skips it until its critic warm-up is over). Returns the
    statistics averaged over the iteration's updates."""
    if utd < 1:
        raise ValueError(f"utd must be >= 1, got {utd}")
    batch_size = batch_size or agent.config.batch_size
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for index in range(utd):
        stats = agent.update(buffer.sample(batch_size), update_actor=update_actor and index == utd - 1)
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + 1
    averaged = {key: totals[key] / counts[key] for key in totals}
    averaged[CRITIC_UPDATES] = float(agent.critic_updates)
    averaged[ACTOR_UPDATES] = float(agent.actor_updates)
    return averaged
