"""One module for names: topics, services, observation keys, metric names, safety flags.

Node-private names use `~/`; launch files and graph.py remap them onto these shared defaults.
"""

# --- topics -------------------------------------------------------------------------------
JOINT_STATES = "/joint_states"                 # sensor_msgs/JointState (robot or sim)
CAMERA_TOPIC = "/camera/{name}/image_raw"      # sensor_msgs/Image per camera
OBSERVATION = "/resfit/observation"            # resfit_ros/Observation (synchronizer)
STEP_RECORD = "/resfit/step"                   # resfit_ros/StepRecord (residual policy)
EPISODE_STATUS = "/resfit/episode_status"      # resfit_ros/EpisodeStatus (episode manager, latched)
POLICY_WEIGHTS = "/resfit/policy_weights"      # resfit_ros/PolicyWeights (learner, latched)
LEARNER_METRICS = "/resfit/learner_metrics"    # resfit_ros/LearnerMetrics
ESTOP = "/resfit/estop"                        # std_msgs/Bool, latched: true = stop commanding
CONTROLLER_COMMANDS = "/{controller}/commands"  # std_msgs/Float64MultiArray (ros2_control forward)
JOINT_TRAJECTORY = "/{controller}/joint_trajectory"  # trajectory_msgs/JointTrajectory
DIAGNOSTICS = "/diagnostics"
RECORDER_PROGRESS = "/resfit/recorder/progress"  # resfit_ros/RecorderProgress
ALIVE_TOPIC = "/resfit/alive/{node}"           # std_msgs/Empty, never published: DDS liveliness = the node's process is up

# --- services -----------------------------------------------------------------------------
GET_ACTION_CHUNK = "/resfit/get_action_chunk"  # resfit_ros/GetActionChunk
START_EPISODE = "/resfit/start_episode"        # resfit_ros/StartEpisode
LABEL_EPISODE = "/resfit/label_episode"        # resfit_ros/LabelEpisode
RESET = "/resfit/reset"                        # std_srvs/Trigger
ABORT_EPISODE = "/resfit/abort_episode"        # std_srvs/Trigger
SET_ESTOP = "/resfit/set_estop"                # std_srvs/SetBool (true = stop, false = clear)

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
PACE_STEPS_ALLOWED = "pace/steps_allowed"   # training steps the robot may have taken (learning/schedule.py)

# --- safety flags in StepRecord.safety_flags (bitmask) ---------------------------------------
SAFETY_RESIDUAL_CLIPPED = 1 << 0   # residual exceeded its bound
SAFETY_POSITION_CLIPPED = 1 << 1   # command hit a joint position limit
SAFETY_RATE_LIMITED = 1 << 2       # command hit the per-step change limit
SAFETY_NONFINITE_INPUT = 1 << 3    # NaN/inf in base or residual: replaced by the safe fallback
SAFETY_BASE_ONLY = 1 << 4          # residual disabled (fallback mode)
SAFETY_HOLD = 1 << 5               # holding the last safe command (stale observations, e-stop)
