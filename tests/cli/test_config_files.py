"""Settings files (``asynca3c train --config``), the shipped hyperparams.toml, and ``asynca3c check-env``."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

from asynca3c import config_files
from asynca3c.cli import main
from asynca3c.config import Config, ConfigError

TINY = ["--seconds", "1", "--agents", "1", "--envs-per-agent", "8", "--eval-envs", "4", "--final-eval-episodes", "2",
        "--hidden", "8", "--device", "cpu"]

# The same settings in both formats: a default table, a table per environment.
TOML = """
[default]
agents = 4
lr = 0.004
seconds = 60
max_grad_norm = 0.25

["CartPole-v1"]
lr = 0.003
seconds = 45
hidden = [8, 8]
epsilon_start = [0.2, 0.1, 0.1, 0.1]

["Acrobot-v1"]
lr = 0.001
"""
YAML = """
default:
  agents: 4
  lr: 0.004
  seconds: 60
  max_grad_norm: 0.25
CartPole-v1:
  lr: 3e-3          # PyYAML reads this as text; it still counts as a number
  seconds: 45
  hidden: [8, 8]
  epsilon_start: [0.2, 0.1, 0.1, 0.1]
Acrobot-v1:
  lr: 0.001
MountainCar-v0:     # a table whose settings are all commented out
  # lr: 0.01
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(params=["toml", "yaml"])
def settings_file(request, tmp_path) -> Path:
    if request.param == "yaml":
        pytest.importorskip("yaml")
        return _write(tmp_path, "hp.yaml", YAML)
    return _write(tmp_path, "hp.toml", TOML)


# --- precedence


def test_precedence_preset_then_default_table_then_env_table_then_flags(settings_file):
    config = config_files.resolve("seed", {"seconds": 10.0}, settings_file)
    assert config.epsilon_end == (0.15,) and config.epsilon_steps == 75_000  # the preset (untouched by the file)
    assert config.agents == 4 and config.max_grad_norm == 0.25  # the default table over the preset
    assert config.lr == pytest.approx(0.003) and config.hidden == (8, 8)  # the env table over the default table
    assert config.epsilon_start == (0.2, 0.1, 0.1, 0.1)  # lists become the tuple fields
    assert config.seconds == 10.0  # the flags over everything
    assert config.n_step == Config().n_step  # Config's default where nobody set it


def test_env_table_is_chosen_by_the_env_flag_else_env_in_the_default_table(tmp_path):
    path = _write(tmp_path, "hp.toml", '[default]\nenv = "Acrobot-v1"\n' + TOML.replace("[default]\n", ""))
    assert config_files.resolve("default", {}, path).lr == pytest.approx(0.001)  # env from [default]
    chosen = config_files.resolve("default", {"env": "CartPole-v1"}, path)
    assert chosen.env == "CartPole-v1" and chosen.lr == pytest.approx(0.003)  # --env wins
    assert config_files.resolve("default", {"env": "MountainCar-v0"}, path).lr == 0.004  # no table: [default]


def test_toml_and_yaml_give_the_same_settings(tmp_path):
    pytest.importorskip("yaml")
    toml = config_files.load_settings(_write(tmp_path, "hp.toml", TOML))
    yaml = config_files.load_settings(_write(tmp_path, "hp.yml", YAML))
    assert yaml.pop("MountainCar-v0") == {} and toml == yaml


# --- the shipped hyperparams.toml


def test_shipped_settings_apply_to_the_default_preset_only():
    shipped = config_files.shipped_settings()
    assert shipped["Acrobot-v1"]["seconds"] == 120 and shipped["CartPole-v1"] == {}
    assert {"CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1"} <= set(shipped)
    for env_id, table in shipped.items():  # every shipped table makes a valid Config for its env
        assert config_files.resolve("default", {"env": env_id}) == Config(**{**table, "env": env_id})
    assert config_files.resolve("default", {"env": "Acrobot-v1"}).seconds == 120
    assert config_files.resolve("default", {"env": "Acrobot-v1", "seconds": 5.0}).seconds == 5.0  # flags win
    assert config_files.resolve("seed", {"env": "Acrobot-v1"}).seconds == Config().seconds  # seed: the article's
    assert config_files.resolve("default", {}) == Config()  # CartPole-v1: the defaults are its tuned settings


def test_a_config_file_replaces_the_shipped_settings(tmp_path):
    path = _write(tmp_path, "hp.toml", '["Acrobot-v1"]\nlr = 0.001\n')
    config = config_files.resolve("default", {"env": "Acrobot-v1"}, path)
    assert config.lr == pytest.approx(0.001) and config.seconds == Config().seconds


def test_the_shipped_file_is_package_data():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert config_files.SHIPPED in pyproject["tool"]["setuptools"]["package-data"]["asynca3c"]


# --- errors: one line naming the file and what is wrong

ERRORS = [
    ("hp.toml", "[default]\nlr = 0.002\n[default\n", "not valid TOML: ", "line 3"),
    ("hp.yaml", "default:\n  lr: [1\n", "not valid YAML: ", "line 3"),
    ("hp.toml", "lr = 0.002\n", "top-level 'lr' = 0.002 is not a table", "[default]"),
    ("hp.yaml", "- lr\n", "expected tables of settings at the top level", "list"),
    ("hp.toml", '["CartPole-v1"]\nlrr = 0.002\n', "[CartPole-v1]: unknown field 'lrr'", "did you mean 'lr'?"),
    ("hp.toml", "[default]\nlr = -1\n", "[default]: lr=-1 is not allowed: a number > 0", ""),
    ("hp.toml", '["CartPole-v1"]\nhidden = [0]\n', "[CartPole-v1]: hidden=(0,) is not allowed", ""),
    ("hp.toml", "[default]\ngamma = 2\n", "[default]: gamma must be in [0, 1]", ""),
    ("hp.toml", "[default]\nuntil_solved = 1\n", "until_solved=1 is not allowed: true or false", ""),
    ("hp.toml", '[default]\nenv_kwargs = "x"\n', "env_kwargs='x' is not allowed: a table", ""),
    ("hp.toml", '["CartPole-v1"]\nenv = "Acrobot-v1"\n', "env belongs in [default]", ""),
    ("hp.json", "{}", "unknown format '.json'", ".toml, .yaml or .yml"),
]


