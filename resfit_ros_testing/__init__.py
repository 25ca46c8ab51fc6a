"""Test and bench tooling for resfit_ros: used by test/ and bench/ only, never by a node or a job.

bad_inputs: the catalogue of malformed messages and service calls (one entry each: what it is,
where it goes, which /diagnostics counter must count it) and `inject_bad_inputs`, which sends
them into a running graph and counts the rejections (test/safety, `resfit-ros bench faults`).
hold_base: `make_hold_base`, a TorchScript base policy that holds the robot where it is, for
benches and tests that measure the stack rather than a model (bench/control_loop.py, bench/load.py,
test/ros/test_residual_policy.py).

This package is not part of the ROS package: CMakeLists.txt (colcon) installs resfit_ros/ only,
so a ROS install does not ship it. setup.py lists it for the venv's editable install
(tools/bootstrap.sh), where the tests and benches run.
"""
