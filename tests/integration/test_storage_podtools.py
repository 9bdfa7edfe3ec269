"""podtools configure on its own (as a Kubernetes pod runs it, outside our sandbox): nothing is
written through a symbolic link or outside the inputs, whatever is already there, a file appears
only once it is complete and checked, and with private hosts refused no lookup, redirect or
rebinding name leads a fetch to this machine's own services."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podtools import configure
from podtools.configure import ProvisioningError, provision
from tests.servers import public_network
from tests.servers.http_files import FileServer

DID = "did:op:" + "ab" * 32
DATA = b"station,value\nharbour,1\n"


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    folders = {name: tmp_path / "data" / name for name in ("inputs", "transformations", "ddos")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    return folders


def plan(url: str, **file: Any) -> dict[str, Any]:
    return {
        "datasets": [{"did": DID, "files": [{"url": url, **file}], "ddo": {"id": DID}}],
        "algorithm": {"files": [], "raw_code": base64.b64encode(b"print(1)").decode()},
        "allow_private_hosts": True,
        "stall_seconds": 2,
    }


def run(roots: dict[str, Path], job: dict[str, Any]) -> None:
    provision(job, str(roots["inputs"]), str(roots["transformations"]), str(roots["ddos"]))


def test_inputs_are_laid_out_as_ocean_does(files: FileServer, roots: dict[str, Path]) -> None:
    run(roots, plan(files.add("/d.csv", DATA), sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA)))
    assert (roots["inputs"] / DID / "0").read_bytes() == DATA
    assert (roots["ddos"] / DID).read_text() == '{"id": "' + DID + '"}'
    assert (roots["transformations"] / "algorithm").read_bytes() == b"print(1)"
    assert (roots["inputs"] / "algoCustomData.json").read_text() == "{}"
    assert sorted(p.name for p in (roots["inputs"] / DID).iterdir()) == ["0"]  # no .part left


@pytest.mark.parametrize(
    "planted",
    ["dataset folder", "dataset file", "ddo file", "algorithm file", "parameters file"],
)
def test_a_planted_symbolic_link_is_never_written_through(
    files: FileServer, roots: dict[str, Path], tmp_path: Path, planted: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    victim = elsewhere / "victim"
    victim.write_text("untouched")
    link = {
        "dataset folder": (roots["inputs"] / DID, elsewhere),
        "dataset file": (roots["inputs"] / DID / "0", victim),
        "ddo file": (roots["ddos"] / DID, victim),
        "algorithm file": (roots["transformations"] / "algorithm", victim),
        "parameters file": (roots["inputs"] / "algoCustomData.json", victim),
    }[planted]
    link[0].parent.mkdir(parents=True, exist_ok=True)
    os.symlink(link[1], link[0])
    with pytest.raises(ProvisioningError):
        run(roots, plan(files.add("/d.csv", DATA)))
    assert victim.read_text() == "untouched"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim"]


def test_a_failed_fetch_leaves_no_file(files: FileServer, roots: dict[str, Path]) -> None:
    with pytest.raises(ProvisioningError, match="content does not match the declared sha256"):
        run(roots, plan(files.add("/d.csv", DATA), sha256="0" * 64))
    assert list((roots["inputs"] / DID).iterdir()) == []


def test_the_first_failure_stops_the_other_fetches(files: FileServer, roots: dict[str, Path]) -> None:
    slow = files.add("/slow.bin", os.urandom(4_000_000), delay_seconds=0.05)  # ~3 s to serve
    job = plan(files.add("/bad.csv", DATA), sha256="0" * 64)
    job["datasets"][0]["files"].insert(0, {"url": slow})
    with pytest.raises(ProvisioningError, match="file 1: content does not match"):
        run(roots, job)
    assert list((roots["inputs"] / DID).iterdir()) == []


def test_a_file_that_changed_between_attempts_is_fetched_whole_again(
    files: FileServer, roots: dict[str, Path]
) -> None:
    old, new = os.urandom(2_000_000), os.urandom(2_100_000)
    url = files.add("/moving.bin", old, break_after=1_000_000, changed_to=new)
    run(roots, plan(url, sha256=hashlib.sha256(new).hexdigest()))
    assert (roots["inputs"] / DID / "0").read_bytes() == new
    second = files.requests_for("/moving.bin")[1]
    # Asked for the rest only if unchanged (If-Range); the server sent the new file whole.
    assert second.headers.get("Range") == "bytes=1000000-" and second.headers.get("If-Range")


def test_all_inputs_together_stay_under_the_engines_limit(files: FileServer, roots: dict[str, Path]) -> None:
    job = plan(files.add("/a.bin", os.urandom(600_000)))
    job["datasets"][0]["files"].append({"url": files.add("/b.bin", os.urandom(600_000))})
    job["max_input_bytes"] = 1_000_000
    with pytest.raises(ProvisioningError, match="the inputs exceed 1000000 bytes, the most this job may"):
        run(roots, job)
    job["max_input_bytes"] = 1_200_000
    shutil.rmtree(roots["inputs"] / DID)
    shutil.rmtree(roots["ddos"])
    roots["ddos"].mkdir()
    (roots["inputs"] / "algoCustomData.json").unlink()
    (roots["transformations"] / "algorithm").unlink()
    run(roots, job)
    assert sorted(p.name for p in (roots["inputs"] / DID).iterdir()) == ["0", "1"]


def test_the_command_line_answers_its_usage() -> None:
    assert configure.main(["configure"]) == 64


# --- public hosts only: real lookups and redirects in a network of the test's own ------------------------


@pytest.fixture(scope="module")
def public_network_available() -> None:
    reason = public_network.unavailable_reason()
    if reason:
        pytest.skip(reason)


def test_a_public_host_is_fetched_from_the_address_that_was_checked(public_network_available: None) -> None:
    outcome = public_network.run_scenario("public")
    assert outcome["ok"], outcome
    assert outcome["fetched"] == public_network.PUBLIC_BYTES.decode()
    # Connected to the address, but the request names the host.
    assert outcome["public_requests"] == [{"path": "/data.csv", "host": f"public.test:{outcome['port']}"}]


@pytest.mark.parametrize("scenario", ["rebinding", "redirect to a rebinding name"])
def test_a_name_that_rebinds_to_loopback_never_reaches_it(
    public_network_available: None, scenario: str
) -> None:
    """The name answers 1.2.3.4 when it is checked and 127.0.0.1 when asked again: the fetch
    connects to the address it checked, and looks the name up once."""
    outcome = public_network.run_scenario(scenario)
    assert outcome["private_requests"] == [], outcome
    assert outcome["ok"] and outcome["fetched"] == public_network.PUBLIC_BYTES.decode(), outcome
    assert outcome["lookups"]["rebind.test"] == 1


def test_a_redirect_to_a_private_address_is_refused(public_network_available: None) -> None:
    outcome = public_network.run_scenario("redirect to a private address")
    assert not outcome["ok"]
    assert "the host is not a public address; this engine fetches only from public hosts" in outcome["reason"]
    assert outcome["private_requests"] == []
    assert [seen["path"] for seen in outcome["public_requests"]] == ["/to-private"]
