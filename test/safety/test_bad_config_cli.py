"""Invalid values for every `resfit-ros` verb and in every node section of the graphs' parameter
files: exit code 2, ONE clear line naming the key/value (no traceback), nothing written.

The verbs and the nodes run in-process through `resfit_ros.cli.main` (a node is exactly what
`resfit-ros node <executable> --ros-args ...` runs: rclpy.init, the node, its config check); one
subprocess per kind checks the same at the process level.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from resfit_ros.robot import config_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def keep_signals():
    """run() installs its own SIGINT/SIGTERM handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _tree(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    from resfit_ros.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:   # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err


def _message_lines(err: str) -> list[str]:
    """stderr without argparse's usage block (context, not the message)."""
    return [line for line in err.splitlines()
            if line.strip() and not line.startswith("usage:") and not line.startswith(" ")]


def _check(code, err, fragments, tmp_path, before):
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    lines = _message_lines(err)
    assert len(lines) == 1, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert _tree(tmp_path) == before, "something was written"


# --- the graphs' parameter files: each node section with an unknown key, a wrong type, a value out of range ---
OUT_OF_RANGE = {"sim_robot": ("control_rate_hz", -20.0), "synchronizer": ("image_size", 4),
                "episode_manager": ("homing_speed_fraction", 1.5), "judge": ("max_steps", -4),
                "base_chunk_server": ("num_threads", 0), "residual_policy": ("chunk_length", 0),
                "recorder": ("finish_delay_s", 99.0), "learner": ("utd", 0)}


def _wrong_type(value):
    if isinstance(value, bool):
        return "maybe"
    if isinstance(value, (int, float)):
        return "fast"
    if isinstance(value, str):
        return 42
    return "not_a_list"


def _config_cases():
    cases = []
    for fname in ("sim.yaml", "real.yaml", "robot_sim.yaml"):
        doc = yaml.safe_load((config_dir() / fname).read_text())
        for section, block in doc.items():
            section = section.removeprefix("/**/")           # the node in any namespace
            params = block["ros__parameters"]
            first = next(iter(params))
            cases.append(pytest.param(fname, section, "bogus_key", 1, id=f"{fname}-{section}-unknown_key"))
            cases.append(pytest.param(fname, section, first, _wrong_type(params[first]),
                                      id=f"{fname}-{section}-wrong_type"))
            key, value = OUT_OF_RANGE[section]
            cases.append(pytest.param(fname, section, key, value, id=f"{fname}-{section}-out_of_range"))
    return cases


@pytest.mark.parametrize("fname,section,key,value", _config_cases())
def test_bad_value_in_a_node_section_stops_the_node_with_one_line(fname, section, key, value, tmp_path, capsys,
                                                                   ros_domain, keep_signals):
    key_of_node = f"/**/{section}"
    doc = yaml.safe_load((config_dir() / fname).read_text())
    doc = {key_of_node: doc[key_of_node]}
    doc[key_of_node]["ros__parameters"][key] = value
    bad = tmp_path / f"bad_{fname}"
    bad.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    argv = ["node", section, "--ros-args", "--params-file", str(bad)]
    if section == "base_chunk_server":
        argv += ["-p", f"base_artifact:={tmp_path / 'base.safetensors'}"]
    if section in ("recorder", "learner"):
        argv += ["-p", f"output_dir:={out}"]
    before = _tree(tmp_path)
    code, err = _run_cli(argv, capsys)
    shown = repr(value) if isinstance(value, str) else str(value)
    named = ["unknown key", key] if key == "bogus_key" else [key, shown]
    _check(code, err, ["[FATAL] configuration error"] + named, tmp_path, before)


def test_a_bad_config_file_stops_a_node_process_with_one_line(tmp_path, ros_domain):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recorder:\n  ros__parameters:\n    finish_delay_s: 99.0\n")
    r = subprocess.run([sys.executable, "-m", "resfit_ros.cli", "node", "recorder", "--ros-args", "--params-file",
                        str(bad), "-p", f"output_dir:={tmp_path / 'out'}"], cwd=REPO, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "[FATAL] configuration error: node 'recorder' parameters: finish_delay_s must be in [0, 10], got 99.0"]
    assert not (tmp_path / "out").exists()


# --- every verb with invalid values -------------------------------------------------------------------------
CLI_CASES = [
    (["nope"], ["invalid choice: 'nope'"]),
    (["node", "nope"], ["unknown node 'nope'"]),
    (["node", "judge", "--ros-args", "-p", "max_steps:="], ["max_steps", "key:=value"]),
    (["node", "judge", "--ros-args", "-p", "max_steps:=[1"], ["max_steps:=[1", "YAML"]),
    (["node", "judge", "--ros-args", "--params-file", "{tmp}/missing.yaml"], ["missing.yaml"]),
    (["node", "judge", "--ros-args", "-p", "eval_every:=-1"], ["eval_every", "-1"]),
    (["node", "recorder", "--ros-args", "-p", "output_dir:={tmp}/out", "-p", "compres:=true"], ["compres"]),
    (["node", "sim_robot", "--ros-args", "-p", "lockstep:=false"], ["publish_clock must be false", "lockstep"]),
    (["node", "sim_robot", "--ros-args", "-p", "lockstep:=false", "-p", "publish_clock:=false", "-p",
      "use_sim_time:=true"], ["use_sim_time must be false", "lockstep"]),
    (["node", "sim_robot", "--ros-args", "-p", "camera_latency_s:=-0.01"], ["camera_latency_s", "-0.01"]),
    (["node", "sim_robot", "--ros-args", "-p", "joint_state_rate_hz:=0.0"], ["joint_state_rate_hz", "0.0"]),
    (["launch", "nope"], ["unknown graph 'nope'"]),
    (["launch", "robot_sim", "sim_config:={tmp}/none.yaml", "base_artifact:={file}"], ["sim_config", "no such file"]),
    (["launch", "echo_pair", "wrong:=1", "--show"], ["wrong"]),
    (["launch", "echo_pair", "novalue", "--show"], ["novalue", "key:=value"]),
    (["launch", "train_sim", "episodez:=3", "--show"], ["episodez"]),
    (["launch", "train_sim", "use_sim_time:=yes", "--show"], ["use_sim_time", "'yes'", "true or false"]),
    (["launch", "train_sim", "max_steps:=-5", "--show"], ["max_steps", "'-5'"]),
    (["launch", "eval", "episodes:=2.5", "--show"], ["episodes", "'2.5'"]),
    (["launch", "train_sim", "base_artifact:={tmp}/none.safetensors", "--pid-dir", "{tmp}/pids"],
     ["base_artifact", "none.safetensors", "no such file"]),
    (["launch", "eval", "base_artifact:={file}", "residual_checkpoint:={tmp}/gone"], ["residual_checkpoint", "gone"]),
    (["demos", "--task", "g1_pick_lift", "--episodes", "-3", "--out", "{tmp}/d"], ["--episodes", "-3"]),
    (["demos", "--task", "g1_pick_lift", "--episodes", "2", "--out", "{tmp}/d", "--control-hz", "nan"],
     ["--control-hz", "nan"]),
    (["train-bc", "--demos", "{tmp}", "--out", "{tmp}/b.safetensors", "--lr", "-1"], ["--lr", "-1"]),
    (["train-bc", "--demos", "{tmp}", "--out", "{tmp}/b.safetensors", "--chunk", "0"], ["--chunk", "0"]),
    (["eval", "--task", "g1_pick_lift", "--policy", "scripted", "--episodes", "0"], ["--episodes", "0"]),
    (["eval", "--task", "g1_pick_lift", "--policy", "scripted", "--threads", "0"], ["--threads", "0"]),
    (["eval", "--task", "g1_pick_lift", "--base", "{file}", "--residual-bound", "-1"], ["--residual-bound", "-1"]),
    (["train-offline", "--demos", "{tmp}/missing", "--base", "{file}", "--out", "{tmp}/o"], ["--demos", "missing"]),
    (["train-offline", "--demos", "{tmp}", "--base", "{tmp}/none.safetensors", "--out", "{tmp}/o"], ["--base"]),
    (["train-offline", "--demos", "{tmp}", "--base", "{file}", "--out", "{file}"], ["--out", "not a directory"]),
    (["train-offline", "--demos", "{tmp}", "--base", "{file}", "--out", "{tmp}/o", "--demo-fraction", "2"],
     ["demo_fraction", "2"]),
    (["train-offline", "--demos", "{tmp}", "--base", "{file}", "--out", "{tmp}/o", "--gamma", "nan"], ["gamma", "nan"]),
    (["train-offline", "--demos", "{tmp}", "--base", "{file}", "--out", "{tmp}/o", "--steps", "0"], ["--steps", "0"]),
    (["train-offline", "--demos", "{tmp}", "--base", "{file}", "--out", "{tmp}/o", "--residual-bound", "0.1", "-0.2"],
     ["residual_bound", "-0.2"]),
    (["bags", "{tmp}/missing"], ["not a directory", "missing"]),
    (["bags", "summary", "{tmp}", "--window", "0"], ["--window", "0"]),
    (["operator", "--timeout", "0"], ["--timeout", "0"]),
    (["operator", "--timeout", "nan"], ["--timeout", "nan"]),
    (["main-job", "--minutes", "nan", "--out", "{tmp}/mj"], ["--minutes", "nan"]),
    (["main-job", "--minutes", "-1", "--out", "{tmp}/mj"], ["--minutes", "-1"]),
    (["main-job", "--eval-every", "-2", "--out", "{tmp}/mj"], ["--eval-every", "-2"]),
    (["main-job", "--base-demos", "9", "--demos", "3", "--out", "{tmp}/mj"], ["--base-demos", "9"]),
    (["main-job", "--out", "{file}"], ["--out", "not a directory"]),
    (["main-job", "--demos", "0"], ["--demos", "0"]),
    (["main-job", "--snapshot-every", "-1", "--out", "{tmp}/mj"], ["--snapshot-every", "-1"]),
    (["bench", "nope"], ["no benchmark 'nope'"]),
]


@pytest.mark.parametrize("argv,fragments", CLI_CASES, ids=[" ".join(a[:3]) + f" #{i}" for i, (a, _) in
                                                           enumerate(CLI_CASES)])
def test_every_verb_refuses_invalid_values_with_one_line(argv, fragments, tmp_path, capsys, monkeypatch, ros_domain,
                                                        keep_signals):
    monkeypatch.chdir(tmp_path)          # a verb that got past its checks would write under the cwd too
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    before = _tree(tmp_path)
    code, err = _run_cli([a.format(tmp=tmp_path, file=afile) for a in argv], capsys)
    _check(code, err, fragments, tmp_path, before)


def test_a_bad_ros_argument_stops_a_node_process_with_one_line(tmp_path, ros_domain):
    r = subprocess.run([sys.executable, "-m", "resfit_ros.cli", "node", "judge", "--ros-args", "-p", "max_steps:="],
                       cwd=REPO, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == ["[FATAL] bad --ros-args: -p 'max_steps:=': expected key:=value"]
