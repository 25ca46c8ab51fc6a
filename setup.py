"""pip install of the Python half of resfit_ros (used by tools/bootstrap.sh on machines without ROS).

On a ROS 2 machine colcon builds CMakeLists.txt instead (ament_cmake + ament_cmake_python), which
generates the interfaces and installs this same package, the node executables, launch/ and config/.
"""
from setuptools import find_packages, setup

setup(
    name="resfit_ros",
    version="0.1.0",
    description="Residual off-policy RL (ResFiT) for frozen BC policies as a ROS 2 stack",
    packages=find_packages(include=["resfit_ros", "resfit_ros.*"]),
    python_requires=">=3.10",
    entry_points={"console_scripts": ["resfit-ros = resfit_ros.cli:main"]},
)
