"""The training engine on a tiny synthetic dataset: configs, NaN detection, resume equality,
the results store and its cache, and the errors bad values raise."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from dnbook.analysis import analysis_path, measure
from dnbook.data import DataNotFoundError, DatasetSplits, dataset_info
from dnbook.engine import (
    TrainConfig,
    load_results,
    results_frame,
    run,
    train,
    trained_model,
    weights_path,
)
from dnbook.engine import runs as store_module
from dnbook.engine.profiles import PROFILES
from dnbook.engine.trainer import WarmupCosine, param_groups

NUM_CLASSES = 4


def tiny_splits(n_train: int = 48, n_eval: int = 16, size: int = 8) -> DatasetSplits:
    """Random 8x8 images whose class is written in the mean of one colour channel."""
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % NUM_CLASSES
        x = torch.randint(0, 128, (n, 3, size, size), generator=generator)
        x[:, 0] += (y * 40)[:, None, None]
        return x.to(torch.uint8), y

    return DatasetSplits(
        "tiny",
        tuple(str(k) for k in range(NUM_CLASSES)),
        *split(n_train),  # train_x, train_y
        *split(n_eval),  # val_x, val_y
        *split(n_eval),  # test_x, test_y
        mean=(120.0, 64.0, 64.0),
        std=(50.0, 37.0, 37.0),
        source="random test images",
    )


class PlantNaN(nn.Module):
    """Identity until training step ``at_step`` (1-based), NaN from then on."""

    def __init__(self, at_step: int):
        super().__init__()
        self.at_step = at_step
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        return x * math.nan if self.calls >= self.at_step else x


class _NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * math.nan


class PlantNaNGradient(nn.Module):
    """Identity forward whose backward returns NaN: a finite loss with non-finite gradients."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NaNGradient.apply(x)


