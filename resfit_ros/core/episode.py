"""The episode manager's state machine: IDLE, RUNNING, RESETTING, ESTOPPED. No rclpy.

    IDLE --start--> RUNNING --label/abort--> IDLE --reset_begin--> RESETTING --reset_done--> IDLE
    any state --estop(True)--> ESTOPPED --estop(False)--> IDLE   (a running episode is aborted,
                                                                   a reset is cancelled)

Every call returns an EpisodeResult whose `outcome` is an Outcome Enum carrying a stable code and
a default message (like nav2's TaskResult); a call that is not valid in the current state is
REFUSED with a specific message and changes nothing at all (state, counters, status message).

Reward is sparse: 1 on the final step of an episode labelled success, 0 everywhere else. The
final step is only known when the operator labels the episode, after its last StepRecord was
published, so `label` returns `final_step` (0-based index in the episode) and `reward`, and
`sparse_rewards(steps, success)` builds the per-step vector for the recorder/replay.
Aborted episodes (abort, e-stop) get no label and do not count as completed.
`ready` (EpisodeStatus.ready) is true only while IDLE after a successful reset_done with no episode,
e-stop or failed reset since; `EpisodeManager(require_reset=True)` makes start() require it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from enum import Enum, IntEnum

import numpy as np


class EpisodeState(IntEnum):
    """Values equal resfit_ros/msg/EpisodeStatus constants."""

    IDLE = 0
    RUNNING = 1
    RESETTING = 2
    ESTOPPED = 3


LABEL_NONE = -1      # EpisodeStatus.LABEL_NONE
LABEL_FAILURE = 0
LABEL_SUCCESS = 1


class Outcome(Enum):
    """Result of an episode-manager call: `.code` (stable integer) and `.message` (default text)."""

    ACCEPTED = (0, "accepted")
    NOT_RUNNING = (1, "no episode is running")
    ALREADY_RUNNING = (2, "an episode is running: label or abort it first")
    RESETTING = (3, "a reset is in progress: wait until it is done")
    ESTOPPED = (4, "the e-stop is engaged: clear it first")
    NOT_RESETTING = (5, "no reset is in progress")
    ESTOP_NOT_ENGAGED = (6, "the e-stop is not engaged")
    ESTOP_ALREADY_ENGAGED = (7, "the e-stop is already engaged")
    NO_STEPS = (8, "the episode has no steps yet, so no step can carry the reward: abort it instead")
    NOT_READY = (9, "the robot has not been reset since the last episode: reset first")

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message


@dataclass(frozen=True)
class EpisodeStatusData:
    """Mirror of resfit_ros/msg/EpisodeStatus (without the header)."""

    state: EpisodeState = EpisodeState.IDLE
    episode_id: int = 0          # the current (RUNNING) or last episode; 0 before the first
    label: int = LABEL_NONE      # label of episode_id once it ended; aborted episodes keep NONE
    aborted: bool = False
    explore: bool = False
    steps: int = 0               # steps observed in episode_id
    ready: bool = False          # IDLE after a successful reset and no episode since (clean start)
    episodes_completed: int = 0  # labelled episodes (success or failure); aborted ones excluded
    successes: int = 0
    episodes_aborted: int = 0
    message: str = ""
    note: str = ""               # operator note of the start or label call


@dataclass(frozen=True)
class EpisodeResult:
    outcome: Outcome
    message: str                 # specific text for the operator / service response
    status: EpisodeStatusData    # status AFTER the call (unchanged when refused)
    step: int | None = None      # step_observed: 0-based index of this step in the episode
    final_step: int | None = None  # label: 0-based index of the episode's last step
    reward: float | None = None    # label: reward of final_step (1.0 success, 0.0 failure)

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED

    @property
    def episode_id(self) -> int:
        return self.status.episode_id

    @property
    def state(self) -> EpisodeState:
        return self.status.state


def sparse_rewards(steps: int, success: bool) -> np.ndarray:
    """(steps,) float32: 1 on the last step of a success, 0 elsewhere."""
    r = np.zeros(int(steps), dtype=np.float32)
    if success and steps > 0:
        r[-1] = 1.0
    return r


class EpisodeManager:
    """The state machine (module doc). Thread-safe: service callbacks may run concurrently.

    require_reset: refuse `start` (NOT_READY) unless a reset completed since the last episode,
    e-stop or failed reset (`status.ready`); off by default (a human may reset the scene by hand).
    """

    def __init__(self, require_reset: bool = False) -> None:
        self.require_reset = require_reset
        self._lock = threading.Lock()
        # not "ready": the status flag of that name needs a reset first
        self._status = EpisodeStatusData(message="no episode yet")

    @property
    def status(self) -> EpisodeStatusData:
        return self._status

    @property
    def state(self) -> EpisodeState:
        return self._status.state

    # --- helpers ------------------------------------------------------------------------------
    def _refuse(self, outcome: Outcome, detail: str = "") -> EpisodeResult:
        return EpisodeResult(outcome, outcome.message + (f" ({detail})" if detail else ""), self._status)

    def _accept(self, message: str, **changes) -> EpisodeResult:
        self._status = replace(self._status, message=message, **changes)
        return EpisodeResult(Outcome.ACCEPTED, message, self._status)

    def _refuse_by_state(self) -> EpisodeResult:
        """Refusal for calls that need IDLE (start, reset_begin)."""
        s = self._status.state
        if s is EpisodeState.RUNNING:
            return self._refuse(Outcome.ALREADY_RUNNING, f"episode {self._status.episode_id}")
        if s is EpisodeState.RESETTING:
            return self._refuse(Outcome.RESETTING)
        return self._refuse(Outcome.ESTOPPED)

    def _not_running(self) -> EpisodeResult:
        s = self._status
        detail = {EpisodeState.IDLE: "idle", EpisodeState.RESETTING: "resetting",
                  EpisodeState.ESTOPPED: "e-stopped"}.get(s.state, "")
        if s.episode_id:
            detail += f"; last episode {s.episode_id} " + (
                "was aborted" if s.aborted else "was labelled " + ("success" if s.label == LABEL_SUCCESS else "failure"))
        return self._refuse(Outcome.NOT_RUNNING, detail)

    # --- operator / node calls ------------------------------------------------------------------
    def start(self, explore: bool = True, note: str = "") -> EpisodeResult:
        """IDLE -> RUNNING with a new episode id (explore: exploration noise on; false = evaluation)."""
        with self._lock:
            if self._status.state is not EpisodeState.IDLE:
                return self._refuse_by_state()
            if self.require_reset and not self._status.ready:
                return self._refuse(Outcome.NOT_READY)
            eid = self._status.episode_id + 1
            return self._accept(f"episode {eid} started ({'training' if explore else 'evaluation'})",
                                state=EpisodeState.RUNNING, episode_id=eid, label=LABEL_NONE,
                                aborted=False, explore=bool(explore), steps=0, note=note, ready=False)

    def step_observed(self) -> EpisodeResult:
        """Count one control step of the running episode; `result.step` is its 0-based index."""
        with self._lock:
            if self._status.state is not EpisodeState.RUNNING:
                return self._not_running()
            step = self._status.steps
            res = self._accept(self._status.message, steps=step + 1)
            return replace(res, step=step)

    def label(self, success: bool, note: str = "") -> EpisodeResult:
        """End the running episode with the operator's verdict; reward 1 on its final step if success."""
        with self._lock:
            s = self._status
            if s.state is not EpisodeState.RUNNING:
                return self._not_running()
            if s.steps == 0:
                return self._refuse(Outcome.NO_STEPS, f"episode {s.episode_id}")
            success = bool(success)
            res = self._accept(
                f"episode {s.episode_id} labelled {'success' if success else 'failure'} after {s.steps} steps",
                state=EpisodeState.IDLE, label=LABEL_SUCCESS if success else LABEL_FAILURE,
                episodes_completed=s.episodes_completed + 1, successes=s.successes + int(success),
                note=note)
            return replace(res, final_step=s.steps - 1, reward=1.0 if success else 0.0)

    def abort(self, reason: str = "aborted by the operator") -> EpisodeResult:
        """End the running episode without a label (its data is not a success or failure)."""
        with self._lock:
            s = self._status
            if s.state is not EpisodeState.RUNNING:
                return self._not_running()
            return self._accept(f"episode {s.episode_id} aborted: {reason}", state=EpisodeState.IDLE,
                                aborted=True, label=LABEL_NONE, episodes_aborted=s.episodes_aborted + 1)

    def reset_begin(self) -> EpisodeResult:
        """IDLE -> RESETTING (the node then runs the homing trajectory / sim scene reset)."""
        with self._lock:
            if self._status.state is not EpisodeState.IDLE:
                return self._refuse_by_state()
            return self._accept("resetting", state=EpisodeState.RESETTING, ready=False)

    def reset_done(self, ok: bool = True, message: str = "") -> EpisodeResult:
        """RESETTING -> IDLE; `ok=False` reports a failed reset (still IDLE, message says why)."""
        with self._lock:
            if self._status.state is not EpisodeState.RESETTING:
                return self._refuse(Outcome.NOT_RESETTING, f"state is {self._status.state.name}")
            text = "reset done" if ok else "reset FAILED"
            return self._accept(text + (f": {message}" if message else ""), state=EpisodeState.IDLE,
                                ready=bool(ok))

    def not_ready(self, message: str) -> EpisodeResult:
        """IDLE and ready -> IDLE, not ready (something the next episode depends on changed since
        the reset, e.g. a node restarted that has not seen the robot's state): reset again."""
        with self._lock:
            s = self._status
            if s.state is not EpisodeState.IDLE or not s.ready:
                return self._refuse(Outcome.NOT_READY, f"state is {s.state.name}, ready {s.ready}")
            return self._accept(message, ready=False)

    def restore(self, episode_id: int, *, state: EpisodeState = EpisodeState.IDLE, label: int = LABEL_NONE,
                aborted: bool = False, explore: bool = False, episodes_completed: int = 0, successes: int = 0,
                episodes_aborted: int = 0) -> EpisodeResult:
        """Continue from the persisted status of a previous process (the manager restarted).

        Episode ids continue after `episode_id`; the robot must be reset again (not ready). An
        episode that was RUNNING is ended as aborted (its data is incomplete: nobody counted or
        labelled its steps meanwhile); an e-stop stays engaged; RESETTING becomes IDLE."""
        with self._lock:
            if int(episode_id) < 0 or int(episodes_completed) < 0 or int(successes) < 0 or int(episodes_aborted) < 0:
                raise ValueError("restore: negative counters")
            common = dict(episode_id=int(episode_id), explore=bool(explore), ready=False,
                          episodes_completed=int(episodes_completed), successes=int(successes))
            if state is EpisodeState.RUNNING:
                return self._accept(f"episode {episode_id} aborted: the episode manager restarted during it",
                                    state=EpisodeState.IDLE, label=LABEL_NONE, aborted=True,
                                    episodes_aborted=int(episodes_aborted) + 1, **common)
            if state is EpisodeState.ESTOPPED:
                return self._accept("E-STOP engaged (restored after a restart of the episode manager)",
                                    state=EpisodeState.ESTOPPED, label=int(label), aborted=bool(aborted),
                                    episodes_aborted=int(episodes_aborted), **common)
            return self._accept(f"restarted after episode {episode_id}: reset before the next episode",
                                state=EpisodeState.IDLE, label=int(label), aborted=bool(aborted),
                                episodes_aborted=int(episodes_aborted), **common)

    def estop(self, engaged: bool) -> EpisodeResult:
        """Engage (any state -> ESTOPPED; aborts a running episode, cancels a reset) or clear it."""
        with self._lock:
            s = self._status
            if not engaged:
                if s.state is not EpisodeState.ESTOPPED:
                    return self._refuse(Outcome.ESTOP_NOT_ENGAGED, f"state is {s.state.name}")
                return self._accept("e-stop cleared", state=EpisodeState.IDLE, ready=False)
            if s.state is EpisodeState.ESTOPPED:
                return self._refuse(Outcome.ESTOP_ALREADY_ENGAGED)
            if s.state is EpisodeState.RUNNING:
                return self._accept(f"E-STOP: episode {s.episode_id} aborted", state=EpisodeState.ESTOPPED,
                                    aborted=True, label=LABEL_NONE, episodes_aborted=s.episodes_aborted + 1,
                                    ready=False)
            what = "reset cancelled" if s.state is EpisodeState.RESETTING else "idle"
            return self._accept(f"E-STOP engaged ({what})", state=EpisodeState.ESTOPPED, ready=False)
