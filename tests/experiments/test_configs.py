"""Every option of every config group composes in-process with the real configs, and what it builds builds:
a plug-in that breaks fails here in seconds, not in a subprocess minutes later."""

from __future__ import annotations

import functools
import re

import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from src.experiments.config import CONFIG_DIR, check_config
from src.experiments.wiring import build_datamodule
from src.utils.errors import ConfigError
from tests.conftest import compose_config

GROUPS = (
    "data",
    "model",
    "weights",
    "augment",
    "train_augment",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "extras",
    "debug",
    "hparams_search",
)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@functools.cache
def _needs_root(option: str) -> bool:
    """A dataset the user points at (data.root: ???), not one generated on first use."""
    return OmegaConf.is_missing(compose_config("train", [f"data={option}"]).data, "root")


CASES = [(group, option) for group in GROUPS for option in _options(group)]


@pytest.mark.parametrize("group, option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_group_option_composes_and_passes_the_config_checks(group, option, tmp_path):
    overrides = [f"{group}={option}", f"paths.data_dir={tmp_path}"]
    if group == "data" and _needs_root(option):
        overrides.append(f"data.root={tmp_path}/dataset")
    for name in ("train", "evaluate", "predict"):
        if (
            (group in ("callbacks", "train_augment") and name != "train")
            or (group == "augment" and name == "train")
            or (group == "experiment" and name != "evaluate")
            or (group == "hparams_search" and name != "train")
            or (group == "debug" and (name == "predict" or (name == "evaluate" and option == "overfit")))
        ):
            continue
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(name, overrides=overrides, return_hydra_config=True)
        assert cfg.hydra.callbacks.prepare_sweep._target_.endswith("PrepareSweep")
        if group == "trainer" and option == "gpu" and not torch.cuda.is_available():
            with pytest.raises(
                ConfigError, match="trainer.accelerator='gpu': no such device on this machine"
            ):
                check_config(cfg)  # judged before the run, without building a Trainer: one line at once
        elif group == "trainer" and option == "mps" and not torch.backends.mps.is_available():
            with pytest.raises(ConfigError, match="trainer.accelerator='mps': no such device"):
                check_config(cfg)
        elif group != "experiment":
            check_config(cfg)


@pytest.mark.parametrize("option", _options("augment"))
def test_every_perturbation_builds_its_transform_with_title_and_axis(option):
    cfg = compose_config("evaluate", [f"augment={option}"])
    transform = hydra.utils.instantiate(cfg.augment.transform)(size=64)
    out = transform(images=np.zeros((2, 80, 80, 3), np.uint8))["images"]
    assert np.asarray(out).shape == (2, 64, 64, 3)
    assert cfg.augment.title and isinstance(cfg.augment.axis, int)


@pytest.mark.parametrize("option", _options("weights"))
def test_every_weight_source_is_an_object_hydra_builds(option):
    cfg = compose_config("evaluate", [f"weights={option}"])
    source = hydra.utils.instantiate(cfg.weights)
    assert callable(source) and source.name == option


@pytest.mark.parametrize("option", _options("data"))
def test_every_dataset_builds_its_datamodule_without_touching_data(option, tmp_path):
    overrides = [f"data={option}", f"paths.data_dir={tmp_path}/data"]
    if _needs_root(option):
        with pytest.raises(Exception, match="root not found"):  # a missing root fails before any run starts
            build_datamodule(compose_config("train", [*overrides, f"data.root={tmp_path}/missing"]))
        (tmp_path / "dataset").mkdir()
        overrides.append(f"data.root={tmp_path}/dataset")
    datamodule = build_datamodule(compose_config("train", overrides))
    assert datamodule.hparams.name == option
    assert not (tmp_path / "data").exists(), "building the datamodule generated or cached something"
    assert not (tmp_path / "dataset").exists() or not any((tmp_path / "dataset").iterdir())


def test_a_misspelt_data_key_is_refused_naming_it():
    cfg = compose_config("train", ["+data.fols=3"])
    with pytest.raises(
        Exception, match=r"data\.fols: no such key"
    ) as error:  # Hydra wraps what the module raised
        build_datamodule(cfg)
    assert isinstance(error.value.__cause__, ConfigError)


def test_the_tracking_uri_is_defined_once():
    from src.experiments.config import PROJECT_ROOT
    from src.experiments.tracking import default_tracking_uri

    text = "".join(p.read_text() for p in CONFIG_DIR.rglob("*.yaml"))
    assert text.count("oc.env:MLFLOW_TRACKING_URI") == 1
    assert "sqlite:///" not in (PROJECT_ROOT / "Makefile").read_text()
    assert default_tracking_uri() == compose_config("train").paths.tracking_uri


# -- structured configs: what fails at composition, and how it reads ----------------------------------
def _composition_error(name: str, overrides: list[str]):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        compose_config(name, overrides)
    return error.value


@pytest.mark.parametrize(
    ("name", "override"),
    [
        ("train", "trainer.max_epochs=two"),
        ("train", "seed=abc"),
        ("train", "test_after_fit=maybe"),
        ("train", "model.batch_size=big"),
        ("train", "model.input.frames_per_clip=many"),
        ("train", "model.channels_last=sometimes"),
        ("evaluate", "augment.axis=left"),
        ("evaluate", "weights.train_seed=first"),
        ("audit", "audit.bootstrap_resamples=lots"),
    ],
)
def test_a_value_of_the_wrong_type_fails_at_composition_in_one_line_naming_the_key(name, override):
    error = _composition_error(name, [override])
    from src.experiments.config import config_error_line

    line = config_error_line(error)
    assert line.startswith(f"{override}: Value ") and "\n" not in line


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "trainer.max_epoch=2",
            "Could not override 'trainer.max_epoch': no such key in trainer (did you mean "
            "trainer.max_epochs?)",
        ),
        (
            "model.batchsize=8",
            "Could not override 'model.batchsize': no such key in model (did you mean model.batch_size?)",
        ),
        ("weights.weights_dri=/w", "no such key in weights (did you mean weights.weights_dir?)"),
        (
            "train_augment.levl=x",  # codespell:ignore
            "no such key in train_augment (did you mean train_augment.level?)",
        ),
        (
            "ckpt_pth=last",
            "Could not override 'ckpt_pth': no such key in the config (did you mean ckpt_path?)",
        ),
    ],
)
def test_a_misspelt_key_fails_at_composition_with_the_closest_key(override, message):
    error = _composition_error("train", [override])
    from src.experiments.config import config_error_line

    line = config_error_line(error)
    assert message in line and "+" not in line and "\n" not in line


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # Hydra's own hint for a misspelt key: it composes, then failed in Lightning 13 s later
        (
            "+trainer.max_epoch=2",
            "trainer.max_epoch: no such key in trainer (did you mean trainer.max_epochs?)",
        ),
        (
            "+model.input.frame_per_clip=2",
            "model.input.frame_per_clip: no such key in model.input (did you mean "
            "model.input.frames_per_clip?)",
        ),
        ("+model.net.hidden=8", "model.net.hidden: MesoInception4 takes no such argument"),
        ("+seeds=3", "seeds: no such key in the config (did you mean seed?)"),
    ],
)
def test_a_key_added_with_plus_that_no_schema_declares_fails_the_config_check(override, message):
    cfg = compose_config("train", [override])
    with pytest.raises(ValueError) as error:  # a ConfigError
        check_config(cfg)
    assert message in str(error.value)


