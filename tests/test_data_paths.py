"""Where a relative ``DNBOOK_DATA`` points: the repository root, whatever the working directory."""

from __future__ import annotations

import pytest

from dnbook.data import paths
from dnbook.data.paths import data_root


@pytest.mark.parametrize("cwd", [".", "notebooks", "tests"])
def test_relative_data_root_is_read_from_the_repository_root(monkeypatch, cwd):
    assert paths.REPO_ROOT is not None, "the tests run from a checkout"
    monkeypatch.chdir(paths.REPO_ROOT / cwd)
    monkeypatch.setenv("DNBOOK_DATA", "results")  # a folder the checkout has
    assert data_root() == (paths.REPO_ROOT / "results").resolve()


def test_relative_data_root_missing_everywhere_still_names_the_root(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DNBOOK_DATA", "no_such_folder_here")
    assert data_root() == (paths.REPO_ROOT / "no_such_folder_here").resolve()


def test_relative_data_root_falls_back_to_the_working_directory(monkeypatch, tmp_path):
    (tmp_path / "only_here").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DNBOOK_DATA", "only_here")
    assert data_root() == (tmp_path / "only_here").resolve()


def test_absolute_and_home_paths_are_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("DNBOOK_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DNBOOK_DATA", "~/data")
    assert data_root() == tmp_path / "data"


def test_prepare_cifar_offline_says_one_line(monkeypatch, tmp_path, capsys):
    import importlib.util
    import urllib.error

    spec = importlib.util.spec_from_file_location(
        "prepare_cifar", paths.REPO_ROOT / "data_scripts" / "prepare_cifar.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def offline(name, root):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(script, "download_cifar", offline)
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--dataset", "cifar10", "--out", str(tmp_path)])
    message = str(exit_info.value.code)
    assert len(message.splitlines()) == 1
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "--extracted" in message and "DNBOOK_DATA" in message
