"""The profiles and the experiment registry: every experiment builds valid configurations at
every profile, keeps the paper's settings, shares repeated runs, and stays cheap at ``ci``."""

import json

import pytest
import torch

from dnbook.engine import TrainConfig, runner
from dnbook.engine.profiles import PROFILES, Profile, get_profile
from dnbook.experiments import (
    EXPERIMENTS,
    announce,
    configs,
    estimate,
    estimate_steps,
    reproduce,
    warmup_epochs,
)

REQUIRED = {
    "table1",
    "table2",
    "table3_resnet18",
    "table3_resnet34",
    "table4",
    "table6",
    "table7",
    "table8",
    "fig1",
    "fig5",
    "dnc_failure",
    "small_batch",
}


def _settings(name, profile="ci"):
    """(norm, lr, batch_size, model) of each configuration of an experiment."""
    return {(c.norm, c.lr, c.batch_size, c.model) for c in configs(name, profile)}


# Experiments of the book that are not in the paper.
BOOK_ONLY = {
    "dnb_design",
    "dnb_design_v2",
    "dnb_design_v2_mobilenet",
    "table8_normalized_input",
    "table2_low_lr",
    "lr_sweep",
    "cpu_pilot",
    "bn_testbed",
    "small_batch_testbed",
}


def test_every_experiment_of_the_paper_is_registered():
    assert set(EXPERIMENTS) == REQUIRED | BOOK_ONLY
    for experiment in EXPERIMENTS.values():
        assert experiment.title and experiment.paper_ref


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_configs_follow_the_profile(name, profile):
    p = PROFILES[profile]
    built = configs(name, profile)
    assert built and all(isinstance(c, TrainConfig) for c in built)
    # The one documented departure: small_batch trains on 128 images at ci, to fit CI's time.
    n_train = 128 if (name, profile) == ("small_batch", "ci") else p.n_train
    for c in built:
        assert (c.dataset, c.n_train, c.n_val, c.n_test, c.stem) == (
            p.dataset,
            n_train,
            p.n_val,
            p.n_test,
            p.stem,
        )
        assert c.width_mult == (
            p.resnet_width_mult if c.model.startswith("resnet") else p.width_mult
        )
        assert c.epochs == p.epochs_for(c.batch_size)
        assert c.eval_batch_size <= min(n for n in (p.n_val, p.n_test, 10**9) if n)
    # every variant is trained once per seed of the profile (its headline seeds for a
    # headline comparison)
    seeds = p.seeds_for(EXPERIMENTS[name].headline)
    assert len(built) % len(seeds) == 0
    assert {c.seed for c in built} == set(seeds)
    # every configuration has a label for the report
    assert {c.hash() for c in built} <= set(EXPERIMENTS[name].labels(profile))


def test_configs_keep_the_papers_settings():
    bn, dnb1, dnb_oup = "bn", "dnb:r=16,g=1", "dnb:r=16,g=oup"
    mnv2 = "mobilenet_v2"
    assert _settings("table1") == {
        (bn, 0.2, 64, mnv2),
        ("dnc:r=16,merge=fc1,shift=linear", 0.1, 64, mnv2),
        ("dnc:r=16,merge=fc2,shift=linear", 0.1, 64, mnv2),
        (dnb1, 0.2, 64, mnv2),
        (dnb_oup, 0.2, 64, mnv2),
    }
    assert {(n, lr) for n, lr, _, _ in _settings("table8")} == {
        (bn, 0.2),
        (bn, 0.5),
        (dnb1, 0.2),
        (dnb1, 0.5),
    }
    assert {(lr, m) for _, lr, _, m in _settings("table3_resnet18")} == {
        (lr, "resnet18") for lr in (0.2, 0.5, 0.8)
    }
    assert {(b, m) for _, _, b, m in _settings("table3_resnet34")} == {
        (b, "resnet34") for b in (4, 8, 64)
    }
    assert {b for _, _, b, _ in _settings("table4")} == {8, 64}
    assert {n for n, *_ in _settings("table6")} == {f"dnb:r={r},g=1" for r in (8, 16, 32)}
    assert {n for n, *_ in _settings("table7")} == {f"dnb:r=16,g={g}" for g in (1, 2, 4, "oup")}


