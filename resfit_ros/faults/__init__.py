"""Fault injection helpers shared by the tests and `resfit-ros bench faults`.

bad_inputs: the catalogue of malformed messages and service calls (one entry each: what it is,
where it goes, which /diagnostics counter must count it) and `inject_bad_inputs`, which sends
them into a running graph and counts the rejections.
"""
