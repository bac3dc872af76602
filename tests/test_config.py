"""pipeline.toml loading: defaults, validation errors as one line, CLI exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def test_default_file_loads_with_every_target():
    config = load_config(ROOT / "pipeline.toml")
    names = set(config.targets)
    assert {
        "cpu",
        "jetson-orin-nano",
        "jetson-orin-nx",
        "jetson-agx-orin",
        "jetson-xavier",
        "jetson-thor",
        "desktop",
    } <= names
    assert config.target("jetson")[0] == "jetson-agx-orin"
    assert config.targets["jetson-agx-orin"].tensorrt_majors == (8, 10, 11)
    assert config.targets["jetson-xavier"].compute_capability == "7.2"
    assert config.precision.calibration in {"entropy", "minmax", "percentile"}
    assert config.budgets["int8"].min_agreement == pytest.approx(0.99)


def test_paths_resolve_against_the_file(tmp_path):
    config = load_config(write(tmp_path, "[model]\ncheckpoint = 'ck.pt'\n"))
    assert config.path(config.model.checkpoint) == tmp_path / "ck.pt"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[precision]\ncalibraton = 'entropy'\n", "unknown key 'precision.calibraton'"),
        ("[precision]\ncalibration = 'kl'\n", "key 'precision.calibration'"),
        ("[validate]\nruns = 'many'\n", "key 'validate.runs'"),
        ("[export]\nopset = 9\n", "key 'export.opset'"),
        ("[preprocessing]\nresize = 100\ncrop = 224\n", "crop (224) must not exceed resize (100)"),
        ("[targets.x]\nbackend = 'tensorrt'\n", "needs tensorrt_versions"),
        ("[targets.x]\nbackend = 'onnxruntime'\nprofile = { min = 8, opt = 1, max = 4 }\n", "min <= opt <= max"),
        ("[aliases]\nj = 'nowhere'\n", "unknown target 'nowhere'"),
        ("banana = 1\n", "unknown key 'banana'"),
        ("[validate]\nbatch_sizes = [0]\n", "key 'validate.batch_sizes.0'"),
        ("[validate]\nbatch_sizes = []\n", "key 'validate.batch_sizes'"),
        ("[model\n", "not valid TOML"),
        # Strict types: TOML has real ones, so a quoted number or boolean is a mistake.
        ("[data]\neval_per_class = '20'\n", "key 'data.eval_per_class': Input should be a valid integer"),
        ("[model]\ntrusted_checkpoint = 'yes'\n", "key 'model.trusted_checkpoint': Input should be a valid boolean"),
        ("[validate]\ntorch_baseline = 1\n", "key 'validate.torch_baseline': Input should be a valid boolean"),
        ("[train]\nlr = '0.1'\n", "key 'train.lr': Input should be a valid number"),
        ("[preprocessing]\nmean = ['0.5', 0.5, 0.5]\n", "key 'preprocessing.mean.0': Input should be a valid number"),
        ("[model]\ncheckpoint = 3\n", "key 'model.checkpoint'"),
        ("[targets.x]\nbackend = 'onnxruntime'\nprecisions = 'fp32'\n", "key 'targets.x.precisions'"),
        ("[budgets.int8]\nmin_agreement = '0.9'\n", "key 'budgets.int8.min_agreement': Input should be a valid number"),
        # Values: std divides, so it must be > 0, and neither may be NaN or infinite.
        ("[preprocessing]\nstd = [0, 0, 0]\n", "key 'preprocessing.std.0': Input should be greater than 0"),
        ("[preprocessing]\nstd = [0.2, -0.1, 0.2]\n", "key 'preprocessing.std.1': Input should be greater than 0"),
        ("[preprocessing]\nstd = [0.2, inf, 0.2]\n", "key 'preprocessing.std.1': Input should be a finite number"),
        ("[preprocessing]\nmean = [nan, 0.5, 0.5]\n", "key 'preprocessing.mean.0': Input should be a finite number"),
        ("[preprocessing]\nmean = [0.5, 0.5]\n", "key 'preprocessing.mean.2': Field required"),
        ("[data]\nmax_image_pixels = 0\n", "key 'data.max_image_pixels': Input should be greater than or equal to 1"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert expected in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.toml")


def test_unknown_target_lists_known_ones():
    config = load_config(ROOT / "pipeline.toml")
    with pytest.raises(ConfigError, match="known targets: .*jetson-agx-orin"):
        config.target("jetson-tx1")


def test_cli_config_error_is_one_line_exit_2(tmp_path):
    path = write(tmp_path, "[train]\nepochs = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "targets", "--config", str(path)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "key 'train.epochs'" in lines[0] and str(path) in lines[0]


def test_cli_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    for command in ("build", "train", "models", "targets", "report", "generate-data", "verify"):
        assert command in result.stdout


def test_toml_integers_are_accepted_where_floats_are_expected(tmp_path):
    config = load_config(
        write(
            tmp_path,
            (
                "[train]\nlr = 1\nweight_decay = 0\n[precision]\npercentile = 100\n[preprocessing]\n"
                "mean = [0, 1, 0]\nstd = [1, 2, 1]\n"
                "[budgets.int8]\nmax_top1_drop = 2\nmin_agreement = 1\n[targets.x]\nbackend = 'onnxruntime'\n"
                "latency_budget_ms = 5\n"
                "[data]\nmax_image_pixels = 1_000_000\n"
            ),
        )
    )
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.precision.percentile == 100.0 and config.preprocessing.std == (1.0, 2.0, 1.0)
    assert config.budgets["int8"].max_top1_drop == 2.0 and config.targets["x"].latency_budget_ms == 5.0
    assert config.data.max_image_pixels == 1_000_000 and isinstance(config.model.checkpoint, Path)


def test_cli_value_error_names_file_and_key_exit_2(tmp_path):
    path = write(tmp_path, "[preprocessing]\nstd = [0, 0, 0]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "build", "--config", str(path)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{path}: key 'preprocessing.std.0': Input should be greater than 0" in lines[0]
