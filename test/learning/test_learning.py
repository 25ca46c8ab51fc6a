"""End to end: residual RL fixes a biased base policy on the point-mass task (runs in the normal suite).

Base: a proportional controller with a constant action offset (~20 % success). Demos: the unbiased
controller. With 20 demos, 200 critic-only warm-up updates, then 600 env steps at UTD 2 the
deterministic combined policy must succeed >= 90 % on 50 fixed evaluation seeds. Seeded; ~5 s on one
core. The actor learning rate is far above the real-robot default (3e-4 vs 3e-6): this is a test of
the machinery on a budget, not of the hyperparameters.
"""
from __future__ import annotations

import time

import numpy as np

from resfit_ros.learning import (AgentConfig, Normaliser, ReplayBuffer, ReplayConfig, ResidualAgent,
                                 ResidualPolicy, train_iteration)
from test.learning.toy_env import ACTION_DIM, STATE_DIM, PointMassConfig, PointMassEnv, rollout, success_rate

EVAL_SEEDS = range(1000, 1050)
ENV_STEPS = 600


def test_residual_agent_lifts_a_biased_base_policy_to_90_percent():
    started = time.monotonic()
    seed = 0
    env = PointMassEnv(PointMassConfig())
    demos = [rollout(env, 100_000 + i, expert=True) for i in range(20)]
    assert all(d.success for d in demos)
    config = AgentConfig(action_scale=0.3, exploration_std=0.1, actor_hidden_dims=(64, 64),
                         critic_hidden_dims=(64, 64), num_critic_heads=10, actor_lr=3e-4, critic_lr=3e-4,
                         critic_warmup_updates=200, batch_size=64)
    normaliser = Normaliser.from_demonstrations(
        np.concatenate([d.states for d in demos]),
        np.concatenate([np.concatenate([d.actions, d.base_actions]) for d in demos]), config.action_scale)
    buffer = ReplayBuffer(ReplayConfig(online_capacity=5_000, demo_capacity=1_000), STATE_DIM, ACTION_DIM,
                          seed=seed)
    for d in demos:
        buffer.add_episode(d.states, d.base_actions, d.actions, d.success, demo=True, truncated=d.truncated)
    agent = ResidualAgent(config, STATE_DIM, ACTION_DIM, [], 84, 0, normaliser, seed=seed)
    policy = ResidualPolicy(config, STATE_DIM, ACTION_DIM, [], 84, 0, agent.get_weights())

    def deterministic(state, base):
        return policy.act(state, base)

    base_success = success_rate(env, EVAL_SEEDS, deterministic)
    assert base_success <= 0.3, base_success          # the zero-initialised residual IS the base

    for _ in range(config.critic_warmup_updates):       # critic-only warm-up on the demos
        agent.update(buffer.sample(config.batch_size), update_actor=False)
    rng = np.random.default_rng(seed)
    env_steps = episode = 0
    while env_steps < ENV_STEPS:
        e = rollout(env, 10_000 + episode, lambda s, b: policy.act(s, b, explore=True, rng=rng))
        episode += 1
        buffer.add_episode(e.states, e.base_actions, e.actions, e.success, demo=False, truncated=e.truncated)
        for _ in range(len(e.actions)):                 # one iteration (UTD 2 + 1 actor update) per step
            train_iteration(agent, buffer, utd=2)
        env_steps += len(e.actions)
        policy.load_weights(agent.get_weights())        # the node-to-node channel

    final_success = success_rate(env, EVAL_SEEDS, deterministic)
    elapsed = time.monotonic() - started
    print(f"base {base_success:.2f} -> {final_success:.2f} after {env_steps} env steps in {elapsed:.1f} s")
    assert final_success >= 0.9, final_success
    assert elapsed < 120