def test_a_missing_mandatory_value_is_named_with_the_fix():
    with pytest.raises(
        ValueError, match=r"^data\.root has no value and is mandatory here: add data\.root=<value>"
    ):
        check_config(compose_config("train", ["data=celebdf"]))
    # scoring video files needs no dataset root
    check_config(compose_config("predict", ["data=celebdf", "videos=/some/folder"]))


def test_values_the_schemas_cannot_refuse_are_checked():
    for overrides, message in [
        (["trainer.precision=99"], "trainer.precision=99: choose one of 64, 32, 16, transformer-engine"),
        (["trainer.precision=bf17"], "trainer.precision='bf17': choose one of"),
        (["trainer.gradient_clip_val=abc"], "trainer.gradient_clip_val='abc': must be int or float or null"),
        (["model.pos_weight=-1"], "model.pos_weight=-1: null, a positive number, or auto"),
        (["model.batch_size=0"], "model.batch_size=0: must be an integer >= 1"),
        (["model.input.size=8"], "model.input.size=8: must be an integer >= 16"),
        (["model.input.size=128"], "model.input.size=128: this net has a fixed 256x256 input"),
        (["model.input.kind=video"], "model.input.kind='video': must be frame or clip"),
        (
            ["model=resnet_lstm", "data.frames_per_video=4"],
            "model.input.frames_per_clip=20 > data.frames_per_video=4",
        ),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0: must be at least 1"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_config(compose_config("train", overrides))
    check_config(compose_config("train", ["model.pos_weight=auto"]))


@pytest.mark.parametrize(
    "config, override, message",
    [
        (
            "train",
            "trainer.devices=abc",
            "trainer.devices='abc': `devices` selected with `CPUAccelerator` should be an int > 0",
        ),
        ("evaluate", "trainer.devices=0", "trainer.devices=0: `devices` selected with `CPUAccelerator`"),
        (
            "train",
            "trainer.limit_train_batches=-1",
            "trainer.limit_train_batches=-1: an int >= 0 (batches) or a float in [0, 1]",
        ),
        ("train", "trainer.accelerator=gpuu", "trainer.accelerator='gpuu': choose one of auto, gpu, cpu"),
        ("train", "trainer.val_check_interval=0", "trainer.val_check_interval=0: must be > 0"),
        ("train", "model.optimizer.lr=-1", "model.optimizer: Invalid learning rate: -1"),
        (
            "train",
            "callbacks.early_stopping.patience=abc",
            "callbacks.early_stopping.patience='abc': must be int",
        ),
        (
            "train",
            "callbacks.early_stopping.min_delta=x",
            "callbacks.early_stopping.min_delta='x': must be float",
        ),
        (
            "train",
            "callbacks.model_checkpoint.save_top_k=1.5",
            "callbacks.model_checkpoint.save_top_k=1.5: must be int",
        ),
    ],
)
def test_values_only_their_constructor_can_judge_fail_the_config_check(config, override, message):
    """Judged in the check, without building a Trainer (the accelerator and devices through Lightning's
    accelerator registry; the optimizer on a stand-in parameter, the callbacks): these failed after the MLflow
    run had started (a traceback and a FAILED run), or not at all (a patience of 'abc' ran until its first
    comparison)."""
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(config, [override]))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("group", ["model", "weights", "trainer"])
def test_the_generated_schemas_are_the_constructors_signatures(group):
    """Each key is declared once, by what it builds: the schema has one field per constructor argument, with
    its default (MISSING where it has none), so trainer.<any Trainer argument>= works without `+`."""
    import dataclasses
    import inspect

    from hydra.utils import get_class
    from omegaconf import MISSING

    from src.experiments.schemas import model_schema, trainer_schema, weights_schemas

    schemas = {
        "model": [model_schema()],
        "weights": list(weights_schemas().values()),
        "trainer": [trainer_schema()],
    }
    for schema in schemas[group]:
        fields = {f.name: f for f in dataclasses.fields(schema)}
        target = fields.pop("_target_").default
        fields.pop("_convert_", None)
        signature = inspect.signature(get_class(target)).parameters
        assert list(fields) == list(signature), schema.__name__
        for name, parameter in signature.items():
            field = fields[name]
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default
            if parameter.default is inspect.Parameter.empty or (group, name) == ("model", "name"):
                assert default == MISSING, name  # a model config names its model: runs are tagged with it
            elif name in ("input", "pretrained"):  # typed nodes of their own: input contract, pretrained spec
                assert dataclasses.is_dataclass(default) and parameter.default is None, name
            else:
                assert default == parameter.default, name


