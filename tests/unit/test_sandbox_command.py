"""build_command: the bubblewrap (and prlimit) command line a job phase runs in."""

from __future__ import annotations

import os

import pytest

from engine_svc.infra.sandbox import SANDBOX_GID, SANDBOX_UID, Limits, SandboxSpec, build_command

BWRAP = "/opt/test/bwrap"  # never run: the command is only inspected
ALGORITHM = ["/usr/bin/python3", "/data/transformations/algorithm"]


def pairs(command: list[str], flag: str) -> list[tuple[str, str]]:
    """Every (source, target) that follows `flag` in the bwrap part of the command."""
    bwrap_args = command[: command.index("--", command.index(BWRAP))]
    return [(bwrap_args[i + 1], bwrap_args[i + 2]) for i, arg in enumerate(bwrap_args) if arg == flag]


def bwrap_part(command: list[str]) -> list[str]:
    start = command.index(BWRAP)
    return command[start : command.index("--", start)]


def test_network_is_off_by_default() -> None:
    command = build_command(SandboxSpec(argv=ALGORITHM), BWRAP)
    assert "--unshare-all" in command
    assert "--share-net" not in command
    # Nothing needed only for name resolution or TLS is bound in.
    assert not any(target.startswith("/etc") for _, target in pairs(command, "--ro-bind"))


def test_network_is_shared_only_when_asked() -> None:
    command = build_command(SandboxSpec(argv=ALGORITHM, network="host"), BWRAP)
    assert "--unshare-all" in command
    assert command.index("--share-net") > command.index("--unshare-all")
    if os.path.exists("/etc/resolv.conf"):
        assert ("/etc/resolv.conf", "/etc/resolv.conf") in pairs(command, "--ro-bind")


def test_sandbox_drops_privileges_and_dies_with_its_parent() -> None:
    args = bwrap_part(build_command(SandboxSpec(argv=ALGORITHM), BWRAP))
    assert "--die-with-parent" in args
    assert "--new-session" in args
    assert args[args.index("--uid") + 1] == str(SANDBOX_UID)
    assert args[args.index("--gid") + 1] == str(SANDBOX_GID)
    assert args[args.index("--cap-drop") + 1] == "ALL"
    assert SANDBOX_UID != 0 and SANDBOX_GID != 0


def test_only_system_folders_and_a_private_tmp_are_visible() -> None:
    command = build_command(SandboxSpec(argv=ALGORITHM), BWRAP)
    args = bwrap_part(command)
    assert ("/usr", "/usr") in pairs(command, "--ro-bind")
    assert args[args.index("--tmpfs") + 1] == "/tmp"
    assert args[args.index("--proc") + 1] == "/proc"
    assert args[args.index("--dev") + 1] == "/dev"
    assert pairs(command, "--bind") == []  # nothing writable unless asked
    every_target = {t for _, t in pairs(command, "--ro-bind")} | {t for _, t in pairs(command, "--bind")}
    for hidden in ("/", "/home", "/root", "/etc", "/var", "/work", "/tmp"):
        assert hidden not in every_target


@pytest.mark.parametrize("tmp_bytes", [None, 1024**2, 3 * 1024**3])
def test_the_private_tmp_is_a_sized_tmpfs(tmp_bytes: int | None) -> None:
    spec = (
        SandboxSpec(argv=ALGORITHM) if tmp_bytes is None else SandboxSpec(argv=ALGORITHM, tmp_bytes=tmp_bytes)
    )
    args = bwrap_part(build_command(spec, BWRAP))
    tmpfs = args.index("--tmpfs")
    assert args[tmpfs + 1] == "/tmp"
    assert args[tmpfs - 4 : tmpfs] == ["--size", str(spec.tmp_bytes), "--perms", "1777"]
    assert args.count("--tmpfs") == 1


def test_a_host_user_sandbox_waits_for_its_maps_and_drops_to_the_user_with_nothing_kept() -> None:
    spec = SandboxSpec(argv=ALGORITHM, host_user=65534, info_fd=5, userns_block_fd=6)
    command = build_command(spec, BWRAP)
    args = bwrap_part(command)
    assert args[args.index("--userns-block-fd") + 1] == "6"
    assert "--unshare-user" in args and "--uid" not in args
    # setpriv runs last, in the sandbox, and then the algorithm, as the host user.
    end = command.index("--", command.index(BWRAP))
    setpriv = command[end + 1 :]
    assert setpriv[0] == "/usr/bin/setpriv"
    for option in ("--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"):
        assert option in setpriv
    assert {"--bounding-set=-all", "--no-new-privs"} <= set(setpriv)
    assert setpriv[setpriv.index("--") + 1 :] == ALGORITHM
    with pytest.raises(ValueError):
        build_command(SandboxSpec(argv=ALGORITHM, host_user=65534), BWRAP)


def test_the_root_is_read_only_once_everything_is_mounted() -> None:
    spec = SandboxSpec(
        argv=ALGORITHM, ro_binds=[("/a", "/data/inputs")], rw_binds=[("/b", "/data/outputs")], network="host"
    )
    args = bwrap_part(build_command(spec, BWRAP))
    remount = args.index("--remount-ro")
    assert args[remount + 1] == "/"
    mounts = ("--bind", "--ro-bind", "--tmpfs", "--dir", "--proc", "--dev", "--symlink")
    assert all(i < remount for i, arg in enumerate(args) if arg in mounts)


