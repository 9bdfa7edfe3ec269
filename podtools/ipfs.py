"""IPFS for podtools, through Kubo's HTTP RPC API (js-ipfs answers the same calls): `add` to store a
result, `files/mkdir` and `files/cp` to keep it in the node's MFS under the job's folder (which
keeps it from garbage collection, and lets one call remove a whole job), `cat` to read inputs.

Configured by C2D_IPFS_API, C2D_IPFS_GATEWAY and C2D_IPFS_TIMEOUT_SECONDS (docs/storage.md). Every
RPC call is a POST, as Kubo requires, and every multipart part carries its own Content-Type (js-ipfs
refuses a part without one).
"""

from __future__ import annotations

import json
import os
import secrets
from urllib.parse import quote

from podtools import httpio

CHUNK = 1024 * 1024


class IpfsError(Exception):
    pass


def api_url() -> str:
    return (os.environ.get("C2D_IPFS_API") or "").rstrip("/")


def gateway_url() -> str:
    return (os.environ.get("C2D_IPFS_GATEWAY") or "").rstrip("/")


def timeout_seconds() -> float:
    return float(os.environ.get("C2D_IPFS_TIMEOUT_SECONDS") or 60)


def _arg(value: str) -> str:
    return quote(value, safe="/")


def _call(command: str, query: str, api: str | None = None) -> bytes:
    api = api or api_url()
    if not api:
        raise IpfsError("no IPFS API is configured (C2D_IPFS_API)")
    timeout = timeout_seconds()
    url = f"{api}/api/v0/{command}?{query}&timeout={int(timeout)}s"
    response = httpio.request("POST", url, timeout=timeout + 5)
    try:
        body = response.read(1 << 20)
    finally:
        response.close()
    if response.status != 200:
        raise IpfsError(f"the IPFS node refused {command}: {_message(body)}")
    return body


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("Message", ""))[:200] or "no reason given"
    except ValueError:
        return body[:200].decode(errors="replace")


def add(fd: int, size: int, on_piece=None) -> str:
    """Adds the file's content (streamed, flat memory) unpinned; answers its CID. on_piece sees
    every piece sent (to hash it on the way)."""
    api = api_url()
    if not api:
        raise IpfsError("no IPFS API is configured (C2D_IPFS_API)")
    boundary = secrets.token_hex(16)
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="result"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    conn, target = httpio.connection(
        f"{api}/api/v0/add?pin=false&quieter=true&progress=false", timeout_seconds()
    )
    try:
        conn.putrequest("POST", target, skip_accept_encoding=True)
        conn.putheader("User-Agent", httpio.USER_AGENT)
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(len(head) + size + len(tail)))
        conn.putheader("Connection", "close")
        conn.endheaders()
        conn.send(head)
        sent = 0
        while sent < size:
            piece = os.pread(fd, min(CHUNK, size - sent), sent)
            if not piece:
                raise IpfsError("the file became shorter while it was added")
            if on_piece is not None:
                on_piece(piece)
            conn.send(piece)
            sent += len(piece)
        conn.send(tail)
        response = conn.getresponse()
        body = response.read(1 << 20)
    finally:
        conn.close()
    if response.status != 200:
        raise IpfsError(f"the IPFS node refused the file: {_message(body)}")
    cid = ""
    for line in body.splitlines():
        if line.strip():
            cid = str(json.loads(line).get("Hash") or cid)
    if not cid:
        raise IpfsError("the IPFS node answered no CID")
    return cid


def keep(cid: str, mfs_path: str) -> None:
    """Puts the CID at mfs_path in the node's MFS (its folders made as needed)."""
    folder = mfs_path.rsplit("/", 1)[0]
    if folder:
        _call("files/mkdir", f"arg={_arg(folder)}&parents=true")
    _call("files/cp", f"arg={_arg('/ipfs/' + cid)}&arg={_arg(mfs_path)}")


def remove(mfs_path: str, api: str | None = None) -> None:
    """Removes a folder of the MFS and everything under it; a missing one is fine."""
    try:
        _call("files/rm", f"arg={_arg(mfs_path)}&recursive=true&force=true", api)
    except IpfsError as exc:
        if "not exist" not in str(exc) and "not found" not in str(exc).lower():
            raise