def test_the_generated_schemas_keep_the_types_omegaconf_knows():
    import typing

    from src.experiments.schemas import model_schema, trainer_schema

    hints = typing.get_type_hints(trainer_schema())
    assert hints["max_epochs"] == typing.Optional[int]  # noqa: UP045
    assert hints["limit_train_batches"] is typing.Any  # an int counts batches, a float is a fraction
    assert typing.get_type_hints(model_schema())["batch_size"] is int


@pytest.mark.parametrize(
    "override",
    [
        "model=shared/input",
        "model=shared/optimization",
        "experiment=shared/deepfakebench_faces",
        "model=includes/model",
    ],
)
def test_partials_are_not_options_of_a_group(override):
    """What the models and experiments include (conf/includes/) is not offered as one of them."""
    from hydra.errors import MissingConfigException

    from src.experiments.config import config_error_line

    with pytest.raises(MissingConfigException) as error:
        compose_config("evaluate", [override])
    line = config_error_line(error.value)
    assert "Could not find" in line and "\n" not in line
    if override.startswith("model="):
        assert line.endswith("choose one of efficientnet_lstm, meso4, mesonet, resnet_lstm, xception")
    assert not any(p.is_dir() for group in ("model", "experiment") for p in (CONFIG_DIR / group).iterdir())


