import pytest

from fewframes.config import PRESETS, ConfigError, ModelConfig, StudentConfig, TrainConfig, get_preset


def test_config_round_trips_through_a_dict():
    student = StudentConfig(k=30, frame_selection="uniform", loss="rep_ce", mode="parallel")
    assert StudentConfig.from_dict(student.to_dict()) == student
    train = TrainConfig(epochs=3, batch_size=8)
    assert TrainConfig.from_dict(train.to_dict()) == train


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match="unknown field.*nope"):
        TrainConfig.from_dict({"epochs": 2, "nope": 1})


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: StudentConfig(k=0), "k"),
        (lambda: StudentConfig(k=5, frame_selection="sideways"), "frame_selection"),
        (lambda: StudentConfig(k=5, loss="l1"), "loss"),
        (lambda: StudentConfig(k=5, mode="both"), "mode"),
        (lambda: ModelConfig(num_classes=0), "num_classes"),
        (lambda: TrainConfig(train_fraction=0.0), "train_fraction"),
    ],
)
def test_invalid_values_name_their_field(make, field):
    with pytest.raises(ConfigError, match=field):
        make()


def test_paper_defaults_are_the_papers():
    train = TrainConfig()
    assert (train.epochs, train.batch_size, train.learning_rate, train.lr_decay) == (5, 256, 1e-3, 0.95)
    model = get_preset("paper").model_config()
    assert (model.hidden_size, model.num_layers, model.block_length, model.dropout) == (1024, 2, 20, 0.5)
    assert set(PRESETS) >= {"tiny", "demo", "paper"}
    with pytest.raises(ConfigError, match="--preset"):
        get_preset("huge")


def test_env_number_names_the_variable_and_refuses_bad_values(monkeypatch) -> None:
    from fewframes.config import env_number

    monkeypatch.delenv("FEWFRAMES_TEST_N", raising=False)
    assert env_number("FEWFRAMES_TEST_N", 7, ConfigError) == 7
    monkeypatch.setenv("FEWFRAMES_TEST_N", " 3 ")
    assert env_number("FEWFRAMES_TEST_N", 7, ConfigError) == 3
    monkeypatch.setenv("FEWFRAMES_TEST_N", "0.5")
    assert env_number("FEWFRAMES_TEST_N", 1.0, ConfigError, kind=float, positive=True) == 0.5
    for bad, message in (("x", "expected a whole number, got 'x'"), ("-1", "must be >= 0, got -1")):
        monkeypatch.setenv("FEWFRAMES_TEST_N", bad)
        with pytest.raises(ConfigError, match=rf"^\$FEWFRAMES_TEST_N: {message}$"):
            env_number("FEWFRAMES_TEST_N", 0, ConfigError)
    for bad in ("0", "nan"):
        monkeypatch.setenv("FEWFRAMES_TEST_N", bad)
        with pytest.raises(ConfigError, match=r"^\$FEWFRAMES_TEST_N: must be > 0"):
            env_number("FEWFRAMES_TEST_N", 1.0, ConfigError, kind=float, positive=True)


def test_plateau_preset_carries_its_family_and_early_stopping():
    plateau = get_preset("plateau")
    model = plateau.model_config()
    assert (model.family, model.clusters, model.hidden_size) == ("netvlad", 8, 64)
    assert plateau.train.patience > 0 and plateau.train.epochs > plateau.train.patience
    assert plateau.ks == (6, 10, 15, 20, 30)
    # A preset's family is the default; asking for another family keeps the sizes.
    assert plateau.model_config(family="hrnn").family == "hrnn"
    assert get_preset("report").model_config().family == "hrnn"
