"""CMakeLists.txt builds and installs the whole package the way colcon does on a ROS 2 machine
(RESFIT_INSTALL_PYTHON=ON): generated interfaces AND the Python package in one site-packages
directory, one launcher per node in lib/resfit_ros (`ros2 run`), launch/ and config/ in share/.
The installed launcher then runs a node from the install space, not from this source tree.
The test and bench tooling (resfit_ros_testing/) is not part of the installed Python package: it
goes to share/resfit_ros beside bench/, for `resfit-ros bench` only."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resfit_ros.graph import NODE_EXECUTABLES
from test.support import stop_process

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)


@pytest.mark.skipif(not (VENV / "share" / "rosidl_default_generators").is_dir(),
                    reason="needs the ROS 2 generator wheels installed by tools/bootstrap.sh")
def test_cmake_install_gives_the_ros_layout_and_runs(tmp_path, ros_domain):
    src = tmp_path / "src" / "resfit_ros"   # a workspace outside the source tree, like colcon's
    src.mkdir(parents=True)
    # what colcon sees of the package directory, with setup.py and the test tooling beside it
    for item in ("CMakeLists.txt", "package.xml", "setup.py", "msg", "srv", "resfit_ros", "resfit_ros_testing",
                 "launch", "config", "bench"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, src / item)
    install = tmp_path / "install"
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV))
    for cmd in (["cmake", "-S", str(src), "-B", str(tmp_path / "build"), f"-DCMAKE_PREFIX_PATH={VENV}",
                 f"-DCMAKE_INSTALL_PREFIX={install}", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
                ["cmake", "--build", str(tmp_path / "build"), "-j2"],
                ["cmake", "--install", str(tmp_path / "build")]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    assert sorted(p.name for p in (install / "lib" / "resfit_ros").iterdir()) == sorted(NODE_EXECUTABLES)
    share = install / "share" / "resfit_ros"
    assert (share / "launch" / "train_real.launch.py").is_file() and (share / "config" / "sim.yaml").is_file()
    assert (share / "msg" / "Observation.msg").is_file() and (share / "package.xml").is_file()
    site = next((install / "lib").glob("python3*/site-packages"))
    pkg = site / "resfit_ros"
    assert (pkg / "msg" / "_observation.py").is_file() and (pkg / "nodes" / "learner.py").is_file()
    assert "extend_path" in (pkg / "__init__.py").read_text()
    # test and bench tooling stays out of the installed Python package; the benchmarks find it in share/
    shipped = sorted(str(p.relative_to(install)) for p in site.rglob("*")
                     if p.name == "faults" or p.name.startswith("resfit_ros_testing"))
    assert not shipped, shipped
    assert not (pkg / "policy" / "hold.py").exists()
    share = install / "share" / "resfit_ros"
    assert (share / "bench" / "faults.py").is_file() and (share / "resfit_ros_testing" / "bad_inputs.py").is_file()

    # what `source install/setup.bash && ros2 run resfit_ros echo_observation` does
    # the ROS wheels' bootstrapper re-executes Python with its library dirs appended; let it run
    base_env = {k: v for k, v in os.environ.items() if k != "_ROS_WHEELS_BOOTSTRAP_COMPLETE"}
    run_env = dict(base_env, PYTHONPATH=str(site),
                   LD_LIBRARY_PATH=f"{install / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}",
                   AMENT_PREFIX_PATH=f"{install}:{VENV}", ROS_DOMAIN_ID=str(ros_domain), PYTHONUNBUFFERED="1")
    probe = subprocess.run([sys.executable, "-c", "import resfit_ros.nodes, resfit_ros.robot as r; "
                            "import resfit_ros.jobs.bench as b; "
                            "print(resfit_ros.nodes.__file__); print(r.config_dir()); print(b.bench_dir())"],
                           env=run_env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert probe.returncode == 0, probe.stderr
    node_file, cfg, bench = probe.stdout.split()
    assert node_file.startswith(str(site)) and cfg == str(share / "config")
    assert bench == str(share / "bench") and (share / "bench" / "residual_gain.py").is_file()
    log = tmp_path / "node.log"
    proc = subprocess.Popen([sys.executable, str(install / "lib" / "resfit_ros" / "echo_observation")],
                            env=run_env, cwd=tmp_path, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "relaying" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert "relaying" in log.read_text(), log.read_text()
    finally:
        assert stop_process(proc) in (0, -2)
