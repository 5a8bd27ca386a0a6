"""The experiments' configs, models, data modules and sweep command: parsing, shapes, bad input.

Nothing here trains (the studies' smoke tests do): every config file is parsed by the
experiments' LightningCLI and its objects built; models and data modules are checked against
independent computations (the optimizer's own weight decay, numpy's RNG state, pickled arrays).
"""

from __future__ import annotations

import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.cli import ExperimentCLI, cli_main
from experiments.data import CIFAR10DataModule, DigitsDataModule, MNIST1DDataModule, SyntheticImagesDataModule
from experiments.models import MLP, Classifier, ConvNet, MiniAlexNet
from experiments.sweep import check_sweep, run_name, sweep
from experiments.sweep import main as sweep_main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODELS = sorted((CONFIGS / "model").glob("*.yaml"))


def build(*configs: Path, overrides: tuple[str, ...] = ()) -> ExperimentCLI:
    """The objects of a configuration, without training or logging."""
    args = [item for path in configs for item in ("--config", str(path))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ExperimentCLI(args=[*args, *overrides, "--trainer.logger=false"], run=False)


# -- every config file ------------------------------------------------------------------------------
def test_config_files_exist_for_every_model_data_set_and_study():
    names = {path.relative_to(CONFIGS).as_posix() for path in CONFIGS.rglob("*.yaml")}
    assert {"trainer.yaml", "reg_sweep.yaml", "batch_size.yaml"} <= names
    assert {f"data/{name}.yaml" for name in ("digits", "mnist1d", "cifar10", "synthetic")} <= names
    models = {"lenet_300_100", "conv2", "conv4", "conv6", "mini_alexnet", "vgg_small"}
    assert {f"model/{name}.yaml" for name in models} <= names


@pytest.mark.parametrize("study", ["reg_sweep", "batch_size"])
def test_study_configs_build_the_seed_000_network_with_the_callback(study):
    cli = build(CONFIGS / f"{study}.yaml")
    network = cli.model.network
    assert isinstance(network, MiniAlexNet) and network.input_shape == cli.datamodule.input_shape == (1, 8, 8)
    assert (network.fc1.out_features, network.fc2.out_features) == (384, 192)
    assert list(cli.model.l2_layers) == ["fc1", "fc2"]
    assert [type(callback).__name__ for callback in cli.trainer.callbacks].count("SpectralCallback") == 1
    assert cli.trainer.max_epochs == {"reg_sweep": 20, "batch_size": 6}[study]


@pytest.mark.parametrize(
    ("model", "data"),
    [(path, "digits") for path in MODELS] + [(CONFIGS / "model" / "conv6.yaml", "synthetic")],
    ids=lambda item: getattr(item, "stem", item),
)
def test_each_model_config_composes_with_image_data_and_optimizer_files(model, data):
    cli = build(
        CONFIGS / "trainer.yaml", CONFIGS / "data" / f"{data}.yaml", model,
        CONFIGS / "optim" / "adam.yaml", CONFIGS / "optim" / "fc_l2.yaml",
    )  # fmt: skip
    assert cli.model.network.input_shape == cli.datamodule.input_shape
    assert cli.model.hparams["optimizer"] == "adam" and cli.model.hparams["fc_l2"] == 0.0005
    outputs = cli.model(torch.zeros(2, *cli.datamodule.input_shape))
    assert outputs.shape == (2, 10)


def test_mnist1d_config_with_the_mlp_and_a_clear_error_for_conv_nets():
    cli = build(
        CONFIGS / "trainer.yaml", CONFIGS / "data" / "mnist1d.yaml", CONFIGS / "model" / "lenet_300_100.yaml"
    )
    assert cli.model.network.input_shape == (40,)
    with pytest.raises((ValueError, SystemExit)):
        build(CONFIGS / "trainer.yaml", CONFIGS / "data" / "mnist1d.yaml", CONFIGS / "model" / "conv2.yaml")
    with pytest.raises(ValueError, match=r"ConvNet needs image inputs .* input_shape=\(40,\)"):
        ConvNet(input_shape=(40,))


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_fit_subcommand_parses_a_config(capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main(["fit", "--config", str(CONFIGS / "reg_sweep.yaml"), "--print_config"])
    assert exited.value.code == 0
    assert "experiments.models.MiniAlexNet" in capsys.readouterr().out


# -- models ----------------------------------------------------------------------------------------
def test_fc_l2_is_the_penalty_on_hidden_linear_weights_and_sgd_weight_decay_of_twice_it():
    torch.manual_seed(0)
    inputs, targets = torch.randn(16, 64), torch.randint(0, 10, (16,))
    penalized = Classifier(MLP((64,), hidden=(32, 16)), lr=0.1, momentum=0.0, fc_l2=0.01)
    expected = 0.01 * sum(penalized.network.get_submodule(n).weight.square().sum() for n in ("fc1", "fc2"))
    assert torch.allclose(penalized.l2_penalty(), expected)
    # one SGD step with the penalty == one step of torch's weight decay 2 * fc_l2 on fc1, fc2 only
    decayed = Classifier(MLP((64,), hidden=(32, 16)), lr=0.1, momentum=0.0)
    decayed.load_state_dict(penalized.state_dict())
    loss = torch.nn.functional.cross_entropy(penalized(inputs), targets) + penalized.l2_penalty()
    loss.backward()
    torch.optim.SGD(penalized.parameters(), lr=0.1).step()
    torch.nn.functional.cross_entropy(decayed(inputs), targets).backward()
    fc = [decayed.network.get_submodule(n).weight for n in ("fc1", "fc2")]
    others = [p for p in decayed.parameters() if all(p is not w for w in fc)]
    torch.optim.SGD([{"params": fc, "weight_decay": 0.02}, {"params": others}], lr=0.1).step()
    for (name, a), b in zip(penalized.state_dict().items(), decayed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_classifier_rejects_unknown_layers_optimizers_and_negative_strengths():
    with pytest.raises(ValueError, match=r"l2_layers=\['fc9'\].*fc9.*Layers with one: fc1, fc2, out"):
        Classifier(MLP(), l2_layers=["fc9"])
    with pytest.raises(ValueError, match=r"optimizer='rmsprop'.*\('sgd', 'adam', 'adamw'\)"):
        Classifier(MLP(), optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"fc_l2=-0\.1\. Must be >= 0"):
        Classifier(MLP(), fc_l2=-0.1)
    with pytest.raises(ValueError, match="no hidden fully connected layer"):
        Classifier(MLP(hidden=()), fc_l2=0.1)


def test_conv_nets_follow_their_definitions():
    conv6 = ConvNet((3, 32, 32), channels=[[64, 64], [128, 128], [256, 256]])
    convs = [m for m in conv6.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256]
    assert conv6.fc1.in_features == 256 * 4 * 4  # three 2x2 poolings of 32x32
    assert MiniAlexNet((3, 32, 32)).fc1.in_features == 64 * 8 * 8
    assert MLP((1, 28, 28), hidden=(300, 100)).fc1.in_features == 784
    with pytest.raises(ValueError, match="too small"):
        ConvNet((1, 4, 4), channels=[[8], [8], [8]])


# -- data modules ----------------------------------------------------------------------------------
def test_digits_default_split_is_the_demo_80_20_and_test_needs_a_fraction():
    data = DigitsDataModule()
    data.setup()
    assert (len(data.train_set), len(data.val_set), data.has_test) == (1437, 360, False)
    with pytest.raises(ValueError, match=r"no test split: test_fraction=0\.0"):
        data.test_dataloader()
    split = DigitsDataModule(flatten=False, val_fraction=0.1, test_fraction=0.2)
    split.setup()
    assert (len(split.train_set), len(split.val_set), len(split.test_set)) == (1257, 180, 360)
    assert split.train_set[0][0].shape == (1, 8, 8)
    with pytest.raises(ValueError, match="leaves no training data"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)


def test_mnist1d_is_generated_offline_and_leaves_the_global_rng_alone():
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    data = MNIST1DDataModule(num_samples=200, val_fraction=0.25)
    data.setup()
    assert (np.random.random(), random.random()) == expected
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (120, 40, 40)
    assert data.train_set[0][0].shape == (40,) and data.train_set[0][0].dtype == torch.float32


def test_synthetic_images_are_seeded_and_class_balanced():
    first, second = (
        SyntheticImagesDataModule(num_samples=100, size=8),
        SyntheticImagesDataModule(num_samples=100, size=8),
    )
    (a, labels), _ = first.load()
    (b, _), _ = second.load()
    assert torch.equal(a, b) and a.shape == (100, 3, 8, 8)
    assert torch.bincount(labels).tolist() == [10] * 10
    (other, _), _ = SyntheticImagesDataModule(num_samples=100, size=8, data_seed=1).load()
    assert not torch.equal(a, other)


def test_cifar10_reads_python_batches_from_the_given_directory(tmp_path):
    rng = np.random.default_rng(0)
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    images = {}
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        images[name] = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        with (batches / name).open("wb") as handle:
            pickle.dump({b"data": images[name], b"labels": list(range(4))}, handle)
    data = CIFAR10DataModule(str(tmp_path), val_fraction=0.25)
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (15, 5, 4)
    train = np.concatenate([images[f"data_batch_{i}"] for i in range(1, 6)]).reshape(-1, 3, 32, 32) / 255
    mean, std = train.mean(axis=(0, 2, 3), keepdims=True), train.std(axis=(0, 2, 3), keepdims=True)
    expected = (images["test_batch"].reshape(-1, 3, 32, 32) / 255 - mean) / std
    assert np.allclose(data.test_set.tensors[0].numpy(), expected, atol=1e-5)
    with pytest.raises(
        FileNotFoundError, match=r"No CIFAR-10 python batches in data_dir=.*data_batch_1.*test_batch"
    ):
        CIFAR10DataModule(str(tmp_path / "missing")).setup()


# -- the sweep command's bad input -----------------------------------------------------------------
def test_sweep_names_the_available_settings_for_an_unknown_knob():
    with pytest.raises(ValueError, match=r"Unknown knob 'model.init_args.fc_l3'.*model.init_args.fc_l2"):
        check_sweep([CONFIGS / "reg_sweep.yaml"], "model.init_args.fc_l3", ["0"])
    with pytest.raises(ValueError, match=r"Invalid value 'abc' for model.init_args.fc_l2"):
        check_sweep([CONFIGS / "reg_sweep.yaml"], "model.init_args.fc_l2", ["0", "abc"])
    with pytest.raises(ValueError, match="more than once: 0"):
        check_sweep([CONFIGS / "reg_sweep.yaml"], "model.init_args.fc_l2", ["0", "1", "0"])


def test_sweep_command_exits_2_on_bad_input_and_never_overwrites_unasked(tmp_path, capsys):
    code = sweep_main(["--config", str(CONFIGS / "reg_sweep.yaml"), "--knob", "model.lr", "--values", "1"])
    assert code == 2 and "Unknown knob 'model.lr'" in capsys.readouterr().err
    existing = tmp_path / "reg_sweep" / run_name("model.init_args.fc_l2", "0")
    existing.mkdir(parents=True)
    (existing / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        sweep([CONFIGS / "reg_sweep.yaml"], "model.init_args.fc_l2", ["0"], runs=tmp_path)
    (tmp_path / "reg_sweep" / "fc_l2_1").mkdir()
    with pytest.raises(FileExistsError, match="not a run directory"):
        sweep([CONFIGS / "reg_sweep.yaml"], "model.init_args.fc_l2", ["1"], runs=tmp_path, overwrite=True)