class PlantWeightGradient(nn.Module):
    """``x * w`` with a scalar weight whose gradient is replaced by ``value`` everywhere: the
    input's gradient stays finite, only the parameter's is not (``inf``), or every gradient
    is finite but too large for float32 to hold their norm (``1e30``)."""

    def __init__(self, value: float):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.w.register_hook(lambda grad: torch.full_like(grad, value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def tiny_cnn(plant: nn.Module | None = None) -> nn.Module:
    layers = OrderedDict(conv=nn.Conv2d(3, 8, 3, padding=1, bias=False))
    if plant is not None:
        layers["plant"] = plant
    layers |= OrderedDict(
        norm=nn.BatchNorm2d(8),
        relu=nn.ReLU(inplace=True),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        dropout=nn.Dropout(0.2),  # consumes the global RNG: resume must restore it
        fc=nn.Linear(8, NUM_CLASSES),
    )
    return nn.Sequential(layers)


def config(**changes) -> TrainConfig:
    base = TrainConfig(epochs=3, batch_size=16, eval_batch_size=16, lr=0.1, warmup_epochs=0.5)
    return base.replace(**changes)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Checkpoints and results in a temporary folder, never in the user's cache or the repo."""
    monkeypatch.setenv("DNBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DNBOOK_RESULTS", str(tmp_path / "results"))


def quiet_train(cfg: TrainConfig, **options):
    options.setdefault("model_fn", lambda num_classes: tiny_cnn())
    return train(cfg, device="cpu", progress=False, splits=tiny_splits(), **options)


# -- config ---------------------------------------------------------------------------------


def test_hash_is_stable_and_names_the_config():
    cfg = config()
    assert cfg.hash() == config().hash()
    assert len(cfg.hash()) == 12 and int(cfg.hash(), 16) >= 0
    assert cfg.replace(seed=1).hash() != cfg.hash()
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_equivalent_norm_specs_share_a_hash():
    assert config(norm="dnb:r=16,g=1").hash() == config(norm="dnb:g=1,r=16").hash()
    assert config(norm="dnb:r=16,g=1").hash() != config(norm="dnb:r=8,g=1").hash()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": -0.1}, "lr must be > 0"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"epochs": 0}, "epochs must be a positive, finite int or float"),
        ({"epochs": -1.5}, "epochs must be a positive"),
        ({"epochs": math.inf}, "epochs must be a positive"),
        ({"epochs": math.nan}, "epochs must be a positive"),
        ({"epochs": True}, "epochs must be a positive"),
        ({"epochs": "2"}, "epochs must be a positive"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"norm": "no_such_norm"}, "no_such_norm"),
        ({"model": "no_such_model"}, "model must be one of"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_bad_values_raise_value_error(changes, message):
    with pytest.raises(ValueError, match=message):
        config(**changes)


@pytest.mark.parametrize("epochs", [1, 2, 3, 240])
def test_a_whole_float_epochs_is_the_int_config_with_the_int_hash(epochs):
    as_int, as_float = config(epochs=epochs), config(epochs=float(epochs))
    assert as_float == as_int and type(as_float.epochs) is int
    assert as_float.hash() == as_int.hash()
    assert json.dumps(as_float.to_dict()) == json.dumps(as_int.to_dict())  # "epochs": 2, not 2.0
    assert TrainConfig.from_dict({**as_int.to_dict(), "epochs": float(epochs)}) == as_int


@pytest.mark.parametrize("epochs", [0.375, 1.5, 2.75])
def test_a_fractional_epochs_is_kept_and_hashed_apart(epochs):
    cfg = config(epochs=epochs)
    assert cfg.epochs == epochs and isinstance(cfg.epochs, float)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.hash() not in {config(epochs=n).hash() for n in (1, 2, 3)}


@pytest.mark.parametrize(
    ("epochs", "steps_per_epoch", "steps"),
    [(3, 703, 2109), (1.5, 3, 5), (1.5, 6, 9), (0.375, 6250, 2344), (0.75, 1, 1), (0.01, 3, 1)],
)
def test_total_steps_rounds_halves_up_and_takes_at_least_one(epochs, steps_per_epoch, steps):
    assert config(epochs=epochs).total_steps(steps_per_epoch) == steps


def test_unknown_config_field_raises_value_error():
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({"lr": 0.1, "learning_rate": 0.1})


def test_batch_size_larger_than_the_dataset_raises_value_error():
    with pytest.raises(ValueError, match="larger than the dataset"):
        quiet_train(config(batch_size=64))


def test_missing_data_raises_an_error_that_says_how_to_get_it(monkeypatch):
    monkeypatch.delenv("DNBOOK_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="DNBOOK_DATA"):
        train(config(dataset="cifar100"), device="cpu", progress=False)


# -- schedule and weight decay ----------------------------------------------------------------


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    factor = WarmupCosine(warmup_steps=4, total_steps=12)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    decay = [factor(s) for s in range(4, 12)]
    assert decay[0] == 1.0
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert decay[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))


@pytest.mark.parametrize("norm_weight_decay", [False, True])
def test_norm_and_bias_parameters_get_no_weight_decay(norm_weight_decay):
    model = tiny_cnn()
    groups = param_groups(model, 1e-4, norm_weight_decay)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    expected = {model.conv.weight, model.fc.weight}
    if norm_weight_decay:
        expected |= {model.norm.weight, model.norm.bias, model.fc.bias}
    assert decayed == {id(p) for p in expected}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


# -- training ---------------------------------------------------------------------------------


def test_training_records_curves_and_final_metrics():
    outcome = quiet_train(config())
    assert outcome.status == "finished" and outcome.divergence is None
    assert [row["epoch"] for row in outcome.curves] == [1, 2, 3]
    assert outcome.steps == 3 * (48 // 16)
    for row in outcome.curves:
        assert 0 <= row["train_acc"] <= 100 and 0 <= row["val_acc"] <= 100
        assert math.isfinite(row["train_loss"]) and row["lr"] > 0
    final = outcome.final
    assert final["test_acc_last"] == outcome.curves[-1]["test_acc"]
    best = max(outcome.curves, key=lambda row: row["val_acc"])
    assert final["best_epoch"] == best["epoch"] and final["best_val_acc"] == best["val_acc"]
    assert 0 <= final["test_acc_at_best_val"] <= 100


def test_without_a_validation_split_the_last_epoch_counts_as_best():
    splits = tiny_splits()
    splits.val_x, splits.val_y = splits.val_x[:0], splits.val_y[:0]
    outcome = train(
        config(), device="cpu", progress=False, splits=splits, model_fn=lambda n: tiny_cnn()
    )
    assert "val_acc" not in outcome.curves[-1]
    assert outcome.final["best_epoch"] == 3 and outcome.final["best_val_acc"] is None
    assert outcome.final["test_acc_at_best_val"] == outcome.final["test_acc_last"]


@pytest.mark.parametrize("at_step", [1, 5])
def test_a_planted_nan_is_caught_and_named(at_step):
    outcome = quiet_train(config(), model_fn=lambda num_classes: tiny_cnn(PlantNaN(at_step)))
    assert outcome.status == "diverged"
    record = outcome.divergence
    assert record["step"] == at_step and record["epoch"] == 1 + (at_step - 1) // 3
    assert record["first_nonfinite"] == {"module": "plant", "type": "PlantNaN", "where": "output"}
    history = record["loss_history"]
    assert len(history) == at_step and math.isnan(history[-1])
    assert all(math.isfinite(loss) for loss in history[:-1])
    assert outcome.steps == at_step - 1  # the NaN step was not applied


def test_a_nan_gradient_is_named_by_the_module_that_produced_it():
    outcome = quiet_train(config(), model_fn=lambda num_classes: tiny_cnn(PlantNaNGradient()))
    record = outcome.divergence
    assert outcome.status == "diverged" and record["step"] == 1
    assert math.isfinite(record["loss"])
    assert record["forward"] is None
    assert record["first_nonfinite"] == {
        "module": "plant",
        "type": "PlantNaNGradient",
        "where": "grad",
    }


def test_a_non_finite_weight_gradient_is_named_by_its_module():
    outcome = quiet_train(
        config(), model_fn=lambda num_classes: tiny_cnn(PlantWeightGradient(math.inf))
    )
    record = outcome.divergence
    assert outcome.status == "diverged" and record["step"] == 1
    assert math.isfinite(record["loss"]) and record["grad_norm"] == math.inf
    assert record["forward"] is None and record["backward"] is None
    expected = {"module": "plant", "type": "PlantWeightGradient", "where": "parameter grad"}
    assert record["parameter"] == record["first_nonfinite"] == expected


def test_finite_gradients_whose_norm_overflows_are_told_apart():
    """Every gradient finite (1e30), their float32 norm infinite: the replay finds no module,
    and its own gradient norm says why."""
    outcome = quiet_train(
        config(), model_fn=lambda num_classes: tiny_cnn(PlantWeightGradient(1e30))
    )
    record = outcome.divergence
    assert outcome.status == "diverged" and record["step"] == 1
    assert record["first_nonfinite"] is None and record["parameter"] is None
    assert record["grad_norm"] == record["replay_grad_norm"] == math.inf


def stop_after_first_epoch(cfg, checkpoint):
    """Train ``cfg`` with a checkpoint at ``checkpoint`` and interrupt it after epoch 1."""

    def interrupt(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quiet_train(cfg, checkpoint_path=checkpoint, on_epoch_end=interrupt)


def test_resumed_run_equals_an_uninterrupted_run(tmp_path):
    cfg = config()
    straight = quiet_train(cfg)

    checkpoint = tmp_path / "run.pt"
    stop_after_first_epoch(cfg, checkpoint)
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1
    torch.manual_seed(123)  # whatever the global RNG did since, resuming restores it
    resumed = quiet_train(cfg, checkpoint_path=checkpoint)

    def without_times(curves):
        return [{k: v for k, v in row.items() if k != "time_s"} for row in curves]

    assert without_times(resumed.curves) == without_times(straight.curves)
    assert resumed.final == straight.final
    torch.testing.assert_close(
        resumed.model.state_dict(), straight.model.state_dict(), rtol=0, atol=0
    )


def test_a_resumed_run_keeps_the_precision_its_checkpoint_records(tmp_path, monkeypatch):
    """A run started where bf16 was chosen and resumed where float32 would be finishes in bf16
    (and records it); a checkpoint that records nothing resumes under the rule it was written
    under. The decision itself: tests/test_precision.py."""
    from dnbook.engine import precision

    monkeypatch.setattr(precision, "bf16_pays", lambda device: False)  # new runs: float32
    cfg = config(epochs=2)
    checkpoint = tmp_path / "run.pt"
    stop_after_first_epoch(cfg, checkpoint)
    state = torch.load(checkpoint, weights_only=False)
    assert state["precision"]["autocast"] is None and state["precision"]["device"] == "cpu"
    state["precision"]["autocast"] = "bfloat16"  # as if started where bf16 was chosen
    torch.save(state, checkpoint)
    with pytest.warns(UserWarning, match="resuming in bf16 autocast"):
        resumed = quiet_train(cfg, checkpoint_path=checkpoint)
    assert resumed.precision["autocast"] == "bfloat16"

    del state["precision"]  # written before checkpoints recorded it
    torch.save(state, checkpoint)
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: False)
    assert quiet_train(cfg, checkpoint_path=checkpoint).precision["autocast"] is None


# -- fractional epochs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epochs", "batch_size", "curve_epochs", "steps"),
    [
        # 48 images: 3 steps an epoch at batch 16, 6 at batch 8
        (1.5, 16, [1, 1.5], 5),  # round(4.5) = 5, halves up: 3 + 2
        (1.5, 8, [1, 1.5], 9),  # 6 + 3
        (0.5, 8, [0.5], 3),  # one partial epoch
        (2.25, 16, [1, 2, 2.25], 7),  # round(6.75) = 7: 3 + 3 + 1
    ],
)
def test_a_fractional_run_stops_part_way_through_its_last_epoch(
    epochs, batch_size, curve_epochs, steps
):
    cfg = config(epochs=epochs, batch_size=batch_size, warmup_epochs=0.1)
    steps_per_epoch = 48 // batch_size
    outcome = quiet_train(cfg)
    assert outcome.status == "finished"
    assert outcome.steps == steps == cfg.total_steps(steps_per_epoch)
    assert [row["epoch"] for row in outcome.curves] == curve_epochs
    assert [row["step"] for row in outcome.curves] == [
        min(steps, n * steps_per_epoch) for n in range(1, len(curve_epochs) + 1)
    ]
    # the partial epoch ends as any epoch does: validation and test passes
    assert {"val_acc", "test_acc", "train_loss"} <= set(outcome.curves[-1])
    assert outcome.final["best_epoch"] in curve_epochs
    assert outcome.final["test_acc_last"] == outcome.curves[-1]["test_acc"]
    # warm-up, then the cosine runs over the true total: its last step's factor is that of
    # step total - 1 of WarmupCosine(warmup, total), near zero, not cut off half-way
    lrs = outcome.step_curve and outcome.step_curve["lr"]
    warmup = round(0.1 * steps_per_epoch)
    factor = WarmupCosine(warmup, steps)
    assert lrs[-1] == pytest.approx(cfg.lr * factor(steps - 1), abs=1e-7)
    # (a schedule over whole epochs, ceil(epochs) * steps_per_epoch, would end higher)
    whole = WarmupCosine(warmup, math.ceil(epochs) * steps_per_epoch)
    assert lrs[-1] < cfg.lr * whole(steps - 1) - 1e-4
    assert outcome.curves[-1]["lr"] == pytest.approx(cfg.lr * factor(steps - 1))


def test_the_lr_of_a_fractional_run_reaches_about_zero_at_its_last_step():
    cfg = config(epochs=1.5, batch_size=1, warmup_epochs=0.1)  # 48 steps an epoch, 72 in all
    outcome = quiet_train(cfg)
    assert outcome.steps == 72
    lrs = [row["lr"] for row in outcome.curves]  # the lr of each epoch's last step
    factor = WarmupCosine(warmup_steps=5, total_steps=72)  # round(0.1 * 48) = 5
    assert lrs == pytest.approx([cfg.lr * factor(47), cfg.lr * factor(71)])
    assert lrs[0] == pytest.approx(0.0306, abs=1e-4)  # two thirds of the way down the cosine
    assert lrs[-1] == pytest.approx(0.0, abs=1e-3 * cfg.lr)


@pytest.mark.parametrize("epochs", [1.5, 2.25])
def test_a_run_resumed_before_its_partial_epoch_equals_an_uninterrupted_run(tmp_path, epochs):
    cfg = config(epochs=epochs)
    straight = quiet_train(cfg)

    checkpoint = tmp_path / "run.pt"
    last_whole = math.floor(epochs)

    def interrupt_after_the_last_whole_epoch(row):
        if row["epoch"] == last_whole:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quiet_train(
            cfg, checkpoint_path=checkpoint, on_epoch_end=interrupt_after_the_last_whole_epoch
        )
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["epoch"] == last_whole and saved["step"] == 3 * last_whole
    torch.manual_seed(123)  # whatever the global RNG did since, resuming restores it
    resumed = quiet_train(cfg, checkpoint_path=checkpoint)

    def without_times(curves):
        return [{k: v for k, v in row.items() if k != "time_s"} for row in curves]

    assert resumed.steps == straight.steps == cfg.total_steps(3)
    assert without_times(resumed.curves) == without_times(straight.curves)
    assert resumed.curves[-1]["epoch"] == epochs
    assert resumed.final == straight.final
    assert resumed.step_curve == straight.step_curve
    torch.testing.assert_close(
        resumed.model.state_dict(), straight.model.state_dict(), rtol=0, atol=0
    )
    # a checkpoint taken after the partial epoch resumes as a finished run: nothing more to train
    again = quiet_train(cfg, checkpoint_path=checkpoint)
    assert again.steps == straight.steps and without_times(again.curves) == without_times(
        straight.curves
    )


# -- results store ----------------------------------------------------------------------------


def test_run_stores_a_result_and_the_second_call_is_a_cache_hit(tmp_path, monkeypatch):
    cfg = config(epochs=1)
    options = {"splits": tiny_splits(), "model_fn": lambda num_classes: tiny_cnn()}
    result = run(cfg, profile="test", progress=False, device="cpu", **options)
    path = tmp_path / "results" / "test" / f"{cfg.hash()}.json"
    assert json.loads(path.read_text()) == result
    assert result["status"] == "finished" and result["config"] == cfg.to_dict()
    assert result["hash"] == cfg.hash() and result["seed"] == cfg.seed
    for key in ("command", "hardware", "versions", "git_commit", "wall_time_s", "timestamp"):
        assert key in result
    assert not (tmp_path / "cache" / "checkpoints" / f"{cfg.hash()}.pt").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached config was trained again")

    monkeypatch.setattr(store_module, "train", no_training)
    assert run(cfg, profile="test", progress=False, **options) == result


def synthetic_config(**changes) -> TrainConfig:
    """A real model on the in-memory synthetic dataset: what ``trained_model`` rebuilds."""
    base = TrainConfig(
        dataset="synthetic",
        n_train=64,
        n_val=32,
        n_test=32,
        epochs=1,
        batch_size=16,
        eval_batch_size=32,
        width_mult=0.25,
        lr=0.05,
    )
    return base.replace(**changes)


def test_trained_model_loads_the_kept_weights_or_retrains_the_same_ones():
    cfg = synthetic_config()
    run(cfg, profile="test", progress=False, device="cpu")
    assert weights_path(cfg).exists()
    kept = trained_model(cfg, profile="test", progress=False)
    assert not kept.training
    weights_path(cfg).unlink()  # a fresh clone: the JSON is in git, the weights are not
    retrained = trained_model(cfg, profile="test", progress=False)
    for key, value in retrained.state_dict().items():
        torch.testing.assert_close(value, kept.state_dict()[key], rtol=0, atol=0)


def test_trained_model_refuses_a_retrained_run_that_disagrees_with_the_store(tmp_path):
    cfg = synthetic_config()
    result = run(cfg, profile="test", progress=False, device="cpu")
    result["final"]["best_val_acc"] += 10.0
    path = tmp_path / "results" / "test" / f"{cfg.hash()}.json"
    path.write_text(json.dumps(result))
    weights_path(cfg).unlink()
    with pytest.raises(RuntimeError, match="stored result says"):
        trained_model(cfg, profile="test", progress=False)


def test_a_diverged_run_is_stored_not_raised():
    options = {"splits": tiny_splits(), "model_fn": lambda num_classes: tiny_cnn(PlantNaN(2))}
    result = run(config(epochs=1), profile="test", progress=False, device="cpu", **options)
    assert result["status"] == "diverged" and result["final"] is None
    assert result["divergence"]["first_nonfinite"]["module"] == "plant"


def test_load_results_filters_and_frames(tmp_path):
    options = {"splits": tiny_splits(), "model_fn": lambda num_classes: tiny_cnn()}
    for seed in (0, 1):
        run(config(epochs=1, seed=seed), profile="test", progress=False, device="cpu", **options)
    assert len(load_results("test")) == 2
    (only,) = load_results("test", seed=1)
    assert only["config"]["seed"] == 1
    assert load_results("test", status="diverged") == []
    frame = results_frame(load_results("test"))
    assert sorted(frame["seed"]) == [0, 1]
    assert {"norm", "lr", "status", "test_acc_at_best_val", "hash"} <= set(frame.columns)


def test_measure_stores_a_measurement_and_reads_it_back(tmp_path, monkeypatch):
    cfg = synthetic_config()
    run(cfg, profile="test", progress=False, device="cpu")
    calls = []

    def count_parameters(model):
        calls.append(model.training)
        return {"parameters": sum(p.numel() for p in model.parameters())}

    first = measure("size", cfg, count_parameters, profile="test")
    path = analysis_path("size", cfg, "test")
    stored = json.loads(path.read_text())
    assert stored["value"] == first and stored["hash"] == cfg.hash()
    for key in ("command", "hardware", "versions", "git_commit", "timestamp"):
        assert key in stored
    assert measure("size", cfg, count_parameters, profile="test") == first
    assert calls == [False]  # computed once, on a model in eval mode


def test_measure_rejects_a_name_that_is_not_a_word():
    with pytest.raises(ValueError, match="measurement name"):
        measure("../escape", synthetic_config(), len, profile="test")


@pytest.mark.parametrize("name", sorted(PROFILES))
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_split_size_is_the_subset_or_else_the_whole_split(name, split):
    profile = PROFILES[name]
    subset = getattr(profile, f"n_{split}")
    whole = dataset_info(profile.dataset).splits[split]
    assert profile.split_size(split) == (whole if subset is None else subset)
    assert 0 < profile.split_size(split) <= whole


def test_split_size_rejects_an_unknown_split():
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test', got 'dev'"):
        PROFILES["cpu"].split_size("dev")