def test_binds_are_read_only_or_writable_as_asked() -> None:
    spec = SandboxSpec(
        argv=ALGORITHM,
        ro_binds=[
            ("/host/job/inputs", "/data/inputs"),
            ("/host/job/transformations", "/data/transformations"),
        ],
        rw_binds=[("/host/job/outputs", "/data/outputs"), ("/host/job/logs", "/data/logs")],
        host_ro_paths=["/opt/python3.11"],
    )
    command = build_command(spec, BWRAP)
    ro = pairs(command, "--ro-bind")
    rw = pairs(command, "--bind")
    assert ("/host/job/inputs", "/data/inputs") in ro
    assert ("/host/job/transformations", "/data/transformations") in ro
    assert ("/opt/python3.11", "/opt/python3.11") in ro
    assert rw == [("/host/job/outputs", "/data/outputs"), ("/host/job/logs", "/data/logs")]
    assert not {t for _, t in ro} & {t for _, t in rw}


def test_job_binds_come_after_the_mounts_they_go_into() -> None:
    spec = SandboxSpec(argv=ALGORITHM, ro_binds=[("/a", "/data/inputs")], rw_binds=[("/b", "/data/outputs")])
    args = bwrap_part(build_command(spec, BWRAP))
    data_dir = args.index("/data", args.index("--dir"))
    assert args.index("/data/inputs") > data_dir
    assert args.index("/data/outputs") > data_dir
    assert args.index("/data/outputs") > args.index("--tmpfs")


def test_the_program_comes_last_after_a_double_dash() -> None:
    command = build_command(SandboxSpec(argv=[*ALGORITHM, "--share-net", "--bind"], chdir="/data"), BWRAP)
    end = command.index("--", command.index(BWRAP))
    assert command[end + 1 :] == [*ALGORITHM, "--share-net", "--bind"]
    assert command[command.index("--chdir") + 1] == "/data"
    # The program's own arguments are not taken as bwrap options.
    assert "--share-net" not in command[:end]


def test_no_limits_means_bwrap_runs_directly() -> None:
    command = build_command(SandboxSpec(argv=ALGORITHM), BWRAP)
    assert command[0] == BWRAP
    assert "prlimit" not in command


@pytest.mark.parametrize(
    "limits",
    [
        Limits(memory_bytes=1024**3, cpu_seconds=600, file_size_bytes=1024**3),
        Limits(memory_bytes=256 * 1024**2, cpu_seconds=1, file_size_bytes=1, open_files=64),
    ],
    ids=["one-gib", "tiny"],
)
def test_limits_wrap_bwrap_in_prlimit(limits: Limits) -> None:
    command = build_command(SandboxSpec(argv=ALGORITHM, limits=limits), BWRAP)
    assert command[0] == "prlimit"
    prlimit_args = command[: command.index(BWRAP)]
    assert prlimit_args[-1] == "--"
    assert f"--as={limits.memory_bytes}" in prlimit_args
    assert f"--cpu={limits.cpu_seconds}" in prlimit_args
    assert f"--fsize={limits.file_size_bytes}" in prlimit_args
    assert f"--nofile={limits.open_files}" in prlimit_args
    assert "--core=0" in prlimit_args
    # The limits hold for bwrap and so for every process inside it.
    assert command.index(BWRAP) == len(prlimit_args)


def test_a_niceness_runs_the_whole_sandbox_at_lower_priority() -> None:
    limits = Limits(memory_bytes=None, cpu_seconds=60, file_size_bytes=1024, nice=10)
    command = build_command(SandboxSpec(argv=ALGORITHM, limits=limits), BWRAP)
    assert command[:4] == ["nice", "-n", "10", "prlimit"]
    assert command.index(BWRAP) > command.index("prlimit")


def test_the_given_bwrap_is_used() -> None:
    command = build_command(SandboxSpec(argv=ALGORITHM), "/somewhere/else/bwrap")
    assert command[0] == "/somewhere/else/bwrap"


def test_environment_is_not_on_the_command_line() -> None:
    spec = SandboxSpec(argv=ALGORITHM, env={"SECRET_TOKEN": "s3cr3t", "DIDS": "[]"})
    command = build_command(spec, BWRAP)
    assert not any("s3cr3t" in arg or "SECRET_TOKEN" in arg for arg in command)


def test_isolated_network_has_its_own_namespace_and_waits_for_it() -> None:
    spec = SandboxSpec(
        argv=ALGORITHM, network="isolated", info_fd=7, block_fd=9, resolv_conf="/w/resolv.conf"
    )
    command = build_command(spec, BWRAP)
    assert "--share-net" not in command
    assert command[command.index("--info-fd") + 1] == "7"
    assert command[command.index("--block-fd") + 1] == "9"
    at = command.index("/w/resolv.conf")
    assert command[at - 1] == "--ro-bind" and command[at + 1] == "/etc/resolv.conf"


def test_unknown_network_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        build_command(SandboxSpec(argv=ALGORITHM, network="bridge"), BWRAP)
