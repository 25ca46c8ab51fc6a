"""One module for names: topics, services, observation keys, metric names, safety flags.

Topic and service names are node-relative (no leading `/`): a node resolves them in its own
namespace, so at the root `resfit/observation` is `/resfit/observation`, and in namespace
`/robot_a` (`namespace:=robot_a`, resfit_ros/graph.py) it is `/robot_a/resfit/observation`: two
robots or two stacks share a DDS domain without crosstalk. Only DIAGNOSTICS and CLOCK are
absolute (ROS convention: one of each per system). Node-private names use `~/`
(`~/reset_scene` of node sim_robot = `sim_robot/reset_scene` here). Episode bags store every topic
resolved at the root, whatever namespace recorded it (resfit_ros/bags/types.py).
"""

# --- topics -------------------------------------------------------------------------------
JOINT_STATES = "joint_states"                  # sensor_msgs/JointState (robot or sim)
CAMERA_TOPIC = "camera/{name}/image_raw"       # sensor_msgs/Image per camera
OBSERVATION = "resfit/observation"             # resfit_ros/Observation (synchronizer)
STEP_RECORD = "resfit/step"                    # resfit_ros/StepRecord (residual policy)
EPISODE_STATUS = "resfit/episode_status"       # resfit_ros/EpisodeStatus (episode manager, latched)
POLICY_WEIGHTS = "resfit/policy_weights"       # resfit_ros/PolicyWeights (learner, latched)
LEARNER_METRICS = "resfit/learner_metrics"     # resfit_ros/LearnerMetrics
LEARNER_STATUS = "resfit/learner/status"       # resfit_ros/LearnerStatus (latched)
ESTOP = "resfit/estop"                         # std_msgs/Bool, latched: true = stop commanding
INTERVENTION_TARGET = "resfit/intervention/target"  # sensor_msgs/JointState: an operator's joint targets (any subset)
INTERVENTION_ACTIVE = "resfit/intervention/active"  # std_msgs/Bool, latched: true = the operator drives
CONTROLLER_COMMANDS = "{controller}/commands"  # std_msgs/Float64MultiArray (ros2_control forward)
JOINT_TRAJECTORY = "{controller}/joint_trajectory"  # trajectory_msgs/JointTrajectory
RECORDER_PROGRESS = "resfit/recorder/progress"  # resfit_ros/RecorderProgress
ALIVE_TOPIC = "resfit/alive/{node}"            # std_msgs/Empty, never published: DDS liveliness = the node's process is up
TASK_STATE = "sim_robot/task_state"            # sensor_msgs/JointState: the simulator's object pose (its ~/task_state)
SIM_SUCCESS = "sim_robot/success"              # std_msgs/Bool: the simulated task is solved (its ~/success)
DIAGNOSTICS = "/diagnostics"                   # global; each status names its node with its namespace
CLOCK = "/clock"                               # global simulated time (rclpy's use_sim_time subscribes to it)
SIM_CLOCK = "clock"                            # a simulator's own time: the simulated graphs remap CLOCK to it,
                                               # so side by side simulators keep their times apart (= /clock at the root)

# --- services -----------------------------------------------------------------------------
GET_ACTION_CHUNK = "resfit/get_action_chunk"   # resfit_ros/GetActionChunk
START_EPISODE = "resfit/start_episode"         # resfit_ros/StartEpisode
LABEL_EPISODE = "resfit/label_episode"         # resfit_ros/LabelEpisode
RESET = "resfit/reset"                         # std_srvs/Trigger
ABORT_EPISODE = "resfit/abort_episode"         # std_srvs/Trigger
SET_ESTOP = "resfit/set_estop"                 # std_srvs/SetBool (true = stop, false = clear)
RESET_SCENE = "sim_robot/reset_scene"          # resfit_ros/ResetScene: the simulator puts the scene back (its ~/reset_scene)


def resolve(name: str, namespace: str = "") -> str:
    """The absolute name a node in `namespace` ('' or '/' = the root) gives `name`: an absolute
    name stays as it is, a relative one is put under the namespace (rcl's rule, without `~` and
    remappings). `resolve("resfit/step", "robot_a")` = "/robot_a/resfit/step"."""
    if name.startswith("/"):
        return name
    ns = namespace.strip("/")
    return f"/{ns}/{name}" if ns else f"/{name}"


# --- observation keys (ROS-free batches) ---------------------------------------------------
OBS_STATE = "state"      # (B, state_dim) float32: joint positions, velocities, extra
OBS_IMAGES = "images"    # (B, n_cameras, 3, H, W) uint8
OBS_FEATURES = "features"  # (B, feature_dim) float32: cached frozen-encoder features

# --- metric names (TensorBoard scalars and LearnerMetrics) ---------------------------------
LOSS_CRITIC = "losses/critic"
LOSS_ACTOR = "losses/actor"
Q_MEAN = "values/q_mean"
SUCCESS_RATE = "charts/success_rate"
EPISODE_LENGTH = "charts/episode_length"
ACHIEVED_UTD = "charts/achieved_utd"
INTERVENTION_SHARE = "charts/intervention_share"   # share of the online steps an operator drove
PACE_STEPS_ALLOWED = "pace/steps_allowed"   # training steps the robot may have taken (learning/schedule.py)

# --- safety flags in StepRecord.safety_flags (bitmask) ---------------------------------------
SAFETY_RESIDUAL_CLIPPED = 1 << 0   # residual exceeded its bound
SAFETY_POSITION_CLIPPED = 1 << 1   # command hit a joint position limit
SAFETY_RATE_LIMITED = 1 << 2       # command hit the per-step change limit
SAFETY_NONFINITE_INPUT = 1 << 3    # NaN/inf in base or residual: replaced by the safe fallback
SAFETY_BASE_ONLY = 1 << 4          # residual disabled (fallback mode)
SAFETY_HOLD = 1 << 5               # holding the last safe command (stale observations, e-stop)
SAFETY_OPERATOR = 1 << 6           # an operator's target (intervention) instead of base + residual
