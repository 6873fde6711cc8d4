"""The ssh flavour's keys: a dropbear host key and a client key, made once per cache (``ssh-keys/``).

The host learns the host key from the build, never from the network, so
strict host-key checking stays meaningful; the client key's public half is
root's authorized_keys in the image.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cma_tool.errors import InfraError


@dataclass(frozen=True)
class SshAccess:
    """How the host logs in to an ssh-flavour image: keys made once per cache, baked into the image."""

    host_public_key: str  # "ssh-ed25519 AAAA...": what the image's dropbear presents
    client_key: Path  # OpenSSH private key; its public half is root's authorized_keys in the image


def ssh_keys(cache: Path) -> tuple[SshAccess, bytes]:
    """The cache's dropbear host key and client key, made on first use: (access, dropbear host key file).

    dropbearkey from the armhf package cannot run on this x86 host, so the
    keys are made here with ``cryptography`` (paramiko's own dependency) and
    the host key is written in dropbear's format by :func:`dropbear_ed25519_key`.
    """
    folder = cache / "ssh-keys"
    if not (folder / "host_ed25519.pub").is_file():
        _make_ssh_keys(folder)
    try:
        host_public = (folder / "host_ed25519.pub").read_text().strip()
        host_key = (folder / "host_ed25519.dropbear").read_bytes()
    except OSError as exc:
        raise InfraError(f"the SSH keys in {folder} are unreadable: {exc}", hint=f"remove {folder} to make new ones") from exc
    client = folder / "client_ed25519"
    if not client.is_file():
        raise InfraError(f"{client} is missing", hint=f"remove {folder} to make new keys")
    return SshAccess(host_public_key=" ".join(host_public.split()[:2]), client_key=client), host_key


def _make_ssh_keys(folder: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ssh-keys-", dir=folder.parent))
    try:
        host = Ed25519PrivateKey.generate()
        client = Ed25519PrivateKey.generate()
        raw = serialization.Encoding.Raw
        seed = host.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        public = host.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
        openssh = serialization.Encoding.OpenSSH
        write_private(work / "host_ed25519.dropbear", dropbear_ed25519_key(seed, public))
        (work / "host_ed25519.pub").write_bytes(
            host.public_key().public_bytes(openssh, serialization.PublicFormat.OpenSSH) + b" cma-tool-emulated-board\n")
        write_private(work / "client_ed25519", client.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
        (work / "client_ed25519.pub").write_bytes(
            client.public_key().public_bytes(openssh, serialization.PublicFormat.OpenSSH) + b" cma-tool\n")
        try:
            work.rename(folder)
        except OSError:
            if not (folder / "host_ed25519.pub").is_file():  # else another process made them first: use theirs
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def write_private(path: Path, data: bytes) -> None:
    """Write a new file only its owner can read (0600); an existing one is an error."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def dropbear_ed25519_key(seed: bytes, public: bytes) -> bytes:
    """An ed25519 private key in dropbear's own file format (what ``dropbear -r`` reads).

    Hand-written because no Python library writes it and dropbearconvert is
    not installed for this host: SSH wire encoding of the string
    "ssh-ed25519", then a 64-byte string of the 32-byte seed and the 32-byte
    public key (dropbear's ed25519.c, buf_put_ed25519_priv_key).
    """
    if len(seed) != 32 or len(public) != 32:
        raise ValueError("an ed25519 seed and public key are 32 bytes each")
    name = b"ssh-ed25519"
    return len(name).to_bytes(4, "big") + name + (64).to_bytes(4, "big") + seed + public


def public_line(private_key: Path) -> str:
    """The OpenSSH public key line beside ``private_key`` (its ``.pub``)."""
    return private_key.with_name(private_key.name + ".pub").read_text().strip()
