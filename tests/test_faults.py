"""Fault injection: nothing a user does (or a crash does to them) breaks the book.

* Kill a training process with SIGKILL at many points (data loading, a step, checkpoint,
  weights and result writing), rerun it, and check the result is bit-identical to an
  uninterrupted run and that no half-written file is left.
* Truncate or garble every kind of file dnbook writes, and check it is named in one warning,
  skipped, moved aside and rebuilt.
* Ctrl-C and SIGTERM, bad devices and seeds, a stored run, where a reader's runs go, the
  command line's one-line errors, ``| head``, and two ``reproduce`` processes at once.

The training processes are forked from one worker process (this file run as a script) that
has imported torch and dnbook once: a fresh interpreter per kill would cost seconds each. A
kill happens at the n-th occurrence of an event, counted by patches installed in the forked
child, never after a sleep, so every test is deterministic.

Run alone: ``python -m pytest tests/test_faults.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import dnbook
from dnbook import _io
from dnbook.__main__ import main as cli_main
from dnbook.data import cifar, data_root
from dnbook.engine import environment
from dnbook.engine.profiles import PROFILES, Profile

# A tiny run on the in-memory synthetic dataset: ResNet-18 at width 0.125, 64 training images,
# batch 16, 2 epochs (8 steps; about a second on one CPU core).
PROFILE = Profile(
    name="faults",
    description="fault-injection tests: 64 synthetic images, 2 epochs",
    dataset="synthetic",
    n_train=64,
    n_val=32,
    n_test=32,
    epochs=2,
    width_mult=0.25,
    resnet_width_mult=0.125,
    seeds=(0,),
    eval_batch_size=32,
    small_batch_reference=16,
)
VARIANTS = (
    ("BN lr 0.05", {"model": "resnet18", "norm": "bn", "batch_size": 16, "lr": 0.05}),
    ("BN lr 0.1", {"model": "resnet18", "norm": "bn", "batch_size": 16, "lr": 0.1}),
)
TRAIN_ARGV = [
    "train", "--profile", "faults", "--model", "resnet18", "--norm", "bn", "--lr", "0.05",
    "--batch-size", "16", "--device", "cpu", "--no-progress",
]  # fmt: skip
# Result fields that differ between two runs of the same configuration by design.
VOLATILE = {"wall_time_s", "timestamp", "command"}


def register() -> None:
    """Add the ``faults`` profile and experiment to the registries (in this process)."""
    from dnbook import experiments

    PROFILES["faults"] = PROFILE
    experiments.EXPERIMENTS["faults"] = experiments.Experiment(
        "faults", "fault-injection runs", "none", "two tiny runs", VARIANTS
    )


def tiny_config(lr: float = 0.05):
    from dnbook.experiments import train_config

    options = dict(VARIANTS[0][1], lr=lr)
    return train_config(PROFILE, **options)


# -- the worker: forks a child per job, the child may be killed at an event --------------------


def _kill_plan(kill: dict | None) -> None:
    """Install patches that count events and send ``kill["signal"]`` to this process at the
    ``kill["n"]``-th occurrence of ``kill["event"]``."""
    if not kill:
        return
    import dnbook.data.loader as loader
    import dnbook.data.synthetic as synthetic

    event, nth, sig = kill["event"], kill["n"], kill.get("signal", int(signal.SIGKILL))
    counts: dict[str, int] = {}

    def hit(name: str) -> bool:
        counts[name] = counts.get(name, 0) + 1
        return name == event and counts[name] == nth

    def fire() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), sig)

    make_synthetic = synthetic.make_synthetic

    def counted_make(*args, **kwargs):
        if hit("load"):
            fire()
        return make_synthetic(*args, **kwargs)

    synthetic.make_synthetic = counted_make

    iterate = loader.DeviceLoader.__iter__

    def counted_iter(self):
        for batch in iterate(self):
            if hit("batch"):
                fire()
            yield batch

    loader.DeviceLoader.__iter__ = counted_iter

    backward = torch.autograd.backward

    def counted_backward(*args, **kwargs):
        backward(*args, **kwargs)
        if hit("backward"):  # gradients computed, weights not yet updated
            fire()

    torch.autograd.backward = counted_backward

    step = torch.optim.SGD.step

    def counted_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        if hit("optimizer"):  # weights updated, the step not yet counted nor scheduled
            fire()
        return out

    torch.optim.SGD.step = counted_step

    def kind(path: Path) -> str:
        parts = Path(path).parts
        if "checkpoints" in parts:
            return "checkpoint"
        if "weights" in parts:
            return "weights"
        return "result" if str(path).endswith(".json") else "other"

    real_open, real_replace = open, _io._replace

    class HalfWriter:
        """A file whose first write, if it is the fatal event, puts half of its bytes on disk
        and dies (later writes of the same file are not events)."""

        def __init__(self, file, name: str):
            self._file, self._name, self._first = file, name, True

        def write(self, data):
            first, self._first = self._first, False
            if first and hit(self._name):
                self._file.write(data[: len(data) // 2])
                self._file.flush()
                os.fsync(self._file.fileno())
                fire()
            return self._file.write(data)

        def __getattr__(self, attribute):
            return getattr(self._file, attribute)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._file.__exit__(*exc)

    def counted_open(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        name = Path(path).name  # .<target>.<pid>.<n>.partial
        target = Path(path).parent / name[1:].rsplit(".", 3)[0]
        return HalfWriter(file, f"write:{kind(target)}:mid") if "w" in mode else file

    def counted_replace(source, target):
        what = kind(Path(target))
        if hit(f"write:{what}:before_replace"):
            fire()
        real_replace(source, target)
        if hit(f"write:{what}:after_replace"):
            fire()

    _io.open = counted_open
    _io._replace = counted_replace


def _job(job: dict) -> int:
    """Run one job in the forked child; returns its exit status."""
    os.environ.update(job.get("env", {}))
    register()
    _kill_plan(job.get("kill"))
    if job.get("trace"):  # record every training this process starts
        import dnbook.engine.runs as store

        train = store.train

        def traced(config, **kwargs):
            with open(job["trace"], "a") as trace:
                trace.write(f"{os.getpid()} {config.hash()}\n")
            return train(config, **kwargs)

        store.train = traced
    if job["action"] == "cli":
        from dnbook.__main__ import main

        return main(job["argv"])
    if job["action"] == "run":
        from dnbook.engine import run

        run(tiny_config(job.get("lr", 0.05)), profile="faults", progress=False, device="cpu")
        return 0
    raise ValueError(f"unknown action {job['action']!r}")


def serve() -> None:
    """Read jobs (JSON lists of job dicts, one per line) from stdin; fork a child for each
    job of a line (all at once), wait for them and answer with their exit statuses."""
    # A shell that starts pytest in the background (`... &`) ignores SIGINT for it, and every
    # child inherits that; the interrupt tests need Python's handler wherever pytest runs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(1)
    import dnbook.__main__  # noqa: F401  (imported once, shared by every child)
    import dnbook.engine  # noqa: F401
    import dnbook.experiments  # noqa: F401
    import dnbook.report  # noqa: F401

    protocol = sys.stdout
    for line in sys.stdin:
        pids = []
        for job in json.loads(line):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    code = _job(job)
                except BaseException:
                    import traceback

                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            pids.append(pid)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        protocol.write(json.dumps(codes) + "\n")
        protocol.flush()


class Worker:
    def __init__(self, log_dir: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(environment.REPO_ROOT)}
        self.log_dir = log_dir
        self.count = 0
        self.process = subprocess.Popen(
            [sys.executable, __file__, "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def __call__(self, *jobs: dict) -> list[tuple[int, str]]:
        """Run ``jobs`` at once; (exit status, output) of each."""
        logs = []
        for job in jobs:
            self.count += 1
            logs.append(self.log_dir / f"job{self.count}.log")
            job["log"] = str(logs[-1])
        self.process.stdin.write(json.dumps(list(jobs)) + "\n")
        self.process.stdin.flush()
        codes = json.loads(self.process.stdout.readline())
        outputs = [log.read_text() if log.exists() else "" for log in logs]
        return list(zip(codes, outputs, strict=True))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(tmp_path_factory.mktemp("worker-logs"))
    yield w
    w.close()


def dirs(root: Path) -> dict[str, str]:
    """An isolated cache and results root under ``root``, as environment variables."""
    return {"DNBOOK_CACHE": str(root / "cache"), "DNBOOK_RESULTS": str(root / "results")}


def read_run(root: Path, lr: float = 0.05) -> tuple[dict, dict]:
    """(result without volatile fields, kept weights) of the tiny run under ``root``."""
    digest = tiny_config(lr).hash()
    result = json.loads((root / "results" / "faults" / f"{digest}.json").read_text())
    weights = torch.load(root / "cache" / "weights" / f"{digest}.pt", weights_only=True)
    return comparable(result), weights


def comparable(result: dict) -> dict:
    curves = [{k: v for k, v in row.items() if k != "time_s"} for row in result["curves"]]
    return {k: v for k, v in result.items() if k not in VOLATILE} | {"curves": curves}


def assert_no_broken_files(root: Path) -> None:
    """Nothing half-written, nothing left over: every file readable, no checkpoint."""
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        assert not path.name.endswith(_io.PARTIAL_SUFFIX), f"left half-written: {path}"
        assert not path.name.endswith(_io.CORRUPT_SUFFIX), f"a file went bad: {path}"
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            assert "checkpoints" not in path.parts, f"checkpoint left behind: {path}"
            torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def baseline(worker, tmp_path_factory):
    """The uninterrupted tiny run (trained in a child of the worker)."""
    root = tmp_path_factory.mktemp("baseline")
    ((code, log),) = worker({"action": "run", "env": dirs(root)})
    assert code == 0, log
    return read_run(root)


def assert_same_run(found: tuple[dict, dict], expected: tuple[dict, dict]) -> None:
    assert found[0] == expected[0]
    torch.testing.assert_close(found[1], expected[1], rtol=0, atol=0)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DNBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DNBOOK_RESULTS", str(tmp_path / "results"))
    from dnbook import experiments

    monkeypatch.setitem(PROFILES, "faults", PROFILE)
    monkeypatch.setitem(
        experiments.EXPERIMENTS,
        "faults",
        experiments.Experiment("faults", "fault-injection runs", "none", "two runs", VARIANTS),
    )


# -- SIGKILL at many points, then a rerun ------------------------------------------------------

# (event, n): killed at the n-th occurrence. A run has 3 synthetic splits to generate; per
# epoch 4 training batches (4 backward passes, 4 optimizer steps), 1 validation and 1 test
# batch; 1 more test batch for the best weights; 2 checkpoint writes, 1 weights and 1 result.
KILL_POINTS = [
    ("load", 1),  # generating the training split
    ("load", 3),  # generating the test split
    ("batch", 2),  # data loading inside epoch 1
    ("batch", 5),  # the validation batch of epoch 1
    ("batch", 9),  # epoch 2, after its checkpoint's epoch
    ("batch", 13),  # the final test pass with the best weights
    ("backward", 2),  # a step: gradients computed, weights not updated
    ("backward", 7),
    ("optimizer", 4),  # a step: weights updated, the step not yet counted
    ("optimizer", 8),
    ("write:checkpoint:mid", 1),  # half of the first checkpoint on disk
    ("write:checkpoint:before_replace", 1),
    ("write:checkpoint:after_replace", 1),
    ("write:checkpoint:mid", 2),
    ("write:checkpoint:before_replace", 2),
    ("write:checkpoint:after_replace", 2),
    ("write:weights:mid", 1),
    ("write:weights:before_replace", 1),
    ("write:weights:after_replace", 1),
    ("write:result:mid", 1),
    ("write:result:before_replace", 1),
    ("write:result:after_replace", 1),  # result stored, checkpoint not yet removed
]


def test_enough_kill_points():
    assert len(KILL_POINTS) >= 20
    assert {event.split(":")[0] for event, _ in KILL_POINTS} >= {
        "load",
        "batch",
        "backward",
        "optimizer",
        "write",
    }


@pytest.mark.parametrize(("event", "n"), KILL_POINTS, ids=[f"{e}-{n}" for e, n in KILL_POINTS])
def test_sigkill_then_rerun_gives_the_uninterrupted_result(worker, baseline, tmp_path, event, n):
    env = dirs(tmp_path)
    ((code, log),) = worker({"action": "run", "env": env, "kill": {"event": event, "n": n}})
    assert code == -signal.SIGKILL, f"the kill point was not reached (exit {code}):\n{log}"
    ((code, log),) = worker({"action": "run", "env": env})
    assert code == 0, log
    assert "Traceback" not in log, log
    assert_same_run(read_run(tmp_path), baseline)
    assert_no_broken_files(tmp_path)


# -- Ctrl-C and SIGTERM ----------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_prints_one_line_and_a_rerun_resumes(
    worker, baseline, tmp_path, signum, status
):
    env = dirs(tmp_path)
    kill = {"event": "batch", "n": 9, "signal": int(signum)}  # 3rd training batch of epoch 2
    ((code, log),) = worker({"action": "cli", "argv": TRAIN_ARGV, "env": env, "kill": kill})
    checkpoint = tmp_path / "cache" / "checkpoints" / f"{tiny_config().hash()}.pt"
    assert code == status, log
    assert log.strip().splitlines() == [
        f"python -m dnbook: interrupted at epoch 2, step 6; checkpoint at {checkpoint} "
        "(end of epoch 1); rerun the same command to resume"
    ]
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    ((code, log),) = worker({"action": "cli", "argv": TRAIN_ARGV, "env": env})
    assert code == 0, log
    assert_same_run(read_run(tmp_path), baseline)
    assert_no_broken_files(tmp_path)


def test_an_interrupt_in_the_first_epoch_says_there_is_no_checkpoint(worker, tmp_path):
    kill = {"event": "batch", "n": 2, "signal": int(signal.SIGINT)}
    job = {"action": "cli", "argv": TRAIN_ARGV, "env": dirs(tmp_path), "kill": kill}
    ((code, log),) = worker(job)
    assert code == 130
    assert log.strip().splitlines() == [
        "python -m dnbook: interrupted at epoch 1, step 1; no checkpoint yet (epoch 1 had not "
        "ended); rerun to start again"
    ]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the workers")
@pytest.mark.skipif(
    data_root() is None or not (data_root() / cifar.JPEG_COPY_NAME).is_file(),
    reason="the ci profile trains on CIFAR-10 from DNBOOK_DATA",
)
def test_sigterm_to_a_parallel_reproduce_stops_its_workers_too(tmp_path):
    """``kill`` reaches the parent of ``reproduce --jobs 2`` only: the parent must stop its
    workers and not wait for the 20 queued runs to train."""
    # the shared cache keeps the decoded dataset; the runs go to a results root of their own
    env = {**os.environ, "PYTHONPATH": str(environment.REPO_ROOT)}
    env["DNBOOK_RESULTS"] = str(tmp_path / "results")
    argv = [sys.executable, "-m", "dnbook", "reproduce", "small_batch", "--profile", "ci"]
    argv += ["--jobs", "2", "--no-progress"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    results = tmp_path / "results" / "ci"
    deadline = time.monotonic() + 600
    while not list(results.glob("*.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no run finished in 10 minutes"
        time.sleep(0.2)
    workers = (
        [
            int(p)
            for p in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        ]
        if process.poll() is None
        else []
    )
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=300)[1].decode()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == (
        "python -m dnbook: interrupted; rerun the same command to resume"
    )
    assert len(list(results.glob("*.json"))) < 20
    time.sleep(1)
    assert workers and not [pid for pid in workers if _alive(pid)]


# -- broken files ------------------------------------------------------------------------------

DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "garbled": lambda data: bytes(b ^ 0x5A for b in data[:64]) + data[64:],
    "empty": lambda data: b"",
}


def damage(path: Path, how: str) -> None:
    path.write_bytes(DAMAGE[how](path.read_bytes()))


def train_tiny(lr: float = 0.05, **options) -> dict:
    from dnbook.engine import run

    return run(tiny_config(lr), profile="faults", progress=False, device="cpu", **options)


def warned_about(record: pytest.WarningsRecorder, path: Path) -> list[str]:
    messages = [str(w.message) for w in record if issubclass(w.category, _io.CorruptFileWarning)]
    return [m for m in messages if str(path) in m]


RESULT_DAMAGE = [*DAMAGE, "not a result", "another hash"]


def damage_result(path: Path, how: str) -> None:
    if how == "not a result":
        path.write_text("[1, 2, 3]\n")
    elif how == "another hash":
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "hash": "0" * 12}))
    else:
        damage(path, how)


@pytest.fixture(scope="module")
def stored(baseline, tmp_path_factory):
    """Both tiny runs trained once and stored; tests copy the files they damage."""
    root = tmp_path_factory.mktemp("stored")
    from dnbook import experiments

    with pytest.MonkeyPatch.context() as patch:
        for name, value in dirs(root).items():
            patch.setenv(name, value)
        patch.setitem(PROFILES, "faults", PROFILE)
        patch.setitem(
            experiments.EXPERIMENTS,
            "faults",
            experiments.Experiment("faults", "fault-injection runs", "none", "two runs", VARIANTS),
        )
        results = [train_tiny(0.05), train_tiny(0.1)]
    assert comparable(results[0]) == baseline[0]
    return root, results


def copy_store(source: Path, target: Path) -> None:
    import shutil

    shutil.copytree(source / "results", target / "results", dirs_exist_ok=True)
    shutil.copytree(source / "cache" / "weights", target / "cache" / "weights", dirs_exist_ok=True)


@pytest.mark.parametrize("how", RESULT_DAMAGE)
def test_a_broken_result_is_named_skipped_by_readers_and_retrained(
    stored, baseline, tmp_path, how, capsys
):
    from dnbook.engine import load_results
    from dnbook.report import experiment_runs, render_report

    copy_store(stored[0], tmp_path)
    broken = tmp_path / "results" / "faults" / f"{tiny_config().hash()}.json"
    damage_result(broken, how)
    # readers: the store, an experiment's runs (what chapters show), the report
    with pytest.warns(_io.CorruptFileWarning) as record:
        results = load_results("faults")
    assert [r["hash"] for r in results] == [tiny_config(0.1).hash()]
    (message,) = warned_about(record, broken)
    assert message.endswith("; skipped") and "\n" not in message
    with pytest.warns(_io.CorruptFileWarning):
        frame, _ = experiment_runs("faults", PROFILE)
    assert list(frame["hash"]) == [tiny_config(0.1).hash()]
    if how == "truncated":  # (the plots cost a few seconds; one kind of damage is enough)
        with pytest.warns(_io.CorruptFileWarning):
            report = render_report(PROFILE, out_dir=tmp_path / "report")
        assert "BN lr 0.1" in report.read_text() and "BN lr 0.05" not in report.read_text()
    # `train` of that configuration: retrained, replaced, the broken file kept aside
    from dnbook.__main__ import main

    assert main(TRAIN_ARGV) == 0
    out, err = capsys.readouterr()
    assert f"trained run {tiny_config().hash()}; result stored in {broken}" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m dnbook: warning: {broken} ")
    assert lines[0].endswith(f"moved to {broken.name}.corrupt; training the run again")
    assert (tmp_path / "results" / "faults" / f"{broken.name}.corrupt").exists()
    assert comparable(json.loads(broken.read_text())) == baseline[0]


def test_a_broken_result_does_not_break_an_unrelated_experiment(stored, tmp_path):
    """Chapter 7 read every file of a profile: one bad file (of another experiment) broke it."""
    from dnbook.report import experiment_runs

    copy_store(stored[0], tmp_path)
    stray = tmp_path / "results" / "faults" / "0123456789ab.json"
    stray.write_text('{"hash": "0123456789ab", "config": {')
    with pytest.warns(_io.CorruptFileWarning, match="0123456789ab.json"):
        frame, _ = experiment_runs("faults", PROFILE)
    assert len(frame) == 2


def test_the_report_command_names_a_broken_result_in_one_line(stored, tmp_path, capsys):
    from dnbook.__main__ import main

    copy_store(stored[0], tmp_path)
    broken = tmp_path / "results" / "faults" / f"{tiny_config().hash()}.json"
    damage(broken, "truncated")
    assert main(["report", "--profile", "faults", "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(broken) in err[0] and "Traceback" not in err[0]


CHECKPOINT_DAMAGE = [*DAMAGE, "another config", "unsafe pickle"]


@pytest.mark.parametrize("how", CHECKPOINT_DAMAGE)
def test_a_broken_checkpoint_is_moved_aside_and_the_run_starts_over(baseline, tmp_path, how):
    from dnbook.engine.store import checkpoint_path

    checkpoint = checkpoint_path(tiny_config())
    checkpoint.parent.mkdir(parents=True)
    if how == "another config":
        # a real checkpoint of another run, under this run's name
        def stop(row):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train_tiny(0.1, on_epoch_end=stop)
        os.replace(checkpoint_path(tiny_config(0.1)), checkpoint)
    elif how == "unsafe pickle":
        torch.save({"epoch": 1, "hook": print}, checkpoint)  # loads only with weights_only=False
    else:
        torch.save({"epoch": 1, "model": torch.zeros(1000)}, checkpoint)
        damage(checkpoint, how)
    with pytest.warns(_io.CorruptFileWarning) as record:
        result = train_tiny()
    (message,) = warned_about(record, checkpoint)
    assert message.endswith(f"moved to {checkpoint.name}.corrupt; the run starts over")
    assert (checkpoint.parent / f"{checkpoint.name}.corrupt").exists()
    assert comparable(result) == baseline[0]


def test_checkpoints_load_with_weights_only_and_resume_exactly(baseline, tmp_path):
    from dnbook.engine.store import checkpoint_path

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_tiny(on_epoch_end=stop)
    state = torch.load(checkpoint_path(tiny_config()), weights_only=True)
    assert state["epoch"] == 1 and isinstance(state["rng"]["numpy"]["state"]["key"], list)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the checkpoint is good
        torch.manual_seed(123)  # resuming restores every generator
        assert comparable(train_tiny()) == baseline[0]


def test_a_checkpoint_of_an_older_dnbook_still_resumes_exactly(baseline, tmp_path):
    """Older checkpoints hold NumPy's generator state as a tuple with an array in it."""
    import numpy as np

    from dnbook.engine.store import checkpoint_path

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_tiny(on_epoch_end=stop)
    path = checkpoint_path(tiny_config())
    state = torch.load(path, weights_only=True)
    numpy = state["rng"]["numpy"]
    key = np.asarray(numpy["state"]["key"], dtype=np.uint32)
    np.random.set_state({**numpy, "state": {**numpy["state"], "key": key}})  # noqa: NPY002
    version, internal, gauss = state["rng"]["python"]
    state["rng"] |= {"numpy": np.random.get_state(), "python": (version, tuple(internal), gauss)}  # noqa: NPY002
    torch.save(state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert comparable(train_tiny()) == baseline[0]


def test_restart_discards_the_checkpoint(tmp_path, capsys):
    from dnbook.__main__ import main
    from dnbook.engine.store import checkpoint_path

    checkpoint = checkpoint_path(tiny_config())
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # discarded unread: no warning
        assert main([*TRAIN_ARGV, "--restart"]) == 0
    assert not checkpoint.exists()
    assert not (checkpoint.parent / f"{checkpoint.name}.corrupt").exists()


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_broken_kept_weights_are_moved_aside_and_retrained(stored, baseline, tmp_path, how):
    from dnbook.engine import trained_model, weights_path

    copy_store(stored[0], tmp_path)
    path = weights_path(tiny_config())
    damage(path, how)
    with pytest.warns(_io.CorruptFileWarning, match="training the run again") as record:
        model = trained_model(tiny_config(), profile="faults", progress=False)
    assert len(warned_about(record, path)) == 1
    assert (path.parent / f"{path.name}.corrupt").exists()
    torch.testing.assert_close(model.state_dict(), baseline[1], rtol=0, atol=0)
    torch.testing.assert_close(torch.load(path, weights_only=True), baseline[1], rtol=0, atol=0)


@pytest.mark.parametrize("how", ["truncated", "garbled", "not a record"])
def test_a_broken_measurement_is_named_and_measured_again(stored, tmp_path, how):
    from dnbook.analysis import analysis_path, load_measurements, measure

    copy_store(stored[0], tmp_path)

    def size(model):
        return {"parameters": sum(p.numel() for p in model.parameters())}

    value = measure("size", tiny_config(), size, profile="faults")
    path = analysis_path("size", tiny_config(), "faults")
    if how == "not a record":
        path.write_text('{"name": "size"}')
    else:
        damage(path, how)
    with pytest.warns(_io.CorruptFileWarning, match=path.name):
        assert load_measurements("size", "faults") == {}
    with pytest.warns(_io.CorruptFileWarning, match=path.name):
        assert measure("size", tiny_config(), size, profile="faults") == value
    assert (path.parent / f"{path.name}.corrupt").exists()
    assert load_measurements("size", "faults")[tiny_config().hash()]["value"] == value


def test_a_broken_packed_dataset_in_the_cache_is_packed_again(tmp_path, monkeypatch):
    """CIFAR-10 decoded from a (here: 30-image) JPEG copy into the cache, then garbled."""
    import io

    import numpy as np
    from PIL import Image

    from dnbook.data import load_dataset

    rng = np.random.default_rng(0)
    copy = {}
    for split, n in (("train", 20), ("test", 10)):
        blobs = []
        for _ in range(n):
            buffer = io.BytesIO()
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, format="JPEG")
            blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        copy[f"jpg_{split}"] = np.concatenate(blobs)
        copy[f"off_{split}"] = np.cumsum([0] + [len(b) for b in blobs])
        copy[f"y_{split}"] = (np.arange(n) % 10).astype(np.uint8)
    copy["class_names"] = np.asarray([f"c{k}" for k in range(10)])
    copy["source"] = np.asarray("random test images")
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "cifar10_jpegbytes.npz", **copy)
    monkeypatch.setenv("DNBOOK_DATA", str(data))

    first = load_dataset("cifar10")
    (packed,) = (tmp_path / "cache").glob("cifar10_jpeg-*.npz")
    damage(packed, "garbled")
    with pytest.warns(_io.CorruptFileWarning, match=packed.name):
        again = load_dataset("cifar10")
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_y, first.test_y)
    assert (packed.parent / f"{packed.name}.corrupt").exists()


