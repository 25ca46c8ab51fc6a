"""Finishing an episode whose recorder died after the label but before the bag was closed.

The recorder closes a bag `finish_delay_s` after the episode ended (messages still in flight land
in it). A recorder killed in that window used to leave a labelled episode as `.incomplete`: lost
for training although the operator had labelled it. Now the recorder flushes the bag to disk when
the label arrives (`EpisodeWriter.flush`), and at start-up `recover_episodes` rebuilds each such
bag from the messages its unclosed MCAP file holds, under its final name, IF the bag has the label
and every step the episode manager counted for the episode. Anything else (a bag killed
mid-episode, a step missing) stays `.incomplete` and the reason is returned.

A recovered bag is an ordinary episode bag with custom_data `recovered: true`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping

from resfit_ros.bags import convert
from resfit_ros.bags import types as t
from resfit_ros.bags.errors import BagError
from resfit_ros.bags.mcap_scan import McapError, read_mcap
from resfit_ros.bags.writer import INCOMPLETE_SUFFIX, EpisodeWriter

RECOVERING_PREFIX = ".recovering-"   # the original files while their replacement is being written


def recover_episode(path: str | Path, metadata: Mapping[str, object] | None = None) -> Path:
    """`<root>/<name>.incomplete` -> `<root>/<name>`; returns the new episode directory.

    Raises BagError (path + why) and leaves the bag as it was when it cannot be finished: no
    label in it, a step the episode manager counted missing, or an unreadable file.
    """
    from resfit_ros.bags.reader import read_episode

    path = Path(path)
    if not path.name.endswith(INCOMPLETE_SUFFIX) or not path.is_dir():
        raise BagError(path, "not an incomplete episode bag directory")
    name = path.name.removesuffix(INCOMPLETE_SUFFIX)
    if path.with_name(name).exists():   # never touch (nor, on failure, delete) a finished bag
        raise BagError(path, f"a finished bag {name} exists already")
    episode_id, explore, messages = _check(path, name)
    work = path.with_name(RECOVERING_PREFIX + name)
    os.rename(path, work)
    final = path.with_name(name)
    try:
        writer = EpisodeWriter(path.parent, episode_id, name=name, explore=explore,
                               metadata={**{str(k): str(v) for k, v in (metadata or {}).items()}, "recovered": "true"})
        for stamp, topic, msgtype, data in messages:
            writer.write_raw(topic, data, stamp, msgtype)
            writer.steps += topic == t.TOPIC_STEP_RECORD
        writer.finish()
        read_episode(final, images=False)        # the rebuilt bag must read as an episode
    except Exception as exc:
        # back to where it was: the rebuilt bag (complete or not) goes, the original stays incomplete
        for leftover in (final, final.with_name(name + INCOMPLETE_SUFFIX)):
            shutil.rmtree(leftover, ignore_errors=True)
        os.rename(work, path)
        raise BagError(path, f"could not be rebuilt: {exc}") from None
    shutil.rmtree(work)
    return final


def recover_episodes(root: str | Path, metadata: Mapping[str, object] | None = None) -> list[tuple[Path, Path | str]]:
    """Try `recover_episode` on every `.incomplete` bag under `root`: (bag, new directory or why
    not). A recovery interrupted earlier (a `.recovering-<name>` directory) is finished or undone first."""
    root = Path(root)
    if not root.is_dir():
        return []
    for work in sorted(root.glob(RECOVERING_PREFIX + "*")):
        name = work.name.removeprefix(RECOVERING_PREFIX)
        if (root / name).is_dir():
            shutil.rmtree(work)                  # the rebuilt bag was complete (renamed last)
        else:
            shutil.rmtree(root / (name + INCOMPLETE_SUFFIX), ignore_errors=True)
            os.rename(work, root / (name + INCOMPLETE_SUFFIX))
    out: list[tuple[Path, Path | str]] = []
    for path in sorted(root.glob("*" + INCOMPLETE_SUFFIX)):
        try:
            out.append((path, recover_episode(path, metadata)))
        except BagError as exc:
            out.append((path, exc.problem))
    return out


def _check(path: Path, name: str):
    """(episode id, explore, [(stamp, topic, msgtype, CDR)] in file order) of a recoverable bag."""
    files = sorted(path.glob("*.mcap"))
    if len(files) != 1:
        raise BagError(path, f"expected one .mcap file, found {len(files)}")
    try:
        contents = read_mcap(files[0], None, allow_truncated=True)
    except McapError as exc:
        raise BagError(path, f"{files[0].name}: {exc}") from None
    try:
        episode_id = int(name.split("_")[1])
    except (IndexError, ValueError):
        raise BagError(path, f"not an episode bag name: {name}") from None
    store = t.typestore()
    final = None
    explore = False
    for _, data in contents.messages.get(t.TOPIC_EPISODE_STATUS, []):
        status = store.deserialize_cdr(data, t.EPISODE_STATUS)
        if status.episode_id not in (0, episode_id):
            continue
        explore = explore or bool(status.explore)
        if status.state != convert.STATE_RUNNING and (status.label != convert.LABEL_NONE or status.aborted):
            final = status
    if final is None:
        raise BagError(path, "no label on disk: the recorder stopped before the episode was labelled")
    if not final.aborted and final.steps > 0:
        steps = {int(store.deserialize_cdr(d, t.STEP_RECORD).step) for _, d in contents.messages.get(t.TOPIC_STEP_RECORD, [])}
        missing = sorted(set(range(int(final.steps))) - steps)
        if missing:
            raise BagError(path, f"{len(missing)} of the {final.steps} counted steps are not on disk "
                                 f"(first: step {missing[0]})")
    msgtype = {c.topic: c.schema_name for c in contents.channels.values()}
    messages = [(stamp, topic, msgtype[topic], bytes(data))
                for topic, msgs in contents.messages.items() for stamp, data in msgs]
    messages.sort(key=lambda m: m[0])            # stable: file order within a stamp
    return episode_id, explore, messages
