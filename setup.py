"""pip install of the Python half of resfit_ros (used by tools/bootstrap.sh on machines without ROS).

On a ROS 2 machine colcon builds CMakeLists.txt instead (ament_cmake + ament_cmake_python), which
generates the interfaces and installs this same package, the node executables, launch/ and config/.

resfit_ros_testing (test and bench tooling: the bad-input catalogue, the hold base) is installed
here, for the venv's tests and benches, and only here: colcon builds the package from
CMakeLists.txt (build type ament_cmake), never from this file, and CMakeLists.txt installs
resfit_ros/ alone (test/ros/test_cmake_install.py checks the ROS install does not ship it).
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
