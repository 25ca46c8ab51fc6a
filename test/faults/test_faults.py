"""Faults in a running train_sim graph (`resfit-ros bench faults`, reduced): kill -9 of the residual
policy node and of the recorder mid-episode, and a learner restart on a corrupt newest checkpoint.

The bench launches the graph (runner respawn on, pid files), monitors every controller command and
episode over DDS and prints `faults_survived=<n>/<n> bad_inputs_rejected=<n> unsafe_commands=<n>
episodes_lost=<n>`. Asserted here: every fault survived, no unsafe command, no labelled episode
lost; and, checked again from the files it leaves: each interrupted episode is not a labelled bag
and was never ingested by the learner; the corrupt checkpoint was refused by name and the one
before it used. (The full suite, with every node, a full disk and the bad-input catalogue, is the
bench itself: README, Reliability.)
"""
import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros

FINAL = re.compile(r"^faults_survived=(\d+)/(\d+) bad_inputs_rejected=(\d+) unsafe_commands=(\d+) episodes_lost=(\d+)$",
                   re.M)


def test_kill_9_and_corrupt_checkpoint_in_a_running_graph(tmp_path, ros_domain):
    from resfit_ros.bags import scan_episodes

    work = tmp_path / "faults"
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "resfit_ros.cli", "bench", "faults", "--quick", "--no-bad-inputs",
                        "--faults", "residual_policy,recorder,corrupt_checkpoint", "--domain", str(ros_domain),
                        "--workdir", str(work), "--json", str(report)],
                       capture_output=True, text=True, timeout=240)
    out = r.stdout + r.stderr
    m = FINAL.search(r.stdout)
    assert m, out[-4000:]
    survived, total, _, unsafe, lost = map(int, m.groups())
    assert (survived, total) == (3, 3), out[-8000:]
    assert unsafe == 0 and lost == 0, out[-4000:]
    assert r.returncode == 0, out[-4000:]

    results = {x["fault"]: x for x in json.loads(report.read_text())["results"]}
    log = (work / "launch.log").read_text(errors="replace")
    bags = {ep.episode_id: ep for _, ep in scan_episodes(work / "run" / "episodes", images=False)
            if not isinstance(ep, str)}
    for fault in ("kill -9 residual_policy", "kill -9 recorder"):
        res = results[fault]
        eid = res["interrupted_episode"]
        assert eid is not None and res["downtime_s"] > 0, res
        ep = bags.get(eid)
        assert ep is None or ep.aborted or ep.label is None, f"{fault}: episode {eid} was kept as {ep.label}"
        assert f"ingested episode_{eid:06d}_" not in log, f"{fault}: the learner trained on episode {eid}"
        # the graph made progress again: a later episode labelled and kept as a bag
        assert any(e > eid and b.label is not None and not b.aborted for e, b in bags.items()), fault
    # the recorder's interrupted bag is left recognisably incomplete (never renamed)
    rec_eid = results["kill -9 recorder"]["interrupted_episode"]
    assert list((work / "run" / "episodes").glob(f"episode_{rec_eid:06d}_*.incomplete")), "no .incomplete bag"

    corrupt = results["corrupt_checkpoint"]
    truncated = re.search(r"truncated (ckpt-\d+)/", " ".join(corrupt["notes"])).group(1)
    refused = re.search(rf"refused checkpoint: checkpoint \S+/{truncated}: (.*)", log)
    assert refused and "corrupt" in refused.group(1), log[-3000:]
    resumed = re.findall(r"resumed from \S+/(ckpt-\d+) at \d+ critic updates", log)
    previous = f"ckpt-{int(truncated.split('-')[1]) - 1:06d}"
    assert previous in resumed and truncated not in resumed, (truncated, resumed)