def test_trainer_overrides_keep_lightnings_meaning():
    cfg = compose_config(
        "train",
        [
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=0.5",
            "trainer.gradient_clip_val=1",
            "trainer.max_epochs=3",
        ],
    )
    # an int counts batches, a float is a fraction: the schema must not turn 2 into 2.0
    assert cfg.trainer.limit_train_batches == 2 and isinstance(cfg.trainer.limit_train_batches, int)
    assert cfg.trainer.limit_val_batches == 0.5 and cfg.trainer.gradient_clip_val == 1.0
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert trainer.max_epochs == 3 and trainer.limit_train_batches == 2 and trainer.gradient_clip_val == 1.0


def test_composition_errors_print_one_line_from_the_command_line(monkeypatch, capsys):
    """What `python train.py trainer.max_epochs=two` prints through cli.run: one line, exit code 1."""
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from src.experiments.cli import run

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
    def main(cfg):
        raise AssertionError("the config should not have composed")

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    for override, expected in [
        (
            "trainer.max_epochs=two",
            "Error: trainer.max_epochs=two: Value 'two' of type 'str' could not be converted to Integer",
        ),
        (
            "model=mesonett",
            "Error: Could not find 'model/mesonett'; choose one of efficientnet_lstm, meso4, "
            "mesonet, resnet_lstm, xception",
        ),
        (
            "model=null",
            "Error: model=null: model cannot be left empty; choose one of efficientnet_lstm, meso4, "
            "mesonet, resnet_lstm, xception",
        ),
    ]:
        monkeypatch.setattr(sys, "argv", ["train.py", override])
        try:
            with pytest.raises(SystemExit) as exit:
                run(main)
        finally:
            GlobalHydra.instance().clear()
        assert exit.value.code == 1
        assert capsys.readouterr().err.strip().splitlines() == [expected]
    assert "HYDRA_FULL_ERROR" not in __import__("os").environ


def test_a_null_config_group_on_the_command_line_selects_its_none_option(monkeypatch, tmp_path):
    """`logger=null` (as a user writes "no logger") runs without a logger; Hydra 1.3 alone refuses it with a
    traceback. Sweeps are rewritten item by item; other overrides pass untouched."""
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from src.experiments.cli import null_group_overrides, run

    assert null_group_overrides(
        [
            "logger=null",
            "augment=none,null",
            "logger.tracking_uri=null",
            "~logger",
            "+logger=null",
            "data.root=null",
        ]
    ) == [
        "logger=none",
        "augment=none,none",
        "logger.tracking_uri=null",
        "~logger",
        "+logger=null",
        "data.root=null",
    ]
    seen = {}

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
    def main(cfg):
        seen["logger"] = OmegaConf.to_container(cfg.logger)

    monkeypatch.setattr(sys, "argv", ["evaluate.py", "logger=null", "hydra.run.dir=."])
    monkeypatch.chdir(tmp_path)
    try:
        run(main)
    finally:
        GlobalHydra.instance().clear()
    assert seen["logger"] == OmegaConf.to_container(compose_config("evaluate", ["logger=none"]).logger)
    assert sys.argv[1] == "logger=none"


# -- input contract and model registry ----------------------------------------------------------------
@pytest.mark.parametrize("option", _options("model"))
def test_the_input_contract_is_the_nets_own(option):
    from src.models.contract import input_contract_of, net_class

    cfg = compose_config("train", [f"model={option}"])
    contract = OmegaConf.to_container(cfg.model.input, resolve=True)
    assert contract == input_contract_of(cfg.model.net)
    assert contract["kind"] == net_class(cfg.model.net._target_).input_kind
    text = (CONFIG_DIR / "model" / f"{option}.yaml").read_text()
    assert not re.search(r"^\s*(input|size|mean|std|frames_per_clip):", text, re.M), (
        "the yaml repeats the contract"
    )


def test_one_field_of_the_contract_can_still_be_overridden():
    cfg = compose_config(
        "train", ["model=resnet_lstm", "model.input.frames_per_clip=8", "model.input.size=112"]
    )
    assert (cfg.model.input.frames_per_clip, cfg.model.input.size, cfg.model.input.kind) == (8, 112, "clip")
    datamodule = build_datamodule(
        compose_config(
            "train",
            [
                "model=resnet_lstm",
                "model.input.frames_per_clip=8",
                "model.input.size=112",
                "data.frames_per_video=8",
            ],
        )
    )
    assert (datamodule.input.frames_per_clip, datamodule.input.size) == (8, 112)
    assert list(cfg.model.input.mean) == pytest.approx([0.485, 0.456, 0.406])


