"""What evaluate.py evaluates with (augself_jax/trained_config.py): the workdir's config.json
read back with the code's types; a given config checked against the checkpoint's record
(what was trained must match, the eval section and the data location are the
evaluation's, the rest is the training's)."""

import json

import pytest
from test_train_support import load_config

from augself_jax import trained_config
from augself_jax.errors import ConfigError
from augself_jax.train.resume_contract import contract


@pytest.fixture
def trained():
    """A run's config as main.py records it: the preset with two training overrides."""
    c = load_config("simclr_augself", "shapes")
    c.batch_size, c.total_steps = 16, 40
    return c


def test_config_json_reads_back_with_the_codes_types(trained, tmp_path):
    (tmp_path / "config.json").write_text(trained.to_json_best_effort(indent=2))
    loaded = trained_config.load(str(tmp_path))
    assert json.loads(loaded.to_json_best_effort()) == json.loads(trained.to_json_best_effort())
    assert isinstance(loaded.aug.crop_scale, tuple)  # JSON wrote a list
    assert loaded.eval.data_dir is None
    loaded.eval.data_dir = "/data"  # a field recorded as null keeps its type (str): settable
    with pytest.raises(TypeError):
        loaded.batch_size = "sixteen"


def test_a_missing_or_broken_config_json_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="config.json does not exist .* pass the training's "
                                          "--config"):
        trained_config.load(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        trained_config.load(str(tmp_path))


def test_what_was_trained_must_match_the_checkpoints_record(trained):
    recorded = contract(trained, 40)  # what a checkpoint's meta holds
    given = load_config("byol_augself", "shapes")
    with pytest.raises(ConfigError) as e:
        trained_config.for_evaluation(given, trained, recorded, "runs/x/checkpoints")
    line = str(e.value)
    # Labelled by the method, the first of the trained fields, whatever sorts first.
    assert line.startswith('method: the checkpoint in runs/x/checkpoints was trained with '
                           'another config: method.name "simclr" -> "byol"')
    assert "\n" not in line and "Leave out --config" in line
    wider = load_config("simclr_augself", "shapes")
    wider.model.width = trained.model.width * 2
    with pytest.raises(ConfigError, match=f"^model: .*model.width {trained.model.width} -> "
                                          f"{trained.model.width * 2}"):
        trained_config.for_evaluation(wider, trained, recorded, "runs/x/checkpoints")


def test_the_eval_section_is_free_and_the_rest_is_the_trainings(trained):
    given = load_config("simclr_augself", "shapes")  # the preset's batch size and schedule
    given.eval.protocols, given.data.data_dir = "knn", "/elsewhere"
    config, kept = trained_config.for_evaluation(given, trained, contract(trained, 40), "w")
    assert (config.batch_size, config.total_steps) == (16, 40)  # as trained
    assert config.eval.protocols == "knn" and config.data.data_dir == "/elsewhere"
    assert given.batch_size != 16 and given.total_steps != 40
    assert kept == [f"batch_size 16 (given {given.batch_size})",
                    f"total_steps 40 (given {given.total_steps})"]
    # Without a config.json (an older run) the given config is used as it is, once checked.
    same, kept = trained_config.for_evaluation(given, None, contract(trained, 40), "w")
    assert same is given and kept == []
