"""The vectorised CDR decoder agrees with rosbags' deserializer on any Observation/StepRecord."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from resfit_ros.bags import convert
from resfit_ros.bags import types as t
from resfit_ros.bags.cdr_fast import (
    WALKED_HASHES, batch_decode, rosbags_observations, rosbags_step_records, walk_observation,
    walk_step_record)
from resfit_ros.core.observation import ObservationData

names_st = st.lists(st.text(alphabet="abcxyz_", min_size=1, max_size=9), min_size=0, max_size=4)


def _same(a, b):
    assert a.meta == b.meta
    assert set(a.fields) == set(b.fields)
    for k in a.fields:
        np.testing.assert_array_equal(a.fields[k], b.fields[k], err_msg=k)


def test_walkers_match_the_current_msg_definitions():
    for msgtype, digest in WALKED_HASHES.items():
        assert t.type_hash(msgtype) == digest, f"{msgtype} changed: update cdr_fast's walker"


@settings(max_examples=40, deadline=None)
@given(dof=st.integers(0, 5), nvel=st.booleans(), cams=st.lists(st.sampled_from(["a", "bb", "ccc"]), unique=True, max_size=3),
       h=st.integers(1, 5), w=st.integers(1, 5), extra_names=names_st, n=st.integers(1, 4),
       frame=st.text(alphabet="xy", max_size=3), nsrc=st.integers(0, 3), seed=st.integers(0, 100))
def test_observation_walker_matches_rosbags(dof, nvel, cams, h, w, extra_names, n, frame, nsrc, seed):
    rng = np.random.default_rng(seed)
    store = t.typestore()
    datas = []
    for i in range(n):
        obs = ObservationData(
            stamp_ns=int(rng.integers(0, 2**40)), sequence=int(rng.integers(0, 2**40)),
            joint_names=[f"j{k}" * (k + 1) for k in range(dof)], position=rng.normal(size=dof),
            velocity=rng.normal(size=dof if nvel else 0),
            images={c: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for c in cams},
            extra=rng.normal(size=len(extra_names)), extra_names=extra_names,
            source_stamps_ns=[int(x) for x in rng.integers(0, 2**40, size=nsrc)])
        msg = convert.observation_msg(obs)
        msg.header.frame_id = frame * (i % 2)
        datas.append(store.serialize_cdr(msg, t.OBSERVATION))
    _same(batch_decode(datas, walk_observation), rosbags_observations(datas))


@settings(max_examples=40, deadline=None)
@given(dof=st.integers(0, 5), has_base=st.booleans(), n=st.integers(1, 4), seed=st.integers(0, 100))
def test_step_record_walker_matches_rosbags(dof, has_base, n, seed):
    rng = np.random.default_rng(seed)
    store = t.typestore()
    datas = []
    for i in range(n):
        sd = convert.StepData(
            step=int(rng.integers(0, 2**31)), observation_sequence=int(rng.integers(0, 2**60)),
            command=rng.normal(size=dof), base_action=rng.normal(size=dof if has_base else 0),
            residual=rng.normal(size=dof if has_base else 0), exploration=bool(rng.integers(2)),
            training_steps=int(rng.integers(0, 2**60)), weights_version=int(rng.integers(0, 2**60)), safety_flags=int(rng.integers(0, 64)),
            latency=float(rng.random()))
        msg = convert.step_record_msg(sd, int(rng.integers(0, 2**31)), int(rng.integers(0, 2**40)),
                                      [f"j{k}" for k in range(dof)])
        datas.append(store.serialize_cdr(msg, t.STEP_RECORD))
    _same(batch_decode(datas, walk_step_record), rosbags_step_records(datas))
