"""A network of a test's own in which a public address exists, so that podtools' public-only
checks meet a real public address, real name lookups and real redirects, and nothing leaves the
machine.

`run_scenario(name)` starts `python -m tests.servers.public_network NAME` in new user, network and
mount namespaces (unshare). There, 1.2.3.4 is an address of the loopback interface, a DNS server
on 127.0.0.1:53 answers the names below (and /etc/resolv.conf, bound over for this process only,
names it), one file server listens on 1.2.3.4 and another on 127.0.0.1 at the same port, and
podtools configure fetches one URL with private hosts refused (C2D_ALLOW_PRIVATE_INPUT_HOSTS off).
The outcome comes back as JSON: what was fetched or why not, which server saw which request, and
how often each name was looked up.

Names: `public.test` is always 1.2.3.4; `rebind.test` is 1.2.3.4 at its first lookup and
127.0.0.1 at every later one (DNS rebinding, TTL 0).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_ADDRESS = "1.2.3.4"
PUBLIC_BYTES = b"station,value\npublic,1\n"
PRIVATE_BYTES = b"a service of this machine that no dataset may reach\n"
ANSWERS = {"public.test": [PUBLIC_ADDRESS], "rebind.test": [PUBLIC_ADDRESS, "127.0.0.1"]}
# The network namespace of the process that started the scenario (never the scenario's own).
_PARENT_NETWORK = "C2D_TEST_PARENT_NETWORK_NAMESPACE"
SCENARIOS = ("public", "rebinding", "redirect to a private address", "redirect to a rebinding name")


def unavailable_reason() -> str | None:
    """Why no such network can be made here, or None."""
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", "--mount", "true"], capture_output=True, timeout=30
    )
    if probe.returncode != 0:
        return f"user namespaces are not available: {probe.stderr.decode(errors='replace').strip()}"
    return None


def run_scenario(scenario: str, timeout: float = 60) -> dict[str, Any]:
    completed = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "--mount",
            sys.executable,
            "-m",
            "tests.servers.public_network",
            scenario,
        ],
        cwd=ROOT,
        env={**os.environ, _PARENT_NETWORK: os.readlink("/proc/self/ns/net")},
        capture_output=True,
        timeout=timeout,
    )
    if completed.returncode != 0:
        raise AssertionError(f"the scenario failed to run: {completed.stderr.decode(errors='replace')}")
    outcome: dict[str, Any] = json.loads(completed.stdout)
    return outcome


# --- inside the namespaces ------------------------------------------------------------------------------


class DnsServer:
    """A UDP DNS server for A queries of a few names (AAAA: none; other names: NXDOMAIN); the nth
    lookup of a name gets its nth answer (the last one from then on)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: dict[str, int] = {}
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 53))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            query, client = self._socket.recvfrom(512)
            self._socket.sendto(self._answer(query), client)

    def _answer(self, query: bytes) -> bytes:
        labels, position = [], 12
        while query[position]:
            length = query[position]
            labels.append(query[position + 1 : position + 1 + length].decode().lower())
            position += 1 + length
        question = query[12 : position + 5]
        qtype = int.from_bytes(query[position + 1 : position + 3], "big")
        name = ".".join(labels)
        if name not in self.answers:
            return query[:2] + b"\x81\x83" + b"\x00\x01\x00\x00\x00\x00\x00\x00" + question
        records = b""
        count = 0
        if qtype == 1:  # A
            seen = self.lookups.get(name, 0)
            self.lookups[name] = seen + 1
            address = self.answers[name][min(seen, len(self.answers[name]) - 1)]
            # A pointer to the question's name, type A, class IN, TTL 0, four bytes.
            records = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04" + socket.inet_aton(address)
            count = 1
        header = query[:2] + b"\x81\x80" + b"\x00\x01" + count.to_bytes(2, "big") + b"\x00\x00\x00\x00"
        return header + question + records


def _prepare_network(folder: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{PUBLIC_ADDRESS}/32", "dev", "lo"], check=True)
    resolv_conf = folder / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
    subprocess.run(["mount", "--bind", str(resolv_conf), "/etc/resolv.conf"], check=True)


def _scenario(scenario: str, folder: Path) -> dict[str, Any]:
    from podtools.configure import ProvisioningError, provision
    from tests.servers.http_files import FileServer

    _prepare_network(folder)
    dns = DnsServer(ANSWERS)
    private = FileServer("127.0.0.1")
    port = private.port
    public = FileServer(PUBLIC_ADDRESS, port)
    try:
        private.add("/data.csv", PRIVATE_BYTES)
        public.add("/data.csv", PUBLIC_BYTES)
        public.add("/to-private", b"", redirect_to=f"http://127.0.0.1:{port}/data.csv")
        public.add("/to-rebinding", b"", redirect_to=f"http://rebind.test:{port}/data.csv")
        url = {
            "public": f"http://public.test:{port}/data.csv",
            "rebinding": f"http://rebind.test:{port}/data.csv",
            "redirect to a private address": f"http://public.test:{port}/to-private",
            "redirect to a rebinding name": f"http://public.test:{port}/to-rebinding",
        }[scenario]
        did = "did:op:" + "cd" * 32
        plan = {
            "datasets": [{"did": did, "files": [{"url": url}], "ddo": {"id": did}}],
            "algorithm": {"files": [], "raw_code": base64.b64encode(b"print(1)").decode()},
            "allow_private_hosts": False,
            "stall_seconds": 2,
        }
        folders = {name: folder / name for name in ("inputs", "transformations", "ddos")}
        for path in folders.values():
            path.mkdir()
        outcome: dict[str, Any] = {"port": port}
        try:
            provision(plan, *(str(folders[name]) for name in ("inputs", "transformations", "ddos")))
            outcome["ok"] = True
            outcome["fetched"] = (folders["inputs"] / did / "0").read_bytes().decode()
        except ProvisioningError as exc:
            outcome["ok"] = False
            outcome["reason"] = str(exc)
        outcome["public_requests"] = [
            {"path": seen.path, "host": seen.headers.get("Host")} for seen in public.seen
        ]
        outcome["private_requests"] = [seen.path for seen in private.seen]
        outcome["lookups"] = dict(dns.lookups)
        return outcome
    finally:
        public.close()
        private.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in SCENARIOS:
        print(f"usage: python -m tests.servers.public_network {{{'|'.join(SCENARIOS)}}}", file=sys.stderr)
        return 64
    # It adds an address and binds over /etc/resolv.conf: only ever in namespaces of its own.
    if os.environ.get(_PARENT_NETWORK) in (None, os.readlink("/proc/self/ns/net")):
        print("run it through run_scenario (unshare): it needs namespaces of its own", file=sys.stderr)
        return 64
    with tempfile.TemporaryDirectory(prefix="c2d-public-network-") as folder:
        print(json.dumps(_scenario(argv[1], Path(folder))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
