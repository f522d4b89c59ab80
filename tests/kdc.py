"""A throwaway MIT Kerberos realm for the GSS-TSIG tests: ``krb5kdc`` on a free loopback port,
its database, config and keytabs in a temp dir (shared/reference/gss-tsig-recipe.md, section 2).

No system file is read or written: ``KRB5_CONFIG`` and ``KRB5_KDC_PROFILE`` point into the temp
dir (:meth:`Kdc.environ`). The KDC runs in the foreground (``-n``) as a child, stopped by its
PID. Tools missing: :func:`require_kdc` skips with the reason, except under ``CI=true``, where
.ci/run installs them and a skip would hide a broken image, so the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.bind import HOST, ci_requires_bind, free_port

REALM = "TEST.EXAMPLE"
TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local")


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}",) if os.access(p, os.X_OK)), None)


def require_kdc() -> dict[str, str]:
    """The paths of the MIT KDC tools; else skip (or fail under ``CI=true``) naming what is missing."""
    found = {name: _tool(name) for name in TOOLS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        reason = f"MIT Kerberos tools not installed: {', '.join(missing)} (apt-get install krb5-kdc krb5-admin-server)"
        if ci_requires_bind():
            pytest.fail(f"{reason}; CI=true, so the GSS-TSIG tests must run, not skip", pytrace=False)
        pytest.skip(reason)
    return {name: path for name, path in found.items() if path is not None}


def require_gssapi() -> ModuleType:
    """The ``gssapi`` module (the 'kerberos' extra); else skip, or fail under ``CI=true``."""
    try:
        import gssapi
    except ImportError as exc:
        reason = f"python-gssapi not installed ({exc}); pip install '.[kerberos]'"
        if ci_requires_bind():
            pytest.fail(f"{reason}; CI=true, so the GSS-TSIG tests must run, not skip", pytrace=False)
        pytest.skip(reason)
    return gssapi


class Kdc:
    """One realm with one KDC. :meth:`principal` adds a principal with a random key and returns
    its keytab; ``with Kdc(tmp) as kdc:`` starts and stops it."""

    def __init__(self, directory: Path, realm: str = REALM, port: int | None = None) -> None:
        self.tools = require_kdc()
        self.dir = directory
        self.realm = realm
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def environ(self) -> dict[str, str]:
        """What every Kerberos user (gssapi in the test process, named, kadmin) needs in its env."""
        return {"KRB5_CONFIG": str(self.dir / "krb5.conf"), "KRB5_KDC_PROFILE": str(self.dir / "kdc.conf"),
                "KRB5RCACHEDIR": str(self.dir)}

    def _write(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "krb5.conf").write_text(
            f"[libdefaults]\n default_realm = {self.realm}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n"
            " dns_canonicalize_hostname = false\n rdns = false\n"
            f"[realms]\n {self.realm} = {{\n  kdc = {HOST}:{self.port}\n }}\n"
            f"[domain_realm]\n localhost = {self.realm}\n .test.example = {self.realm}\n")
        (self.dir / "kdc.conf").write_text(
            f"[kdcdefaults]\n kdc_listen = {HOST}:{self.port}\n kdc_tcp_listen = {HOST}:{self.port}\n"
            f"[realms]\n {self.realm} = {{\n  database_name = {self.dir}/principal\n"
            f"  key_stash_file = {self.dir}/stash\n  acl_file = {self.dir}/kadm5.acl\n"
            "  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n }\n"
            f"[logging]\n kdc = FILE:{self.dir}/kdc.log\n")
        (self.dir / "kadm5.acl").touch()

    def _run(self, *argv: str) -> None:
        done = subprocess.run(argv, env={**os.environ, **self.environ()}, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.strip()}")

    def start(self, timeout: float = 10.0) -> Kdc:
        if self._proc is not None:
            return self
        self._write()
        self._run(self.tools["kdb5_util"], "create", "-s", "-r", self.realm, "-P", "throwaway-master-pw")
        self._proc = subprocess.Popen([self.tools["krb5kdc"], "-n", "-P", str(self.dir / "kdc.pid")],
                                      env={**os.environ, **self.environ()}, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"krb5kdc did not start on {HOST}:{self.port}; see {self.dir}/kdc.log") from None
                time.sleep(0.01)

    def principal(self, name: str) -> Path:
        """Add ``name`` (no realm) with a random key; its keytab's path."""
        keytab = self.dir / (name.replace("/", "_") + ".keytab")
        self._run(self.tools["kadmin.local"], "-q", f"addprinc -randkey {name}")
        self._run(self.tools["kadmin.local"], "-q", f"ktadd -k {keytab} {name}")
        return keytab

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Kdc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
