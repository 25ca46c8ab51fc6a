"""The spec that travels with the weights: JSON round trip, and what a residual trained on the base's
image features needs from the node that runs it."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from resfit_ros.core.policy_spec import PolicySpec, camera_problem


def _spec(**kw):
    values = dict(agent_config={"hidden_dim": 8}, state_dim=58, action_dim=29, camera_names=(), image_size=(84, 84),
                  feature_dim=128, base_digest="a1b2c3d4e5f60718")
    values.update(kw)
    return PolicySpec(**values)


def test_the_spec_round_trips_through_json_and_an_older_learners_spec_still_reads():
    spec = _spec()
    assert PolicySpec.from_json(spec.to_json()) == spec
    older = json.loads(spec.to_json())
    del older["base_digest"]                              # a learner from before the field existed
    assert PolicySpec.from_json(json.dumps(older)) == _spec(base_digest="")
    with pytest.raises(ValueError, match="malformed policy spec"):
        PolicySpec.from_json(json.dumps({**older, "unexpected": 1}))
    with pytest.raises(ValueError, match="malformed policy spec"):
        PolicySpec.from_json(json.dumps({k: v for k, v in older.items() if k != "feature_dim"}))


def test_weights_on_base_features_run_only_with_that_very_base():
    spec = _spec()
    base = SimpleNamespace(feature_dim=128)
    assert spec.feature_base_problem(base, "a1b2c3d4e5f60718") is None
    assert spec.feature_base_problem(None, "")[1] == "no_base"
    text, reason = spec.feature_base_problem(base, "ffffffffffffffff")
    assert reason == "base_mismatch" and "a1b2c3d4e5f60718" in text and "ffffffffffffffff" in text
    assert spec.feature_base_problem(SimpleNamespace(feature_dim=64), "a1b2c3d4e5f60718")[1] == "base_mismatch"
    # a checkpoint does not name its base: then only the encoder's width is checked
    assert _spec(base_digest="").feature_base_problem(base, "anything") is None


def test_of_agent_names_the_base_only_for_weights_that_read_its_features():
    agent = SimpleNamespace(config=SimpleNamespace(hidden_dim=8), state_dim=58, action_dim=29, camera_names=[],
                            image_size=(84, 84), feature_dim=0)
    assert PolicySpec.of_agent(agent, "a1b2").base_digest == ""
    agent.feature_dim = 128
    assert PolicySpec.of_agent(agent, "a1b2").base_digest == "a1b2"


def test_a_missing_or_resized_camera_is_named():
    img = np.zeros((84, 84, 3), np.uint8)
    assert camera_problem(["head"], 84, {"head": img}) is None
    assert camera_problem(["head"], (84, 84), {"head": img}) is None
    assert "no image from camera 'wrist'" in camera_problem(["wrist"], 84, {"head": img})[1]
    assert "64x64" in camera_problem(["head"], 84, {"head": np.zeros((64, 64, 3), np.uint8)})[1]
