"""get_weights / load_weights: the only channel between learner and policy node."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from resfit_ros.learning import ResidualPolicy
from test.learning.conftest import ACTION_DIM, CAMERAS, FEATURE_DIM, IMAGE, STATE_DIM, filled_buffer, make_agent


def trained():
    agent = make_agent()
    buffer = filled_buffer()
    for _ in range(5):
        agent.update(buffer.sample(8), update_actor=True)
    return agent


def bad_variants(weights):
    name = next(k for k in weights if k.startswith("actor."))
    wrong_shape = dict(weights, **{name: np.zeros(weights[name].shape[:-1] + (weights[name].shape[-1] + 1,),
                                                   np.float32)})
    nan = dict(weights, **{name: np.full(weights[name].shape, np.nan, np.float32)})
    missing = {k: v for k, v in weights.items() if k != name}
    float64 = dict(weights, **{name: weights[name].astype(np.float64)})
    extra = dict(weights, **{"actor.unknown": np.zeros(2, np.float32)})
    bad_std = dict(weights, **{"normaliser.state_std": np.zeros(STATE_DIM, np.float32)})
    return [("shape", wrong_shape), ("NaN", nan), ("missing", missing), ("float32", float64),
            ("unexpected", extra), ("state_std", bad_std)]


@pytest.mark.parametrize("target", ["agent", "policy"])
def test_load_weights_rejects_bad_weights_and_keeps_the_old_ones(target):
    agent = trained()
    weights = agent.get_weights()
    receiver = make_agent(seed=9) if target == "agent" else \
        ResidualPolicy(agent.config, STATE_DIM, ACTION_DIM, CAMERAS, IMAGE, FEATURE_DIM, weights)
    before = receiver.get_weights()
    for expected_message, bad in bad_variants(weights):
        with pytest.raises(ValueError, match=expected_message):
            receiver.load_weights(bad)
        after = receiver.get_weights()
        assert all(np.array_equal(before[k], after[k]) for k in before), expected_message


def test_weights_round_trip_and_policy_matches_the_agents_actor():
    agent = trained()
    weights = agent.get_weights()
    assert all(v.dtype == np.float32 for v in weights.values())
    assert {k.split(".")[0] for k in weights} == {"actor", "encoder", "normaliser"}
    policy = ResidualPolicy(agent.config, STATE_DIM, ACTION_DIM, CAMERAS, IMAGE, FEATURE_DIM, weights)
    assert all(np.array_equal(v, policy.get_weights()[k]) for k, v in weights.items())
    other = make_agent(seed=4)
    other.load_weights(weights)
    assert all(np.array_equal(v, other.get_weights()[k]) for k, v in weights.items())
    # the policy's residual equals the agent's actor on the same (unaugmented) observation
    batch = filled_buffer().sample(1)
    state = batch.obs["state"][0].numpy()
    base = batch.base_action[0].numpy()
    images = batch.obs["images"][0].numpy()
    features = batch.obs["features"][0].numpy()
    residual = policy.act(state, base, images, features)
    with torch.no_grad():
        encoded = agent.encoder(batch.obs, augment=False)
        base_n = agent._normalise_action(batch.base_action)
        r = agent.actor(torch.cat([encoded, agent._normalise_state(batch.obs["state"]), base_n.clamp(-1, 1)], 1))
        command = ((base_n + r).clamp(-1, 1) * agent._action_half_range + agent._action_center)[0].numpy()
    np.testing.assert_allclose(base + residual, command, rtol=1e-5, atol=1e-5)
    assert np.abs(residual).max() > 0                 # trained: no longer the zero residual


def test_policy_needs_weights_and_checks_image_shapes():
    agent = make_agent()
    policy = ResidualPolicy(agent.config, STATE_DIM, ACTION_DIM, CAMERAS, IMAGE, FEATURE_DIM)
    with pytest.raises(RuntimeError, match="load_weights"):
        policy.act(np.zeros(STATE_DIM), np.zeros(ACTION_DIM))
    policy.load_weights(agent.get_weights())
    with pytest.raises(ValueError, match="images must be uint8"):
        policy.act(np.zeros(STATE_DIM), np.zeros(ACTION_DIM), np.zeros((2, 3, 8, 8), np.uint8),
                   np.zeros(FEATURE_DIM))


def test_resize_image_stack_keeps_layout_and_dtype():
    from resfit_ros.learning.policy import resize_image_stack
    images = np.zeros((2, 3, 48, 64), np.uint8)
    images[:, 0] = 200
    out = resize_image_stack(images, IMAGE)
    assert out.shape == (2, 3, IMAGE, IMAGE) and out.dtype == np.uint8
    assert (out[:, 0] == 200).all() and (out[:, 1:] == 0).all()
    assert resize_image_stack(out, IMAGE) is out
    with pytest.raises(ValueError, match="uint8"):
        resize_image_stack(images.astype(np.float32), IMAGE)


@pytest.mark.parametrize("cameras,features", [(True, True), (True, False), (False, True), (False, False)])
def test_encode_one_is_forward_on_one_observation_also_after_new_weights(cameras, features):
    # the control tick's fast path must compute exactly what the critic trained the actor on
    agent = make_agent(cameras=cameras, features=features)
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.integers(0, 256, (len(CAMERAS), 3, IMAGE, IMAGE), dtype=np.uint8))
    feats = torch.from_numpy(rng.normal(0, 3, FEATURE_DIM).astype(np.float32))
    feats[0] = 1e6                                      # beyond FEATURE_CLIP: clamped on both paths
    obs = {}
    if cameras:
        obs["images"] = images[None]
    if features:
        obs["features"] = feats[None]
    encoder = agent.encoder.eval()
    for _ in range(2):
        with torch.inference_mode():
            fast = encoder.encode_one(images if cameras else None, feats if features else None)
            slow = encoder(obs, augment=False) if obs else torch.zeros(1, 0)
        assert fast.shape == slow.shape == (1, encoder.output_dim)
        torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-6)
        assert encoder.output_dim == 0 or fast.abs().max() > 0
        with torch.no_grad():                            # new weights, copied in place as load_weights does
            encoder.load_state_dict({k: v * 1.5 + 0.01 for k, v in encoder.state_dict().items()})
