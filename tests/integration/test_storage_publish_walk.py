"""podtools publish on its own (as a Kubernetes pod runs it): the outputs are walked through
directory descriptors, so a link is never followed and nothing found is looked up by path again;
a file or folder swapped for a link, a FIFO or another file after it was listed is never read,
and however deep or wide the tree, only a few descriptors are open."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from pathlib import Path

import pytest

from podtools.publish import FolderStore, PublishError, collect, publish


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    folders = {name: tmp_path / name for name in ("outputs", "logs", "captured", "store", "elsewhere")}
    for folder in folders.values():
        folder.mkdir()
    (folders["outputs"] / "deep").mkdir()
    (folders["outputs"] / "deep" / "a.txt").write_text("a")
    (folders["outputs"] / "b.txt").write_text("b")
    (folders["captured"] / "stdout.log").write_text("out\n")
    (folders["elsewhere"] / "secret.txt").write_text("must never be published")
    return folders


def _collect(tree: dict[str, Path]):  # type: ignore[no-untyped-def]
    return collect(True, str(tree["outputs"]), str(tree["logs"]), str(tree["captured"]))


def test_every_regular_file_is_published_with_its_name(tree: dict[str, Path]) -> None:
    os.symlink(tree["elsewhere"], tree["outputs"] / "link-to-folder")
    os.symlink(tree["elsewhere"] / "secret.txt", tree["outputs"] / "link-to-file")
    os.mkfifo(tree["outputs"] / "pipe")
    with _collect(tree) as found:
        published = publish(FolderStore(str(tree["store"])), found)
        skipped = found.skipped
    assert [(p["kind"], p["name"]) for p in published] == [
        ("output", "b.txt"),
        ("output", "deep/a.txt"),
        ("log", "algorithm.stdout.log"),
        ("log", "publish.log"),
    ]
    assert skipped == [
        "outputs/link-to-file is a symbolic link (never followed): not published",
        "outputs/link-to-folder is a symbolic link (never followed): not published",
        "outputs/pipe is not a regular file: not published",
    ]
    assert (tree["store"] / "logs" / "publish.log").read_text() == "".join(f"{line}\n" for line in skipped)
    assert "must never" not in "".join(p.read_text() for p in tree["store"].rglob("*") if p.is_file())


def _file_becomes_a_link(tree: dict[str, Path]) -> None:
    (tree["outputs"] / "b.txt").unlink()
    os.symlink(tree["elsewhere"] / "secret.txt", tree["outputs"] / "b.txt")


def _folder_becomes_a_link(tree: dict[str, Path]) -> None:
    (tree["elsewhere"] / "a.txt").write_text("must never be published")
    (tree["outputs"] / "deep").rename(tree["outputs"] / "moved")
    os.symlink(tree["elsewhere"], tree["outputs"] / "deep")


def _file_becomes_a_fifo(tree: dict[str, Path]) -> None:
    (tree["outputs"] / "b.txt").unlink()
    os.mkfifo(tree["outputs"] / "b.txt")  # opened without O_NONBLOCK, reading it would hang


@pytest.mark.parametrize("swap", [_file_becomes_a_link, _folder_becomes_a_link, _file_becomes_a_fifo])
def test_what_changes_after_it_was_listed_is_never_read(
    tree: dict[str, Path], swap: Callable[[dict[str, Path]], None]
) -> None:
    with _collect(tree) as found:
        swap(tree)
        with pytest.raises(PublishError, match="changed while"):
            publish(FolderStore(str(tree["store"])), found)
    assert "must never" not in "".join(p.read_text() for p in tree["store"].rglob("*") if p.is_file())


def test_a_deep_and_wide_tree_needs_few_descriptors(tree: dict[str, Path]) -> None:
    deep = tree["outputs"]
    for level in range(200):
        deep = deep / f"level{level}"
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("bottom")
    for index in range(300):
        (tree["outputs"] / "wide" / f"f{index:03}").mkdir(parents=True)
        (tree["outputs"] / "wide" / f"f{index:03}" / "x").write_text(str(index))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_before = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_before + 40, hard))
    try:
        with _collect(tree) as found:
            published = publish(FolderStore(str(tree["store"])), found)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    names = {p["name"] for p in published}
    assert "/".join(f"level{level}" for level in range(200)) + "/bottom.txt" in names
    assert {f"wide/f{index:03}/x" for index in range(300)} <= names
