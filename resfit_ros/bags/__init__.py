"""rosbag2 episodes: the project's data format (write, read, scan). No rclpy; see README.md here.

    from resfit_ros.bags import EpisodeWriter, StepData, read_episode, scan_episodes
"""
from resfit_ros.bags.convert import (
    LABEL_FAILURE, LABEL_NONE, LABEL_SUCCESS, STATE_ESTOPPED, STATE_IDLE, STATE_RESETTING,
    STATE_RUNNING, StepData, observation_from_msg, observation_msg)
from resfit_ros.bags.errors import BagError
from resfit_ros.bags.reader import (
    EPISODE_TOPICS, Episode, iter_messages, load_episodes, read_episode, scan_episodes)
from resfit_ros.bags.types import TOPIC_TYPES, msg_dir, topic_type, type_hash, typestore
from resfit_ros.bags.writer import (
    FORMAT_VERSION, INCOMPLETE_SUFFIX, EpisodeUnlabelledError, EpisodeWriter, episode_dir_name)

__all__ = [
    "BagError", "Episode", "EpisodeUnlabelledError", "EpisodeWriter", "EPISODE_TOPICS",
    "FORMAT_VERSION", "INCOMPLETE_SUFFIX", "LABEL_FAILURE", "LABEL_NONE", "LABEL_SUCCESS",
    "STATE_ESTOPPED", "STATE_IDLE", "STATE_RESETTING", "STATE_RUNNING", "StepData", "TOPIC_TYPES",
    "episode_dir_name", "iter_messages", "load_episodes", "msg_dir", "observation_from_msg",
    "observation_msg", "read_episode", "scan_episodes", "topic_type", "type_hash", "typestore",
]
