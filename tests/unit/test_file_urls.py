"""Which local files a file:// input may name: the roots, the suite's own state, the result store."""

from __future__ import annotations

from pathlib import Path

import pytest

from c2d_common.file_urls import FileUrlPolicy, FileUrlRefused


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    for name in (
        "data/a.csv",
        "state/results/job-1/outputs/out.txt",
        "state/work/job-2/secret",
        "elsewhere/x",
    ):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    return tmp_path


def _policy(tree: Path, **kwargs: tuple[Path, ...]) -> FileUrlPolicy:
    defaults: dict[str, tuple[Path, ...]] = {
        "roots": (tree,),
        "denied": (tree / "state",),
        "results": (tree / "state" / "results",),
    }
    return FileUrlPolicy(**{**defaults, **kwargs})


def test_a_file_under_a_root_is_served(tree: Path) -> None:
    assert _policy(tree).check(f"file://{tree}/data/a.csv") == tree / "data" / "a.csv"


def test_the_result_store_is_readable_although_the_state_around_it_is_denied(tree: Path) -> None:
    url = f"file://{tree}/state/results/job-1/outputs/out.txt"
    assert _policy(tree).check(url) == tree / "state/results/job-1/outputs/out.txt"
    # Result assets work without any file:// roots too: the provider wrote those DDOs itself.
    assert _policy(tree, roots=()).check(url).name == "out.txt"


@pytest.mark.parametrize(
    "path",
    [
        "state/work/job-2/secret",
        "state/results/../work/job-2/secret",
        "state/results/job-1/../../work/job-2/secret",
        "state",
    ],
)
def test_the_rest_of_the_suite_s_state_stays_denied(tree: Path, path: str) -> None:
    with pytest.raises(FileUrlRefused, match="own state"):
        _policy(tree).check(f"file://{tree}/{path}")


def test_a_symlink_in_the_result_store_does_not_lead_out_of_it(tree: Path) -> None:
    link = tree / "state/results/job-1/outputs/link"
    link.symlink_to(tree / "state/work/job-2/secret")
    with pytest.raises(FileUrlRefused, match="own state"):
        _policy(tree).check(f"file://{link}")
    outside = tree / "state/results/job-1/outputs/passwd"
    outside.symlink_to("/etc/passwd")
    with pytest.raises(FileUrlRefused, match="C2D_FILE_URL_ROOTS"):
        _policy(tree).check(f"file://{outside}")


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://example.org/a.csv", "not a local"),
        ("file://remote-host/etc/passwd", "not a local"),
        ("file:///etc/passwd", "C2D_FILE_URL_ROOTS"),
    ],
)
def test_other_urls_are_refused(tree: Path, url: str, reason: str) -> None:
    with pytest.raises(FileUrlRefused, match=reason):
        _policy(tree).check(url)


def test_without_roots_nothing_outside_the_result_store_is_served(tree: Path) -> None:
    with pytest.raises(FileUrlRefused, match="serves no file://"):
        _policy(tree, roots=()).check(f"file://{tree}/data/a.csv")
