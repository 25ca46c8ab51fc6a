"""ROS-free logic of the nodes: observation record, sync policy, command composition, episodes."""