def test_instantiate_builds_the_data_module_and_the_model_from_a_composed_config(tmp_path):
    """Hydra builds the parts: `instantiate(cfg.data)` and `instantiate(cfg.model)`, nothing of our own between."""
    from src.data.datamodule import DeepfakeDataModule
    from src.models.module import DeepfakeDetector

    for option in _options("data"):
        overrides = [f"data={option}", f"paths.data_dir={tmp_path}"]
        if _needs_root(option):
            overrides.append(f"data.root={tmp_path}")
        cfg = compose_config("train", [*overrides, "data.fold=1", "data.face_margin=1.5"])
        datamodule = hydra.utils.instantiate(cfg.data)
        assert isinstance(datamodule, DeepfakeDataModule) and datamodule.name == option
        assert datamodule.split.fold == 1 and datamodule.crops.face_margin == 1.5
    for option in _options("model"):
        module = hydra.utils.instantiate(compose_config("train", [f"model={option}"]).model)
        assert isinstance(module, DeepfakeDetector) and module.name == option


def test_no_group_reads_another_groups_keys():
    """Each group's YAML reads only its own keys (and paths): the task function wires groups together."""
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        group = path.relative_to(CONFIG_DIR).parts[0]
        if group in ("hydra", "experiment", "includes") or path.parent == CONFIG_DIR:
            continue  # the top-level configs, presets and includes combine groups on purpose
        read = set(re.findall(r"\$\{(?:oc\.select:)?([a-z_]+)\.", path.read_text())) - {
            "oc"
        }  # oc.env, oc.decode
        assert read <= {group, "paths", "hydra"}, (
            f"{path.relative_to(CONFIG_DIR)} reads {read - {group, 'paths'}}"
        )


def test_each_data_key_is_declared_once():
    """A data key's type, default and range live in one settings field; the YAMLs only set values."""
    import dataclasses

    from src.data.settings import SETTINGS, DataConfig

    fields = [f.name for group in SETTINGS.values() for f in dataclasses.fields(group)]
    assert len(fields) == len(set(fields))
    schema = {f.name: f.default for f in dataclasses.fields(DataConfig)}
    for group in SETTINGS.values():
        for field in dataclasses.fields(group):
            assert schema[field.name] == field.default, field.name
    with pytest.raises(ConfigError, match=r"^data\.fold=3 is out of range for data\.folds=3"):
        check_config(compose_config("train", ["data.folds=3", "data.fold=3"]))


def test_train_refuses_a_test_time_perturbation_naming_where_it_belongs(monkeypatch, capsys):
    """`python train.py augment=heavy` used to change only the final test, silently."""
    import sys

    from src.experiments.cli import run

    monkeypatch.setattr(sys, "argv", ["train.py", "augment=heavy"])
    with pytest.raises(SystemExit) as exit:
        run(lambda: pytest.fail("train ran"), task="train")
    assert exit.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        "Error: augment=heavy: train.py has no test-time perturbation: training augmentation is "
        "train_augment=weak|strong"
    )
    assert "augment" not in compose_config("train") and compose_config("train").train_augment.level == "weak"


def test_prepare_refuses_a_model_naming_what_it_takes(monkeypatch, capsys):
    import sys

    from src.experiments.cli import run

    monkeypatch.setattr(sys, "argv", ["prepare.py", "model=xception"])
    with pytest.raises(SystemExit) as exit:
        run(lambda: pytest.fail("prepare ran"), task="prepare")
    assert exit.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("Error: model=xception: prepare.py builds the face-crop cache of data=<...>")


def test_a_library_error_raised_while_a_stop_signal_unwinds_still_exits_as_the_signal(monkeypatch):
    """A signal lands anywhere: when a library's cleanup then fails (OmegaConf's flag cache during Hydra's
    composition of the next job), the process still ends with 128 + signal, not 1."""
    import signal
    import sys

    from hydra.errors import ConfigCompositionException

    from src.experiments.cli import run
    from src.utils.signals import SignalExit

    def main():
        try:
            try:
                raise SignalExit(signal.SIGTERM)
            finally:
                None._invalidate_flags_cache()  # noqa: B018 - what OmegaConf's cleanup did
        except AttributeError as error:
            raise ConfigCompositionException("Error merging overrides") from error

    monkeypatch.setattr(sys, "argv", ["evaluate.py"])
    with pytest.raises(SystemExit) as exit:
        run(main, task="evaluate")
    assert exit.value.code == 128 + signal.SIGTERM
