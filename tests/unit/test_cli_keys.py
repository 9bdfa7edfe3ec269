"""Which key the CLI signs with: what the command line names wins over the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from c2d_cli import main

FLAG_KEY = "0x" + "11" * 32
ENV_KEY = "0x" + "22" * 32
ENV_FILE_KEY = "0x" + "33" * 32


@pytest.fixture
def key_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    flag, env_file = tmp_path / "flag.key", tmp_path / "env.key"
    flag.write_text(FLAG_KEY + "\n")
    env_file.write_text(ENV_FILE_KEY + "\n")
    monkeypatch.setattr(main, "DEFAULT_KEY_FILE", tmp_path / "default.key")
    monkeypatch.delenv("C2D_KEY", raising=False)
    monkeypatch.delenv("C2D_KEY_FILE", raising=False)
    return flag, env_file


def test_an_explicit_key_file_wins_over_c2d_key_and_c2d_key_file(
    key_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    flag, env_file = key_files
    monkeypatch.setenv("C2D_KEY", ENV_KEY)
    monkeypatch.setenv("C2D_KEY_FILE", str(env_file))
    assert main.resolve_key(str(flag)) == FLAG_KEY
    # --key-file comes from the command line only: its default is no longer C2D_KEY_FILE.
    assert main.build_parser().parse_args(["envs"]).key_file is None


def test_without_the_flag_c2d_key_then_c2d_key_file_then_the_default(
    key_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, env_file = key_files
    monkeypatch.setenv("C2D_KEY_FILE", str(env_file))
    monkeypatch.setenv("C2D_KEY", ENV_KEY)
    assert main.resolve_key(None) == ENV_KEY
    monkeypatch.delenv("C2D_KEY")
    assert main.resolve_key(None) == ENV_FILE_KEY
    monkeypatch.delenv("C2D_KEY_FILE")
    created = main.resolve_key(None)
    assert (tmp_path / "default.key").read_text().strip() == created


def test_a_key_file_that_holds_no_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    with pytest.raises(SystemExit, match="does not hold a private key"):
        main.resolve_key(str(bad))