@pytest.mark.parametrize(("name", "text", "message", "also"), ERRORS)
def test_bad_files_give_one_line_naming_the_file(tmp_path, name, text, message, also):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as e:
        config_files.resolve("default", {}, path)
    assert str(e.value).startswith(f"config file {path}")
    assert message in str(e.value) and also in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file") as e:
        config_files.resolve("default", {}, tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(e.value)


def test_yaml_without_pyyaml_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    with pytest.raises(ConfigError, match="pip install pyyaml"):
        config_files.load_settings(_write(tmp_path, "hp.yaml", YAML))


def test_a_bad_flag_is_not_blamed_on_the_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        config_files.resolve("default", {"lr": -2.0}, _write(tmp_path, "hp.toml", TOML))
    assert str(e.value) == "lr=-2.0 is not allowed: a number > 0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "no such file"),
        ("[default]\nlr = \n", "not valid TOML"),
        ('["CartPole-v1"]\nlrr = 1.0\n', "unknown field 'lrr'"),
        ("[default]\nagents = 0\n", "[default]: agents=0 is not allowed: an integer >= 1"),
    ],
)
def test_cli_reports_bad_files_in_one_line(assert_one_line_error, run_cli, tmp_path, text, message):
    path = tmp_path / "hp.toml"
    if text is not None:
        path.write_text(text)
    done = run_cli("train", "--config", str(path), "--run-dir", str(tmp_path / "run"), timeout=60)
    assert_one_line_error(done, message, str(path))
    assert not (tmp_path / "run").exists()


def test_cli_refuses_config_with_resume(run_cli, tmp_path):
    done = run_cli("train", "--config", str(_write(tmp_path, "hp.toml", TOML)), "--resume", str(tmp_path), timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == (
        "asynca3c: error: --config does not combine with --resume: the run's own config is the start")


def test_file_values_reach_config_json(run_cli, tmp_path):
    path = _write(tmp_path, "hp.toml", '[default]\nseed = 7\n["CartPole-v1"]\nlr = 0.0042\nn_step = 4\nhidden = [32]\n')
    run_dir = tmp_path / "run"
    done = run_cli("train", "--config", str(path), *TINY, "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert f"(preset default + {path} [default] + {path} [CartPole-v1], seed 7)" in done.stdout  # says where from
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seed"] == 7 and config["lr"] == 0.0042 and config["n_step"] == 4  # from the file
    assert config["hidden"] == [8] and config["seconds"] == 1  # flags over the file


# --- asynca3c check-env


def test_check_env_supported(run_cli):
    done = run_cli("check-env", "CartPole-v1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CartPole-v1: gymnasium's env checker passed" in done.stdout
    assert "supported: observation Box(" in done.stdout and "action Discrete(2)" in done.stdout


def test_check_env_valid_but_unsupported(run_cli):
    done = run_cli("check-env", "Blackjack-v1", "--skip-render-check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "gymnasium's env checker passed" in done.stdout
    assert "not supported: 'Blackjack-v1' has observation space Tuple(" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["NoSuchEnv-v0"], "cannot make 'NoSuchEnv-v0': Environment `NoSuchEnv` doesn't exist."),
    (["CartPole-v1", "--env-kwargs", '{"foo": 1}'], "bad keyword arguments {'foo': 1} for 'CartPole-v1'"),
    (["CartPole-v1", "--env-kwargs", "[1]"], "expected a JSON object"),
])
def test_check_env_bad_arguments(assert_one_line_error, run_cli, args, message):
    assert_one_line_error(run_cli("check-env", *args, timeout=60), message)


def test_check_env_records_warnings_even_where_they_are_errors(capsys):
    # pytest's filterwarnings = error is in force here; gymnasium warns about CartPole's infinite bounds.
    assert main(["check-env", "CartPole-v1", "--skip-render-check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("warning: UserWarning: A Box observation space") for line in out), out
    assert out[-1].startswith("supported: ")


def test_a_table_for_the_env_with_a_wrapper_applies_only_with_that_wrapper():
    masked = config_files.resolve("default", {"env": "CartPole-v1", "env_wrapper": "mask-velocity"})
    assert masked.recurrent == "lstm" and masked.env_wrapper == "mask-velocity"
    assert config_files.resolve("default", {"env": "CartPole-v1"}).recurrent == ""


def test_an_explicit_empty_wrapper_flag_overrides_a_files_wrapper(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('["CartPole-v1"]\nenv_wrapper = "mask-velocity"\n\n["CartPole-v1+mask-velocity"]\n'
                    'recurrent = "lstm"\n')
    assert config_files.resolve("default", {"env": "CartPole-v1"}, path).recurrent == "lstm"
    plain = config_files.resolve("default", {"env": "CartPole-v1", "env_wrapper": ""}, path)
    assert plain.env_wrapper == "" and plain.recurrent == ""