def test_small_batch_scales_the_learning_rate_linearly():
    settings = _settings("small_batch")
    assert {b for _, _, b, _ in settings} == {2, 4, 8, 16, 64}
    assert {n.split(":")[0] for n, *_ in settings} == {"bn", "gn", "mabn", "dnb"}
    for _, lr, batch, _ in settings:
        assert lr == pytest.approx(0.2 * batch / 64)


def test_paper_profile_uses_the_papers_epochs_at_small_batches():
    paper = PROFILES["paper"]
    # Tables 3 and 4: 240 epochs at batch 64, 120 at batch 8, 60 at batch 4.
    assert [paper.epochs_for(b) for b in (64, 8, 4)] == [240, 120, 60]
    assert {c.epochs for c in configs("table3_resnet34", "paper")} == {240, 120, 60}


@pytest.mark.parametrize(
    ("batch_size", "epochs"), [(64, 3), (32, 3), (16, 3), (8, 1.5), (4, 0.75), (2, 0.375)]
)
def test_cpu_profile_gives_small_batches_their_exact_share_of_epochs(batch_size, epochs):
    # the paper's rule: half the epochs at half the batch, below the reference (16)
    got = PROFILES["cpu"].epochs_for(batch_size)
    assert got == epochs and type(got) is type(epochs)


