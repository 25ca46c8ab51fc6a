"""pip install of the Python half of resfit_ros (used by tools/bootstrap.sh on machines without ROS).

On a ROS 2 machine colcon builds CMakeLists.txt instead (ament_cmake + ament_cmake_python), which
generates the interfaces and installs this same package, the node executables, launch/ and config/.

resfit_ros_testing (test and bench tooling: the bad-input catalogue, the hold base) is installed
here as a package, for the venv's tests and benches; colcon builds from CMakeLists.txt (build type
ament_cmake), never from this file, and puts it beside bench/ in share/resfit_ros only, off the
Python path (test/ros/test_cmake_install.py checks both).
"""
from setuptools import find_packages, setup

setup(
    name="resfit_ros",
    version="0.1.0",
    description="Residual off-policy RL (ResFiT) for frozen BC policies as a ROS 2 stack",
    packages=find_packages(include=["resfit_ros", "resfit_ros.*", "resfit_ros_testing", "resfit_ros_testing.*"]),
    python_requires=">=3.10",
    entry_points={"console_scripts": ["resfit-ros = resfit_ros.cli:main"]},
)
