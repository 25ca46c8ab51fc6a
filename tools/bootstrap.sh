#!/usr/bin/env bash
# Set up everything resfit_ros needs on a machine with no ROS install: a venv in .venv with the
# ROS 2 Kilted wheels, CPU torch, MuJoCo and the rest, our msg/srv built into the venv, and the
# resfit_ros Python package installed (editable) next to the generated interfaces.
# Idempotent: each step is skipped when its stamp is newer than its inputs; a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3}
stamp() { echo "$VENV/.stamp-$1"; }
newer_than() {  # newer_than STAMP FILE...: true when STAMP exists and is newer than every FILE
  local s=$1; shift
  [ -e "$s" ] || return 1
  for f in "$@"; do [ "$f" -nt "$s" ] && return 1; done
  return 0
}

# Headless software rendering for MuJoCo (EGL through Mesa llvmpipe); present on these machines,
# installed here when missing and we may (root with apt).
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[bootstrap] installing Mesa EGL (software rendering for the simulated cameras)"
    (apt-get update -qq && apt-get install -y -qq libegl-mesa0 libgl1-mesa-dri libegl1 >/dev/null) \
      || echo "[bootstrap] WARNING: could not install Mesa EGL; camera rendering will fail"
  else
    echo "[bootstrap] WARNING: Mesa EGL (libegl-mesa0, libgl1-mesa-dri) not found; camera rendering will fail"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

if ! newer_than "$(stamp deps)" requirements.txt; then
  echo "[bootstrap] installing Python dependencies (about a minute on a cold machine)"
  python -m pip install -q --upgrade pip wheel setuptools
  python -m pip install -q -r requirements.txt
  touch "$(stamp deps)"
fi

# The generator wheels carry the include paths of the machine that built them.
if ! newer_than "$(stamp cmakefix)" "$(stamp deps)"; then
  PYINC=$(python -c "import sysconfig;print(sysconfig.get_paths()['include'])")
  NPINC=$(python -c "import numpy;print(numpy.get_include())")
  grep -rl '/opt/python/cp3' "$VENV/share" --include='*.cmake' | xargs -r sed -E -i \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g"
  touch "$(stamp cmakefix)"
fi

IFACE_INPUTS=(CMakeLists.txt package.xml msg/*.msg srv/*.srv)
if ! newer_than "$(stamp interfaces)" "${IFACE_INPUTS[@]}" || ! python -c "import resfit_ros.msg" 2>/dev/null; then
  echo "[bootstrap] building msg/ and srv/ into the venv"
  export AMENT_PREFIX_PATH=$VENV
  rm -rf build/interfaces; mkdir -p build
  cmake -S . -B build/interfaces -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DBUILD_TESTING=OFF -DRESFIT_INSTALL_PYTHON=OFF -DPython3_EXECUTABLE="$VENV/bin/python" >build/cmake.log 2>&1 \
    || { tail -40 build/cmake.log; exit 1; }
  cmake --build build/interfaces -j2 >>build/cmake.log 2>&1 || { tail -40 build/cmake.log; exit 1; }
  cmake --install build/interfaces >>build/cmake.log 2>&1 || { tail -40 build/cmake.log; exit 1; }
  # The generated resfit_ros/ in site-packages must not shadow the hand-written package: without
  # its __init__.py it is only a namespace portion, found by pkgutil.extend_path in ours.
  SITE=$(python -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")
  # Its egg-info must go too, or pip would take it for an older resfit_ros and delete the directory.
  rm -rf "$SITE/resfit_ros/__init__.py" "$SITE"/resfit_ros-*.egg-info
  touch "$(stamp interfaces)"
fi

if ! newer_than "$(stamp package)" setup.py || ! command -v resfit-ros >/dev/null; then
  echo "[bootstrap] installing resfit_ros (editable)"
  python -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
  touch "$(stamp package)"
fi
python -c "import rclpy, torch, mujoco, resfit_ros.msg, resfit_ros.srv" \
  || { echo "[bootstrap] FAILED: the environment does not import"; exit 1; }
echo "[bootstrap] ready: $VENV"
