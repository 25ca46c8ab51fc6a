import numpy as np
import pytest

from resfit_ros.core.chunks import ChunkScheduler


def _chunk(start_tick, k=5, dof=2):
    # row i of a chunk requested at tick n is "the action for tick n + i"
    return np.stack([np.full(dof, start_tick + i, dtype=float) for i in range(k)])


def test_prefetch_keeps_actions_aligned_with_ticks():
    s = ChunkScheduler(chunk_length=5, prefetch_steps=2)
    executed = []
    pending = None
    for tick in range(23):
        if s.wants_request():
            pending = (s.tick, s.request_sent(), tick)   # (scheduler tick, generation, loop index)
        # the answer arrives one loop later (a slow server)
        if pending and tick > pending[2]:
            assert s.receive(_chunk(pending[0]), pending[1])
            pending = None
        a = s.next_action()
        executed.append(None if a is None else a[0])
    # the first tick has no chunk yet (a request was just sent): hold once, then never again
    assert executed[0] is None
    # afterwards every tick executes the row computed for exactly that tick, although each answer
    # arrived one tick late
    assert executed[1:] == [float(t) for t in range(22)]
    assert s.underruns == 1


def test_every_action_comes_from_the_chunk_of_its_tick():
    s = ChunkScheduler(chunk_length=4, prefetch_steps=1)
    for tick in range(30):
        if s.wants_request():
            g = s.request_sent()
            assert s.receive(_chunk(s.tick, k=4), g)  # instant answer
        a = s.next_action()
        assert a is not None and a[0] == tick  # the chunk row for exactly this tick


def test_reset_ignores_answers_from_the_previous_episode():
    s = ChunkScheduler(chunk_length=4, prefetch_steps=1)
    g = s.request_sent()
    s.reset()
    assert not s.receive(_chunk(0, k=4), g)
    assert s.next_action() is None and s.wants_request()


def test_late_chunk_is_dropped_and_requested_again():
    s = ChunkScheduler(chunk_length=3, prefetch_steps=1)
    g = s.request_sent()
    assert s.receive(_chunk(0, k=3), g)
    g = s.request_sent()        # tick 0
    for _ in range(3):
        s.next_action()         # ticks 0..2 consumed, the answer is 3 ticks late
    assert not s.receive(_chunk(0, k=3), g)
    assert s.late_chunks == 1 and s.wants_request()


def test_bad_arguments():
    with pytest.raises(ValueError):
        ChunkScheduler(0)
    with pytest.raises(ValueError):
        ChunkScheduler(4, prefetch_steps=4)
