"""`resfit-ros train-offline`: smoke run on tiny data (checkpoint loadable by the agent and by
`resfit-ros eval --residual`), exact --resume, bad arguments (exit 2, nothing written)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from resfit_ros.cli import main
from test.offline.synth import write_online

REPO = Path(__file__).resolve().parents[2]
TINY = ["--hidden-dim", "16", "--num-critic-heads", "2", "--batch-size", "8", "--utd", "2",
        "--critic-warmup-updates", "2", "--no-progress"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return subprocess.run([sys.executable, "-m", "resfit_ros.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """1 scripted sim demo (state only), a 3-step state-only base, 3 synthetic online episodes."""
    root = tmp_path_factory.mktemp("offline")
    demos, base, episodes = root / "demos", root / "base.safetensors", root / "episodes"
    proc = cli("demos", "--task", "g1_pick_lift", "--episodes", "1", "--out", str(demos), "--seed", "0",
               "--no-images")
    assert proc.returncode == 0, proc.stderr
    proc = cli("train-bc", "--demos", str(demos), "--out", str(base), "--state-only", "--steps", "3",
               "--chunk", "4", "--batch-size", "8")
    assert proc.returncode == 0, proc.stderr
    for i in range(3):
        write_online(episodes, i + 1, 6 + i, seed=i, success=bool(i % 2))
    return demos, base, episodes


def _args(data, out, steps, *extra):
    demos, base, episodes = data
    return ["train-offline", "--demos", str(demos), "--episodes", str(episodes), "--base", str(base),
            "--out", str(out), "--steps", str(steps), *TINY, *extra]


def test_smoke_checkpoint_loads_and_evaluates(data, tmp_path, capsys):
    from resfit_ros.learning import ResidualAgent

    out = tmp_path / "out"
    assert main(_args(data, out, 3)) == 0
    text = capsys.readouterr().out
    assert "74 demo + 21 online transitions" in text
    agent = ResidualAgent.from_checkpoint(out / "checkpoints")
    assert agent.critic_updates == 6 and agent.actor_updates == 2 and agent.state_dim == 67
    assert any((out / "tensorboard").iterdir())
    assert main(["eval", "--task", "g1_pick_lift", "--base", str(data[1]), "--residual",
                 str(out / "checkpoints"), "--episodes", "1", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("episodes=1")


def _final_state(out: Path):
    from resfit_ros.learning.checkpoint import read_checkpoint

    state, _ = read_checkpoint(out / "checkpoints")
    return state


def _assert_same(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}.{i}")
    else:
        assert a == b, path


def test_resume_continues_identically(data, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(_args(data, straight, 4)) == 0
    assert main(_args(data, split, 2)) == 0
    mid = _final_state(split)
    assert mid["offline"]["iterations"] == 2 and mid["counters"]["critic_updates"] == 4
    assert main(_args(data, split, 4, "--resume")) == 0
    assert "resumed from" in capsys.readouterr().out
    a, b = _final_state(straight), _final_state(split)
    assert (a["counters"]["critic_updates"], a["counters"]["actor_updates"]) == (8, 3)
    assert a["counters"] == b["counters"]
    _assert_same(a["normaliser"], b["normaliser"])      # a refit state normaliser resumes as it was
    _assert_same(a["modules"], b["modules"])
    _assert_same(a["optimisers"], b["optimisers"])
    _assert_same(a["counters"], b["counters"])
    _assert_same(a["offline"], b["offline"])
    _assert_same(a["rng"]["agent"], b["rng"]["agent"])
    # the resumed run's first update differs from a fresh one's: the weights did move on
    assert not torch.equal(mid["modules"]["critic"][next(iter(mid["modules"]["critic"]))],
                           b["modules"]["critic"][next(iter(b["modules"]["critic"]))])


@pytest.mark.parametrize("change, fragment", [
    ({"--demos": "/nonexistent/demos"}, "--demos"),
    ({"--base": "/nonexistent/base.safetensors"}, "--base"),
    ({"--episodes": "/nonexistent/episodes"}, "--episodes"),
    ({"--gamma": "2"}, "gamma"),
    ({"--resume": None}, "--resume"),
    ({"--steps": "0"}, "positive integer"),
    ({"--base": "DEMO_FILE"}, "base policy"),
])
def test_bad_arguments_exit_2_and_write_nothing(data, tmp_path, capsys, change, fragment):
    out = tmp_path / "out"
    args = _args(data, out, 2)
    for key, value in change.items():
        if value is None:
            args.append(key)
        else:
            if value == "DEMO_FILE":   # an existing file that is not a base policy
                value = str(next(data[0].glob("episode_*/metadata.yaml")))
            if key in args:
                args[args.index(key) + 1] = value
            else:
                args += [key, value]
    try:
        code = main(args)
    except SystemExit as exc:   # argparse type errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("error:") == 1, err
    assert not out.exists()


def test_existing_checkpoints_without_resume_is_an_error(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(data, out, 1)) == 0
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert main(_args(data, out, 2)) == 2
    assert "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


def test_resume_refuses_a_corrupt_newest_checkpoint_and_uses_the_one_before(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(data, out, 2)) == 0
    assert main(_args(data, out, 4, "--resume")) == 0          # a second checkpoint: ckpt-000002
    ckpts = out / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "ckpt-000002"
    tensors = ckpts / "ckpt-000002" / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])   # truncated
    capsys.readouterr()
    assert main(_args(data, out, 6, "--resume")) == 0
    captured = capsys.readouterr()
    assert "refused checkpoint: checkpoint" in captured.err and "ckpt-000002" in captured.err
    assert "corrupt" in captured.err
    assert "resumed from" in captured.out and "ckpt-000001 at iteration 2" in captured.out
    state = _final_state(out)                                  # the new newest checkpoint, from the good one on
    assert state["offline"]["iterations"] == 6
    # every checkpoint corrupt: a clear error, nothing trained
    for d in ckpts.glob("ckpt-*"):
        (d / "meta.json").write_text("{ truncated")
    assert main(_args(data, out, 8, "--resume")) != 0
    assert "cannot resume" in capsys.readouterr().err