# -- two reproduce processes at once -----------------------------------------------------------


def test_two_reproduce_processes_at_once_train_each_run_once(worker, baseline, tmp_path):
    env = dirs(tmp_path)
    trace = tmp_path / "trained.txt"
    argv = ["reproduce", "faults", "--profile", "faults", "--device", "cpu", "--no-progress"]
    job = {"action": "cli", "argv": argv, "env": env, "trace": str(trace)}
    (code_a, log_a), (code_b, log_b) = worker(dict(job), dict(job))
    assert (code_a, code_b) == (0, 0), log_a + log_b
    trained = [line.split()[1] for line in trace.read_text().splitlines()]
    assert sorted(trained) == sorted(tiny_config(lr).hash() for lr in (0.05, 0.1))
    # both processes report the same results
    summaries = [
        [line for line in log.splitlines() if line.startswith("  ")] for log in (log_a, log_b)
    ]
    assert summaries[0] == summaries[1] and len(summaries[0]) == 2
    assert_same_run(read_run(tmp_path), baseline)
    assert_no_broken_files(tmp_path)


# -- the command line: devices, seeds, stored runs, errors, broken pipes -----------------------


def no_cuda_here() -> bool:
    return torch.cuda.device_count() == 0


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda:99", "--device 'cuda:99': "),
        ("meta", "--device 'meta' is not supported; allowed: cpu"),
        ("nonsense", "--device 'nonsense' is not a device; allowed: cpu"),
        pytest.param(
            "cuda",
            "--device 'cuda': this machine has no CUDA device; allowed: cpu",
            marks=pytest.mark.skipif(not no_cuda_here(), reason="this machine has CUDA"),
        ),
    ],
)
@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_an_unusable_device_is_one_line(command, device, message, capsys):
    argv = TRAIN_ARGV if command == "train" else ["reproduce", "faults"]
    assert cli_main([*argv, "--profile", "faults", "--device", device]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_an_out_of_range_seed_is_one_line(seed, capsys):
    assert cli_main([*TRAIN_ARGV, "--seed", seed]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"python -m dnbook: error: --seed {seed}: out of range; allowed: an integer from 0 "
        "to 4294967295"
    )


def test_train_says_whether_it_trained_or_read_a_stored_result(tmp_path, capsys):
    from dnbook.__main__ import main

    path = tmp_path / "results" / "faults" / f"{tiny_config().hash()}.json"
    assert main(TRAIN_ARGV) == 0
    first = capsys.readouterr().out.splitlines()
    assert first[0].startswith("finished: train ")
    assert first[1] == f"trained run {tiny_config().hash()}; result stored in {path}"
    assert main(TRAIN_ARGV) == 0
    second = capsys.readouterr().out.splitlines()
    assert second[0] == first[0]
    assert second[1] == (
        f"read the stored result of run {tiny_config().hash()} from {path}; nothing was "
        "trained (a run is trained once per configuration)"
    )


def test_a_bug_during_training_keeps_its_traceback(monkeypatch):
    from dnbook.__main__ import main
    from dnbook.engine import trainer

    def broken_step(self, images, labels):
        raise ValueError("a bug in the training step")

    monkeypatch.setattr(trainer.Loop, "train_step", broken_step)
    with pytest.raises(ValueError, match="a bug in the training step"):
        main(TRAIN_ARGV)


def test_a_run_that_cannot_be_set_up_is_one_line(capsys):
    from dnbook.__main__ import main

    assert main([*TRAIN_ARGV, "--batch-size", "128"]) == 2  # 64 training images
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "larger than" in err


def test_config_error_is_a_value_error():
    assert issubclass(dnbook.ConfigError, ValueError)


def test_a_closed_pipe_ends_quietly():
    """``reproduce ... --dry-run | head``: the reader is gone before the first line."""
    env = {**os.environ, "PYTHONPATH": str(environment.REPO_ROOT)}
    argv = [sys.executable, "-m", "dnbook", "reproduce", "all", "--profile", "ci", "--dry-run"]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    process.stdout.close()  # like `head` that has read what it wanted
    err = process.stderr.read()
    assert process.wait(timeout=120) == 128 + signal.SIGPIPE
    assert err == ""


# -- where runs go -----------------------------------------------------------------------------


def test_a_readers_runs_never_change_the_committed_results(stored, tmp_path, monkeypatch):
    """Without DNBOOK_RESULTS: committed results are read, new runs go to the cache."""
    import shutil

    from dnbook.engine import load_results, run
    from dnbook.engine.store import result_path, user_results_dir

    repo = tmp_path / "repo"
    committed = repo / "results" / "faults"
    committed.mkdir(parents=True)
    digest = tiny_config().hash()
    shutil.copy(stored[0] / "results" / "faults" / f"{digest}.json", committed)
    before = {p.name: p.read_bytes() for p in committed.iterdir()}
    monkeypatch.setattr(environment, "REPO_ROOT", repo)
    monkeypatch.delenv("DNBOOK_RESULTS")

    assert result_path(tiny_config(), "faults") == committed / f"{digest}.json"
    assert run(tiny_config(), profile="faults", progress=False) == json.loads(
        (committed / f"{digest}.json").read_text()
    )  # read, not trained
    new = train_tiny(0.1)
    mine = user_results_dir() / "faults" / f"{new['hash']}.json"
    assert user_results_dir() == tmp_path / "cache" / "results" and mine.exists()
    assert {p.name: p.read_bytes() for p in committed.iterdir()} == before
    assert [r["hash"] for r in load_results("faults")] == sorted([digest, new["hash"]])
    # a reader's copy of a committed run never hides the committed one
    shutil.copy(committed / f"{digest}.json", mine.parent)
    changed = json.loads((mine.parent / f"{digest}.json").read_text()) | {"status": "mine"}
    (mine.parent / f"{digest}.json").write_text(json.dumps(changed))
    assert {r["status"] for r in load_results("faults")} == {"finished"}
    # named explicitly, a root is the only one read and written
    monkeypatch.setenv("DNBOOK_RESULTS", str(tmp_path / "elsewhere"))
    assert load_results("faults") == []


@pytest.mark.parametrize("path", ["results/cpu/report/report.md", "results/cpu/x.json.corrupt"])
def test_reports_and_broken_files_are_ignored_by_git(path):
    done = subprocess.run(["git", "check-ignore", "-q", path], cwd=environment.REPO_ROOT)
    assert done.returncode == 0


# -- atomic writes -----------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "x.json"
    _io.write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        _io.write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_stale_partial_of_a_dead_process_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "x.pt"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".x.pt.{int(dead.stdout)}.0{_io.PARTIAL_SUFFIX}"
    stale.write_bytes(b"half")
    _io.torch_save({"w": torch.ones(2)}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


def test_every_writer_uses_the_atomic_helper():
    """No module but dnbook._io renames files into place or saves without it."""
    root = environment.REPO_ROOT / "dnbook"
    for path in root.rglob("*.py"):
        if path.name == "_io.py":
            continue
        text = path.read_text()
        assert "os.replace(" not in text, path
        assert "torch.save(" not in text or "dnbook/bench" in str(path), path


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    serve()