@pytest.mark.parametrize("profile", ["cpu", "gpu", "paper"])
@pytest.mark.parametrize("batch_size", [1, 2, 4, 8])
def test_small_batch_runs_take_the_steps_of_a_reference_batch_run(profile, batch_size):
    p = PROFILES[profile]
    reference = p.small_batch_reference
    images = p.train_images
    at_reference = TrainConfig(epochs=p.epochs, batch_size=reference).total_steps(
        images // reference
    )
    config = TrainConfig(epochs=p.epochs_for(batch_size), batch_size=batch_size)
    steps = config.total_steps(images // batch_size)
    # equal up to the rounding of an epoch's steps (drop_last) at each batch size
    assert abs(steps - at_reference) <= p.epochs * reference / batch_size


@pytest.mark.parametrize(("profile", "batch_size", "epochs"), [("ci", 8, 1), ("cpu_v1", 8, 1)])
def test_ci_and_cpu_v1_keep_whole_epochs_and_their_hashes(profile, batch_size, epochs):
    # cpu_v1's stored batch-8 runs and ci's smoke runs were named under the older rule
    assert PROFILES[profile].whole_epochs
    assert PROFILES[profile].epochs_for(batch_size) == epochs


def test_the_estimates_count_a_fractional_epochs_share():
    cpu = PROFILES["cpu"]
    table4 = configs("table4", "cpu")
    small = [c for c in table4 if c.batch_size == 8]
    assert small and {c.epochs for c in small} == {1.5}
    images = sum(
        round(c.epochs * cpu.train_images) if c.batch_size == 8 else c.epochs * cpu.train_images
        for c in table4
    )
    assert estimate("table4", "cpu") == images
    steps = sum(
        (8_438 if c.batch_size == 8 else 3 * 703)  # 1.5 * (45,000 // 8) = 8,437.5 -> 8,438
        for c in table4
    )
    assert estimate_steps("table4", "cpu") == steps


def test_a_config_shared_by_two_experiments_trains_once():
    table1 = {c.hash() for c in configs("table1", "cpu")}
    table2 = {c.hash() for c in configs("table2", "cpu")}
    assert len(table1 & table2) == 3 * len(PROFILES["cpu"].seeds)  # BN, DN-B(16,1), DN-B(16,oup)
    everything = configs("all", "cpu")
    hashes = [c.hash() for c in everything]
    assert len(hashes) == len(set(hashes))
    assert len(everything) < sum(len(configs(name, "cpu")) for name in EXPERIMENTS)


def test_ci_profile_is_cheap_and_gpu_profile_is_not():
    # ci: every experiment in a few minutes of CPU; the bound allows ~1,000 images/s for 2 min.
    assert estimate("all", "ci") <= 120_000
    assert estimate_steps("all", "ci") < estimate_steps("all", "gpu") / 100
    assert estimate("table2", "ci") == len(configs("table2", "ci")) * 512


def test_unknown_names_raise_value_error():
    with pytest.raises(ValueError, match="table1"):
        configs("table5", "ci")
    with pytest.raises(ValueError, match="ci, cpu, cpu_v1, gpu, paper"):
        get_profile("laptop")


def test_get_profile_reads_the_environment_then_cuda(monkeypatch):
    monkeypatch.setenv("DNBOOK_PROFILE", "ci")
    assert get_profile().name == "ci"
    assert get_profile("paper").name == "paper"
    assert get_profile(PROFILES["cpu"]) is PROFILES["cpu"]
    monkeypatch.delenv("DNBOOK_PROFILE")
    for cuda, expected in ((True, "gpu"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        assert get_profile().name == expected


def test_profiles_are_frozen():
    with pytest.raises(AttributeError):
        PROFILES["ci"].epochs = 3
    assert all(isinstance(p, Profile) and p.name == name for name, p in PROFILES.items())


def test_reproduce_runs_each_distinct_config_once(monkeypatch):
    calls = []

    def fake_run(config, *, profile, **kwargs):
        calls.append((config.hash(), profile, kwargs))
        return {"status": "finished", "config": config.to_dict()}

    monkeypatch.setattr(runner, "run", fake_run)
    results = reproduce("table2", "ci", progress=False, results_root="/nowhere")
    expected = configs("table2", "ci")
    assert [r["config"] for r in results] == [c.to_dict() for c in expected]
    assert [h for h, _, _ in calls] == [c.hash() for c in expected]
    assert all(
        p == "ci" and kw == {"progress": False, "results_root": "/nowhere"} for _, p, kw in calls
    )


@pytest.mark.parametrize("epochs, expected", [(1, 0.2), (3, 0.6), (5, 1.0), (240, 1.0)])
def test_warmup_is_one_epoch_capped_at_a_fifth_of_the_run(epochs, expected):
    assert warmup_epochs(epochs) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["table2", "small_batch"])
@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_run_leaves_its_warmup_before_it_ends(name, profile):
    for config in configs(name, profile):
        assert 0 < config.warmup_epochs <= config.epochs / 5 or config.warmup_epochs == 1.0
        assert config.warmup_epochs < config.epochs


@pytest.mark.parametrize("profile", list(PROFILES))
def test_dnb_design_sweeps_the_design_options_at_three_learning_rates(profile):
    p = PROFILES[profile]
    built = configs("dnb_design", profile)
    assert {c.hash() for c in built} <= set(EXPERIMENTS["dnb_design"].labels(profile))
    assert {(c.model, c.batch_size) for c in built} == {("mobilenet_v2", 64)}
    # The cpu_v1 runs were stored with one warm-up epoch; the experiment pins it there.
    expected_warmup = 1.0 if profile == "cpu_v1" else warmup_epochs(p.epochs, p.warmup_fraction)
    assert {c.warmup_epochs for c in built} == {expected_warmup}
    if profile == "ci":
        # Tiny: BN and two DN-B variants at the paper's lr, at the ci scale.
        assert {(c.norm.split(":")[0], c.lr) for c in built} == {("bn", 0.2), ("dnb", 0.2)}
        assert len(built) == 3 and {c.n_train for c in built} == {p.n_train}
        return
    # Every variant (BN and 7 DN-B) at every lr.
    variants = {(c.norm, c.norm_weight_decay) for c in built}
    assert len(variants) == 8 and ("bn", False) in variants
    assert {(c.norm, c.norm_weight_decay, c.lr) for c in built} >= {
        (norm, wd, p.scaled_lr(lr)) for norm, wd in variants for lr in (0.05, 0.2, 0.5)
    }
    # Each DN-B spec names every design option, so it keeps its meaning if a default changes.
    keys = ("act", "scale", "shift", "input", "detach", "init")
    for norm, _ in variants - {("bn", False)}:
        assert all(f"{key}=" in norm for key in keys)
    norms = {n for n, _ in variants}
    assert any("scale=linear" in n and "input=raw" in n for n in norms)  # the paper read literally
    assert any("detach=true" in n for n in norms) and any("shift=tanh" in n for n in norms)
    if profile == "cpu_v1":
        # Its own, smaller scale (see the notes); seed 0, plus seed 1 for a few runs.
        assert {(c.width_mult, c.n_train, c.epochs) for c in built} == {(0.25, 2_000, 3)}
        assert {c.seed for c in built} == {0, 1}
        assert {c.lr for c in built if c.seed == 1} == {0.2, 0.5}  # the second seed
    else:
        assert {(c.width_mult, c.n_train, c.epochs) for c in built} == {
            (p.width_mult, p.n_train, p.epochs)
        }


def test_profile_maps_the_papers_learning_rates_through_lr_star():
    # cpu: lr_star stands for the paper's 0.2; the paper's 0.5 is 2.5 lr_star
    cpu = PROFILES["cpu"]
    built = configs("table8", "cpu")
    assert {c.lr for c in built} == {cpu.lr_star, cpu.scaled_lr(0.5)}
    assert cpu.scaled_lr(0.5) == pytest.approx(2.5 * cpu.lr_star)
    # profiles without an lr_star of their own keep the paper's numbers (and stored hashes)
    assert {c.lr for c in configs("table8", "ci")} == {0.2, 0.5}


def test_lr_sweeps_use_absolute_learning_rates():
    built = configs("lr_sweep", "cpu")
    assert {c.lr for c in built} == {0.025, 0.05, 0.1, 0.2, 0.4}
    assert {c.seed for c in built} == {0}
    # the pilot's bf16 runs of BN at lr 0.1 (ResNet-18 seed 0, MobileNetV2) are the sweep's
    # runs: one hash each, trained once
    pilot = {c.hash() for c in configs("cpu_pilot", "cpu")}
    assert len(pilot & {c.hash() for c in built}) == 2


@pytest.mark.parametrize("name", ["table2", "table4", "table8"])
def test_headline_comparisons_get_five_paired_seeds_at_cpu(name):
    built = EXPERIMENTS[name].builder("cpu")
    by_variant: dict[tuple, set[int]] = {}
    for c in built:
        by_variant.setdefault((c.model, c.norm, c.lr, c.batch_size), set()).add(c.seed)
    # paired: every variant has the same five seeds
    assert set(map(frozenset, by_variant.values())) == {frozenset(range(5))}
    # the rest keep the profile's three
    assert {c.seed for c in EXPERIMENTS["table6"].builder("cpu")} == {0, 1, 2}


@pytest.mark.parametrize(
    ("only", "expected"),
    [("^BN$", {"bn"}), ("^DN-B", {"dnb:r=16,g=1", "dnb:r=16,g=oup"}), ("SE", {"se:r=16"})],
)
def test_only_keeps_the_variants_whose_label_matches(only, expected):
    from dnbook.experiments import configs

    kept = configs("table2", "ci", only)
    assert {c.norm for c in kept} == expected


@pytest.mark.parametrize("only", ["nothing-matches", "("])
def test_only_rejects_a_pattern_that_selects_nothing(only):
    from dnbook.experiments import configs

    with pytest.raises(ValueError, match="--only"):
        configs("table2", "ci", only)


def _store(config, root, profile="ci"):
    """A minimal readable stored result of ``config`` under ``root``."""
    folder = root / profile
    folder.mkdir(parents=True, exist_ok=True)
    result = {"hash": config.hash(), "config": config.to_dict(), "status": "finished"}
    (folder / f"{config.hash()}.json").write_text(json.dumps({**result, "curves": []}))


def test_announce_counts_stored_runs_and_steps_to_train(tmp_path, capsys):
    table2 = configs("table2", "ci")
    _store(table2[0], tmp_path)
    extra = TrainConfig(model="plain_cnn", n_train=200, batch_size=64, epochs=2)
    announce("table2", "ci", configs=[extra, table2[1]], results_root=tmp_path)
    ci = get_profile("ci")
    steps = 3 * ci.epochs_for(64) * (ci.train_images // 64) + 2 * 3  # 200 // 64 = 3 a epoch
    assert capsys.readouterr().out == (
        f"{len(table2) + 1} runs at profile 'ci': 1 stored (read back), {len(table2)} to train "
        f"({steps:,} optimizer steps; a bar per epoch)\n"
    )
    announce("table2", "ci", reads_back=None, results_root=tmp_path)
    assert f": 0 read back, {len(table2)} to train" in capsys.readouterr().out


@pytest.mark.parametrize(("epochs", "steps"), [(1.5, 5), (2, 6), (0.5, 2)])
def test_announce_counts_a_fractional_runs_steps_as_the_loop_does(tmp_path, capsys, epochs, steps):
    # 200 // 64 = 3 steps an epoch; 1.5 epochs: round(4.5) = 5, halves up; 0.5: round(1.5) = 2
    extra = TrainConfig(model="plain_cnn", n_train=200, batch_size=64, epochs=epochs)
    announce([], "ci", configs=[extra], results_root=tmp_path)
    assert f"1 to train ({steps:,} optimizer steps;" in capsys.readouterr().out


def test_announce_prints_the_chapters_measured_cost_or_says_there_is_none(tmp_path, capsys):
    announce("fig1", "ci", chapter="07_mobilenetv2", results_root=tmp_path)
    assert "no measured time for 07_mobilenetv2 at profile 'ci' yet" in capsys.readouterr().out
    (tmp_path / "chapter_times").mkdir()
    rows = [{"notebook": f"notebooks/{n}.ipynb", "seconds": s} for n, s in [("07_x", 3), ("07", 9)]]
    found = {"hardware": {"cpu": "Some CPU"}, "chapters": rows}
    (tmp_path / "chapter_times" / "ci.json").write_text(json.dumps(found))
    announce("fig1", "ci", chapter="07", results_root=tmp_path)
    assert "the whole chapter took 9 s at 'ci' when last timed, on Some CPU" in (
        capsys.readouterr().out
    )
    with pytest.raises(ValueError, match="reads_back"):
        announce("fig1", "ci", reads_back="weight")


# -- DN-B's default SC input moved to the raw feature (dnb_design_v2) --------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("dnb:r=16,g=1", "dnb:r=16,g=1,input=normalized"),
        ("dnb", "dnb:input=normalized"),
        ("dnb:r=16,g=1,input=raw", "dnb:r=16,g=1,input=raw"),
        ("dnc:r=16,merge=fc1", "dnc:r=16,merge=fc1"),
        ("bn", "bn"),
    ],
)
def test_with_option_adds_only_what_the_spec_leaves_unset(spec, expected):
    from dnbook.norms.registry import with_option

    assert with_option(spec, "dnb", "input=normalized") == expected


@pytest.mark.parametrize(("profile", "pinned"), [("cpu_v1", True), ("cpu", False), ("ci", False)])
def test_only_cpu_v1_keeps_the_old_sc_input(profile, pinned):
    """cpu_v1's DN-B runs were trained with the normalized input: its specs say so, so their
    hashes hold; the other profiles train today's default, the raw input."""
    from dnbook.norms.registry import parse_spec

    inputs = {
        parse_spec(c.norm)[1]["input"]
        for c in configs("table2", profile)
        if c.norm.startswith("dnb")
    }
    assert inputs == ({"normalized"} if pinned else {"raw"})


def test_the_design_study_keeps_its_trained_layers():
    """Every design variant but the raw input's names the old input, so the stored runs keep
    their hashes; the raw-input variant is today's default layer."""
    from dnbook.norms.registry import parse_spec

    for config in configs("dnb_design_v2", "cpu"):
        if config.norm.startswith("dnb"):
            raw = config.norm.endswith("input=raw")
            assert parse_spec(config.norm)[1]["input"] == ("raw" if raw else "normalized")
    default = TrainConfig(model="resnet18", norm="dnb:r=16,g=1")
    assert default.hash() == default.replace(norm="dnb:r=16,g=1,input=raw").hash()
