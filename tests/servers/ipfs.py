"""A real IPFS node for the tests: js-ipfs 0.66 from npm (package.json at the repository root),
which serves Kubo's HTTP RPC API and a gateway. Started offline on 127.0.0.1 ports chosen by the
kernel, with a fresh repository, as /work/shared/FINDINGS.md describes:

- `Promise.withResolvers` is polyfilled for Node 20 (ipfs_polyfill.cjs, via NODE_OPTIONS);
- the repository is made with `init --profile=test` (no bootstrap peers, no MDNS, port 0);
- clients must send a Content-Type in every multipart part (podtools/ipfs.py does).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JSIPFS = ROOT / "node_modules" / ".bin" / "jsipfs"
POLYFILL = Path(__file__).with_name("ipfs_polyfill.cjs")
_LISTENING = re.compile(r"(HTTP API|Gateway \(read only\)) listening on /ip4/([\d.]+)/tcp/(\d+)/http")


def unavailable_reason() -> str | None:
    """Why no node can be started here, or None."""
    if shutil.which("node") is None:
        return "Node.js is not installed (the IPFS tests run js-ipfs)"
    if not JSIPFS.exists():
        return "js-ipfs is not installed: run `npm install` at the repository root (package.json)"
    return None


class IpfsNode:
    def __init__(self, start_timeout: float = 60.0) -> None:
        self.repo = Path(tempfile.mkdtemp(prefix="c2d-ipfs-"))
        env = {
            **os.environ,
            "IPFS_PATH": str(self.repo / "repo"),
            "NODE_OPTIONS": f"--require {POLYFILL}",
        }
        subprocess.run(
            [str(JSIPFS), "init", "--profile=test"], env=env, check=True, capture_output=True, timeout=120
        )
        config_path = self.repo / "repo" / "config"
        config = json.loads(config_path.read_text())
        addresses = config["Addresses"]
        addresses["API"] = "/ip4/127.0.0.1/tcp/0"
        addresses["Gateway"] = "/ip4/127.0.0.1/tcp/0"
        addresses["RPC"] = "/ip4/127.0.0.1/tcp/0"
        addresses["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
        config_path.write_text(json.dumps(config, indent=2))
        self.process = subprocess.Popen(
            [str(JSIPFS), "daemon", "--offline"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it and nothing else
        )
        self.api_url = ""
        self.gateway_url = ""
        self.output: list[str] = []
        ready = threading.Event()
        threading.Thread(target=self._read_output, args=(ready,), daemon=True).start()
        if not ready.wait(start_timeout) or not (self.api_url and self.gateway_url):
            self.stop()
            raise RuntimeError("js-ipfs did not start:\n" + "\n".join(self.output[-30:]))

    def _read_output(self, ready: threading.Event) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            match = _LISTENING.search(line)
            if match:
                url = f"http://{match.group(2)}:{match.group(3)}"
                if match.group(1) == "HTTP API":
                    self.api_url = url
                else:
                    self.gateway_url = url
            if "Daemon is ready" in line:
                ready.set()
        ready.set()

    def env(self, gateway: bool = True) -> dict[str, str]:
        values = {"C2D_IPFS_API": self.api_url, "C2D_IPFS_TIMEOUT_SECONDS": "10"}
        if gateway:
            values["C2D_IPFS_GATEWAY"] = self.gateway_url
        return values

    def rpc(self, command: str, query: str = "", data: bytes | None = None, timeout: float = 30) -> bytes:
        """One RPC call (POST, as Kubo requires); a body goes as one multipart file part."""
        import urllib.request

        headers: dict[str, str] = {}
        body = None
        if data is not None:
            boundary = "c2dtestboundary"
            body = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n"
                ).encode()
                + data
                + f"\r\n--{boundary}--\r\n".encode()
            )
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        request = urllib.request.Request(
            f"{self.api_url}/api/v0/{command}?{query}", data=body or b"", headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())

    def add(self, data: bytes) -> str:
        return str(json.loads(self.rpc("add", "pin=true", data).splitlines()[-1])["Hash"])

    def cat(self, cid: str) -> bytes:
        return self.rpc("cat", f"arg={cid}&timeout=10s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.repo, ignore_errors=True)


_shared: IpfsNode | None = None
_lock = threading.Lock()


def shared_ipfs_node() -> IpfsNode:
    """One node for the whole test process, stopped when it exits."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = IpfsNode()
            atexit.register(_shared.stop)
        return _shared
