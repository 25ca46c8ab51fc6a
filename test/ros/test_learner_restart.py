"""kill -9 of the learner mid-training: the restarted learner rebuilds the same buffer from the
same bags and continues from its last checkpoint (nothing lost but the updates since it)."""
import re
import signal
import subprocess
import sys
import time

import pytest

from test.offline.synth import write_online
from test.support import node_argv

pytestmark = pytest.mark.ros


def _wait_for(path, pattern, proc, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.findall(pattern, path.read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"no '{pattern}' in the learner log:\n{path.read_text(errors='replace')[-3000:]}")


def test_learner_survives_kill_9(tmp_path, spawn, monkeypatch):
    demos, base = tmp_path / "demos", tmp_path / "base.safetensors"
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", "demos", "--task", "g1_pick_lift", "--episodes", "2",
                    "--out", str(demos), "--no-images", "--no-progress"], check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", "train-bc", "--demos", str(demos), "--out", str(base),
                    "--steps", "20", "--state-only", "--no-progress"], check=True, timeout=300)
    from resfit_ros.bags import read_episode

    joints = read_episode(next(demos.glob("episode_*"))).joint_names
    import test.offline.synth as synth

    monkeypatch.setattr(synth, "JOINTS", list(joints))  # online episodes with the sim robot's joint names
    episodes = tmp_path / "run" / "episodes"
    for i in range(3):
        write_online(episodes, i + 1, 20, seed=i, success=bool(i % 2))
    args = ["-p", f"output_dir:={tmp_path / 'run'}", "-p", f"demos_dir:={demos}", "-p", f"episodes_dir:={episodes}",
            "-p", f"base_artifact:={base}", "-p", "initial_updates:=400", "-p", "checkpoint_every_updates:=100",
            "-p", "critic_warmup_updates:=100", "-p", "batch_size:=32", "-p", "hidden_dim:=32"]
    first = spawn(node_argv("learner", *args), name="learner1")
    replay_line = _wait_for(first.log_path, r"replay: \d+ demo \+ \d+ online transitions", first)[0]
    ckpt = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (ckpt / "latest").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (ckpt / "latest").is_file(), first.log_path.read_text()[-2000:]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    second = spawn(node_argv("learner", *args), name="learner2")
    resumed = int(_wait_for(second.log_path, r"resumed from .* at (\d+) critic updates", second)[0])
    assert resumed >= 100
    assert _wait_for(second.log_path, r"replay: \d+ demo \+ \d+ online transitions", second)[0] == replay_line


def test_learner_reports_an_aborted_and_a_broken_episode_and_trains_on(tmp_path, spawn, monkeypatch):
    """An aborted episode (left out on purpose: logged as info) and a broken one (an error) in the
    same episodes directory: the learner says each once, lists only the broken one as skipped, and
    goes on (a logging call that switched severity crashed it in a loop)."""
    import test.offline.synth as synth

    demos, base = tmp_path / "demos", tmp_path / "base.safetensors"
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", "demos", "--task", "g1_pick_lift", "--episodes", "2",
                    "--out", str(demos), "--no-images", "--no-progress"], check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", "train-bc", "--demos", str(demos), "--out", str(base),
                    "--steps", "20", "--state-only", "--no-progress"], check=True, timeout=300)
    from resfit_ros.bags import read_episode

    monkeypatch.setattr(synth, "JOINTS", list(read_episode(next(demos.glob("episode_*"))).joint_names))
    episodes = tmp_path / "run" / "episodes"
    write_online(episodes, 1, 20, seed=1, success=True)
    aborted_path = write_online(episodes, 2, 20, seed=2, aborted=True)[0]
    broken = episodes / "episode_000003_20260101T000000Z"
    broken.mkdir(parents=True)
    (broken / "metadata.yaml").write_text("not: [a, rosbag2")
    args = ["-p", f"output_dir:={tmp_path / 'run'}", "-p", f"demos_dir:={demos}", "-p", f"episodes_dir:={episodes}",
            "-p", f"base_artifact:={base}", "-p", "critic_warmup_updates:=10", "-p", "batch_size:=32",
            "-p", "hidden_dim:=32", "-p", "random_warmup_steps:=0"]
    learner = spawn(node_argv("learner", *args), name="learner")
    _wait_for(learner.log_path, rf"episode {broken.name} not trained on", learner)
    _wait_for(learner.log_path, rf"episode {aborted_path.name} not trained on: aborted", learner)
    time.sleep(3.0)
    text = learner.log_path.read_text(errors="replace")
    assert learner.poll() is None, text[-3000:]
    assert "Traceback" not in text and "FATAL" not in text, text[-3000:]
    assert re.search(rf"\[ERROR\].*episode {broken.name} not trained on", text), text[-3000:]
    assert re.search(rf"\[INFO\].*episode {aborted_path.name} not trained on: aborted", text), text[-3000:]
