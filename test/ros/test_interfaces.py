"""The generated interfaces import and cross a real DDS link between two processes."""
import numpy as np
import pytest

from test.support import node_argv

pytestmark = pytest.mark.ros


def test_generated_messages_and_services_import():
    from resfit_ros.msg import (ActionChunk, EpisodeStatus, LearnerMetrics, Observation, PolicyWeights,
                                RecorderProgress, StepRecord, Tensor)
    from resfit_ros.srv import GetActionChunk, LabelEpisode, StartEpisode

    assert EpisodeStatus.RUNNING == 1 and EpisodeStatus.LABEL_SUCCESS == 1
    req = LabelEpisode.Request(success=True, note="ok")
    assert req.success and req.note == "ok"
    assert isinstance(GetActionChunk.Request().observation, Observation)
    chunk = ActionChunk(chunk_length=2, dof=3, actions=[0.0, 1, 2, 3, 4, 5])
    assert np.asarray(chunk.actions).reshape(2, 3)[1, 2] == 5
    w = PolicyWeights(version=3, tensors=[Tensor(name="a", shape=[2], data=np.zeros(8, np.uint8).tobytes())])
    assert w.tensors[0].shape.tolist() == [2]
    for cls in (StepRecord, LearnerMetrics, StartEpisode.Request):
        cls()  # constructible with defaults
    progress = RecorderProgress(episode_id=4, steps_recorded=120)
    assert (progress.episode_id, progress.steps_recorded) == (4, 120)


def _observation(seq: int):
    from resfit_ros.msg import Observation
    from sensor_msgs.msg import Image

    msg = Observation(sequence=seq, joint_names=[f"j{i}" for i in range(29)],
                      position=np.linspace(-1, 1, 29).tolist(), velocity=[0.5] * 29,
                      camera_names=["head"])
    img = Image(height=84, width=84, encoding="rgb8", step=84 * 3)
    img.data = (np.arange(84 * 84 * 3) % 251).astype(np.uint8).tobytes()
    msg.images = [img]
    msg.header.stamp.sec = 7
    return msg


def test_observation_pub_sub_across_processes(ros_context, spawn):
    """Test process -> echo_observation node (separate process) -> back, over real DDS."""
    from resfit_ros.msg import Observation

    from resfit_ros.nodes.common import STREAM

    echo = spawn(node_argv("echo_observation", "-r", "__node:=echo", "-r", "~/in:=/t/in", "-r", "~/out:=/t/out"),
                 name="echo")
    received = []
    ros_context.node.create_subscription(Observation, "/t/out", received.append, STREAM)
    pub = ros_context.node.create_publisher(Observation, "/t/in", STREAM)
    # Discovery takes a moment: publish until the echo comes back.
    seq = 0

    def got_one():
        nonlocal seq
        if not received:
            pub.publish(_observation(seq))
            seq += 1
        return bool(received)

    assert ros_context.spin_until(got_one, timeout=20), open(echo.log_path).read()
    msg = received[0]
    assert list(msg.joint_names) == [f"j{i}" for i in range(29)]
    np.testing.assert_allclose(msg.position, np.linspace(-1, 1, 29))
    assert msg.images[0].width == 84 and msg.images[0].encoding == "rgb8"
    assert bytes(msg.images[0].data) == (np.arange(84 * 84 * 3) % 251).astype(np.uint8).tobytes()
    assert msg.header.stamp.sec == 7
