"""Config is data: bad YAML keys and values give one clear message naming them."""
import pytest

from resfit_ros.config import ConfigError, load_config, read_parameters
from resfit_ros.nodes.judge import JudgeConfig
from resfit_ros.robot import RobotDescription, config_dir


def test_unknown_key_wrong_type_and_range_are_named(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("judge:\n  ros__parameters:\n    max_stepz: 3\n")
    with pytest.raises(ConfigError, match="unknown key.*max_stepz"):
        load_config(JudgeConfig, p, "judge")
    p.write_text("judge:\n  ros__parameters:\n    max_steps: fast\n")
    with pytest.raises(ConfigError, match="max_steps: expected an integer, got 'fast'"):
        load_config(JudgeConfig, p, "judge")
    p.write_text("judge:\n  ros__parameters:\n    max_steps: -4\n")
    with pytest.raises(ConfigError, match="max_steps must be > 0, got -4"):
        load_config(JudgeConfig, p, "judge")
    p.write_text("judge: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_parameters(p, "judge")
    with pytest.raises(ConfigError, match="cannot read"):
        read_parameters(tmp_path / "missing.yaml")


def test_robot_description_checks_limits_and_home(tmp_path):
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    assert robot.dof == 29 and len(robot.group_indices()) == 5
    bad = tmp_path / "r.yaml"
    bad.write_text("name: r\njoints:\n  - {name: a, group: g, lower: 1.0, upper: -1.0, max_velocity: 1}\n"
                   "controllers: {g: c}\n")
    with pytest.raises(ConfigError, match="lower 1.0 >= upper -1.0"):
        RobotDescription.load(bad)
    bad.write_text("name: r\njoints:\n  - {name: a, group: g, lower: -1, upper: 1, home: 3, max_velocity: 1}\n"
                   "controllers: {g: c}\n")
    with pytest.raises(ConfigError, match="home 3.0 outside"):
        RobotDescription.load(bad)


def test_the_process_parameters_every_node_takes_are_not_component_config(tmp_path):
    # config/real.yaml gives the synchronizer `realtime_priority`; offline readers of that section
    # (raw bag conversion) load it into SynchronizerConfig, which must not call it unknown
    from resfit_ros.core.synchronizer import SynchronizerConfig

    cfg = load_config(SynchronizerConfig, config_dir() / "real.yaml", "synchronizer")
    assert cfg.slop_s == 0.02
    p = tmp_path / "p.yaml"
    p.write_text("judge:\n  ros__parameters:\n    max_steps: 3\n    nice: 5\n    realtime_priority: 40\n")
    assert load_config(JudgeConfig, p, "judge").max_steps == 3
    p.write_text("judge:\n  ros__parameters:\n    max_steps: 3\n    realtime_priorty: 40\n")
    with pytest.raises(ConfigError, match="unknown key.*realtime_priorty"):
        load_config(JudgeConfig, p, "judge")


def test_no_parameter_file_has_a_section_for_every_node():
    """rcl merges parameter sections in the order their keys first appear: a `/**` section at the
    top of a graph's config file makes every node's own section win over the launch arguments the
    graph passes (`-p`, or launch_ros's `/**` file), e.g. train_sim's max_steps:=25 read as 200."""
    import yaml

    from resfit_ros.robot import config_dir

    for path in sorted(config_dir().glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        assert "/**" not in doc, f"{path.name}: a /** section (see this test's docstring)"
