"""Two machines on one host: a network namespace (the learner's machine) joined to the host's own
network (the robot's computer) by a veth pair, as two computers on one Ethernet link.

DDS traffic between the two crosses that link only: the namespace's processes run with Fast DDS's
UDP transport alone (FASTDDS_BUILTIN_TRANSPORTS=UDPv4), since shared memory would reach across
the namespaces of one host, and each side names the other in ROS_STATIC_PEERS, as on a network
without multicast. `down()` / `up()` and `netem()` are the link faults.

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): `VethLink.create()` raises `Unavailable` with the
reason otherwise, for the caller to skip with it.
"""
from __future__ import annotations

import os
import random
import subprocess


class Unavailable(RuntimeError):
    pass


def _ip(*args: str, netns: str = "") -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10)


class VethLink:
    def __init__(self, netns: str, host_if: str, ns_if: str, subnet: int):
        self.netns, self.host_if, self.ns_if = netns, host_if, ns_if
        self.host_ip, self.ns_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"

    @classmethod
    def create(cls) -> "VethLink":
        tag = f"{os.getpid() % 100000}{random.randint(0, 99):02d}"
        # one subnet per process: Fast DDS reads a process's network interfaces once
        link = cls(f"resfit_learner_{tag}", f"rfh{tag}", f"rfl{tag}", os.getpid() % 250 + 1)
        steps = [
            (("netns", "add", link.netns), ""),
            (("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if), ""),
            (("link", "set", link.ns_if, "netns", link.netns), ""),
            (("addr", "add", f"{link.host_ip}/24", "dev", link.host_if), ""),
            (("link", "set", link.host_if, "up"), ""),
            (("addr", "add", f"{link.ns_ip}/24", "dev", link.ns_if), link.netns),
            (("link", "set", link.ns_if, "up"), link.netns),
            (("link", "set", "lo", "up"), link.netns),
            # discovery within the namespace (multicast looped back on its one link)
            (("route", "add", "224.0.0.0/4", "dev", link.ns_if), link.netns),
            # the robot computer is its gateway: every address the host's participants announce is
            # reachable (a process that started DDS before this link existed announces only those)
            (("route", "add", "default", "via", link.host_ip), link.netns),
        ]
        for args, netns in steps:
            r = _ip(*args, netns=netns)
            if r.returncode != 0:
                link.close()
                raise Unavailable(f"`ip {' '.join(args)}` failed: {r.stderr.strip() or r.stdout.strip()} "
                                  "(network namespaces need root)")
        return link

    def robot_env(self) -> dict[str, str]:
        """Environment of the robot side's processes (the host's network)."""
        return {"ROS_STATIC_PEERS": self.ns_ip}

    def learner_env(self) -> dict[str, str]:
        """Environment of the learner side's processes (inside the namespace)."""
        return {"ROS_STATIC_PEERS": self.host_ip, "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}

    def prefix(self) -> list[str]:
        """argv prefix that runs a command on the learner's machine."""
        return ["ip", "netns", "exec", self.netns]

    def down(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def up(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def netem(self, delay_ms: float = 0.0, loss_pct: float = 0.0) -> str:
        """Delay and loss on both directions of the link (tc netem); '' or the reason it failed."""
        problems = []
        for dev, netns in ((self.host_if, ""), (self.ns_if, self.netns)):
            cmd = (["ip", "netns", "exec", netns] if netns else []) + [
                "tc", "qdisc", "replace", "dev", dev, "root", "netem", "delay", f"{delay_ms}ms", "loss", f"{loss_pct}%"]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                problems.append(r.stderr.strip())
        return "; ".join(problems)

    def clear_netem(self) -> None:
        for dev, netns in ((self.host_if, ""), (self.ns_if, self.netns)):
            cmd = (["ip", "netns", "exec", netns] if netns else []) + ["tc", "qdisc", "del", "dev", dev, "root"]
            subprocess.run(cmd, capture_output=True, timeout=10)

    def power_off(self) -> int:
        """kill -9 every process on the learner's machine (the namespace), as a power cut; how many."""
        r = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True, timeout=10)
        pids = [int(p) for p in r.stdout.split()]
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        return len(pids)

    def close(self) -> None:
        self.power_off()
        _ip("netns", "del", self.netns)      # takes its end of the veth pair, and so the pair, with it
        _ip("link", "del", self.host_if)
