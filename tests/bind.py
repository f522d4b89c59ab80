"""A throwaway BIND 9 ``named`` on 127.0.0.1 for tests and benchmarks.

Each :class:`BindServer` owns one directory (config, zone files, journal, log) and one free high
port (TCP *and* UDP). It is started with ``named -f`` in the foreground as a child process and
stopped by its pid; it can be stopped and started again on the same port and directory (named
replays its journal, so updates survive a restart). Nothing under ``/etc/bind`` is used.

What a test can build from one primary:

* :meth:`BindServer.secondary` -- a second named serving the same zones from its *own* copy of
  the original zone files. Nothing transfers updates to it, so it models a lagging secondary
  until a test updates it directly.
* :meth:`BindServer.caching_resolver` -- a recursive named that forwards everything to the
  primary and caches the answers (what clients ask after a failover).

The query helpers here (:meth:`BindServer.rrset`, :meth:`BindServer.serial`) use raw dnspython
messages and never the agent's driver, so tests can check the driver independently.

``named`` missing: :func:`require_named` skips the test with the reason, except when the
environment says ``CI=true``, where a missing BIND is a broken CI image and the test fails.

Facts this relies on (checked on this machine, see
``/work/shared/reference/recipes-tested-here.md`` section 1): named is up in ~50 ms; ``-f`` keeps
it in the foreground and honours ``logging {}``; ``controls { };`` disables rndc; on SIGTERM it
leaves its ``.jnl`` journal, which a restart replays.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from tests import leakcheck

HOST = "127.0.0.1"

FORWARD_ZONE = "example.test."
REVERSE4_ZONE = "2.0.192.in-addr.arpa."  # 192.0.2.0/24 (RFC 5737 TEST-NET-1)
REVERSE6_ZONE = "8.b.d.0.1.0.0.2.ip6.arpa."  # 2001:db8::/32 (RFC 3849)

_SOA = "@ IN SOA ns1.example.test. hostmaster.example.test. ( 1 3600 600 86400 60 )\n  IN NS ns1.example.test.\n"

DEFAULT_ZONES: dict[str, str] = {
    FORWARD_ZONE: "$TTL 300\n"
    + _SOA
    + textwrap.dedent(
        """\
        ns1    IN A    127.0.0.1
        host1  IN A    192.0.2.1
        multi  IN A    192.0.2.2
        multi  IN A    192.0.2.3
        v6host IN AAAA 2001:db8::1
        """
    ),
    REVERSE4_ZONE: "$TTL 300\n" + _SOA + "1 IN PTR host1.example.test.\n",
    REVERSE6_ZONE: "$TTL 300\n"
    + _SOA
    + "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 IN PTR v6host.example.test.\n",
}
"""Forward zone, IPv4 reverse zone and IPv6 reverse zone, each with SOA serial 1."""


class NamedUnavailable(RuntimeError):
    """``named`` is not installed here."""


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key as named.conf declares it. The secret never shows in ``repr``."""

    name: str
    algorithm: str = "hmac-sha256"
    secret: str = field(default="", repr=False)

    @classmethod
    def generate(cls, name: str, algorithm: str = "hmac-sha256") -> TsigKey:
        # The length tsig-keygen uses for each algorithm (its digest size); any length works.
        size = {"hmac-sha512": 64, "hmac-sha384": 48, "hmac-sha224": 28, "hmac-sha1": 20, "hmac-md5": 16}
        secret = base64.b64encode(secrets.token_bytes(size.get(algorithm, 32))).decode()
        return cls(name, algorithm, leakcheck.remember(secret))

    def conf(self) -> str:
        return f'key "{self.name}" {{ algorithm {self.algorithm}; secret "{self.secret}"; }};\n'

    def dnspython_key(self) -> dns.tsig.Key:
        algorithm = dns.tsig.HMAC_MD5 if self.algorithm == "hmac-md5" else dns.name.from_text(self.algorithm)
        return dns.tsig.Key(self.name, self.secret, algorithm)


def default_keys() -> dict[str, TsigKey]:
    """``agent-key`` (may update), ``agent-key-512`` (may update, hmac-sha512) and ``other-key``
    (known to the server, not allowed to update: REFUSED)."""
    keys = [
        TsigKey.generate("agent-key"),
        TsigKey.generate("agent-key-512", "hmac-sha512"),
        TsigKey.generate("other-key"),
    ]
    return {k.name: k for k in keys}


def named_path() -> str | None:
    found = shutil.which("named")
    if found:
        return found
    return "/usr/sbin/named" if os.access("/usr/sbin/named", os.X_OK) else None


def ci_requires_bind(environ: Mapping[str, str] | None = None) -> bool:
    return (environ if environ is not None else os.environ).get("CI", "").strip().lower() == "true"


def require_named(environ: Mapping[str, str] | None = None) -> str:
    """The path of ``named``; else skip the calling test with the reason -- or fail it under
    ``CI=true``, where BIND is part of the image and its absence must not pass silently."""
    import pytest  # only the test-facing helper needs pytest; the benchmark does not

    path = named_path()
    if path:
        return path
    reason = "BIND 9 named is not installed (apt-get install -y bind9 bind9-dnsutils)"
    if ci_requires_bind(environ):
        pytest.fail(f"{reason}; CI=true, so BIND tests must run, not skip", pytrace=False)
    pytest.skip(reason)
    raise AssertionError("unreachable")  # pytest.skip raises


def free_port(host: str = HOST, attempts: int = 50) -> int:
    """A port free for both TCP and UDP on ``host`` (named binds both)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no port free for both TCP and UDP")


class BindServer:
    """One named process on 127.0.0.1 with its own directory, port, zones and keys."""

    def __init__(
        self,
        directory: Path,
        *,
        zones: Mapping[str, str] | None = None,
        keys: Mapping[str, TsigKey] | None = None,
        update_keys: Sequence[str] = ("agent-key", "agent-key-512"),
        forwarders: Sequence[tuple[str, int]] = (),
        port: int | None = None,
        named: str | None = None,
        gss_keytab: Path | None = None,
        grants: Sequence[str] | None = None,
    ) -> None:
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.zones: dict[str, str] = dict(DEFAULT_ZONES if zones is None and not forwarders else zones or {})
        self.keys: dict[str, TsigKey] = dict(keys) if keys is not None else default_keys()
        self.update_keys = tuple(update_keys)
        self.forwarders = tuple(forwarders)
        # GSS-TSIG (recipe section 3): named accepts any service principal in this keytab; the
        # update-policy grants name Kerberos principals ("grant agent@REALM zonesub ANY").
        self.gss_keytab = gss_keytab
        self.grants = tuple(grants) if grants is not None else None
        found = named or named_path()
        if found is None:
            raise NamedUnavailable("named is not installed")
        self.named: str = found
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_files()

    # ------------------------------------------------------------------ files

    def zone_file(self, zone: str) -> Path:
        return self.dir / f"{zone.rstrip('.')}.zone"

    def _write_files(self) -> None:
        for zone, text in self.zones.items():
            self.zone_file(zone).write_text(text)
        (self.dir / "keys.conf").write_text("".join(k.conf() for k in self.keys.values()))
        self.dir.joinpath("keys.conf").chmod(0o600)
        grants = " ".join(f"grant {name} zonesub ANY;" for name in self.update_keys)
        if self.grants is not None:
            grants += " " + " ".join(g.rstrip(";") + ";" for g in self.grants)
        gss = f'tkey-gssapi-keytab "{self.gss_keytab}";' if self.gss_keytab is not None else ""
        zones = "".join(
            f'zone "{zone}" {{ type primary; file "{self.zone_file(zone)}"; update-policy {{ {grants} }}; }};\n'
            for zone in self.zones
        )
        if self.forwarders:
            fwd = " ".join(f"{h} port {p};" for h, p in self.forwarders)
            resolving = f"recursion yes; allow-recursion {{ 127.0.0.1; }}; forward only; forwarders {{ {fwd} }};"
        else:
            resolving = "recursion no;"
        d = self.dir
        (d / "named.conf").write_text(
            textwrap.dedent(
                f"""\
                include "{d}/keys.conf";
                options {{
                    directory "{d}";
                    pid-file "{d}/named.pid";
                    session-keyfile "{d}/session.key";
                    managed-keys-directory "{d}";
                    listen-on port {self.port} {{ 127.0.0.1; }};
                    listen-on-v6 {{ none; }};
                    allow-query {{ 127.0.0.1; }};
                    dnssec-validation no;
                    notify no;
                    {resolving}
                    {gss}
                }};
                controls {{ }};
                logging {{
                    channel file_log {{
                        file "{d}/named.log" versions 1 size 50m; severity info; print-time yes; print-category yes;
                    }};
                    category default {{ file_log; }};
                }};
                """
            )
            + zones
        )

    # -------------------------------------------------------------- lifecycle

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self, timeout: float = 10.0) -> BindServer:
        """Start named and return once every zone answers its SOA (or, for a resolver, once it
        answers at all)."""
        if self.running:
            return self
        out = open(self.dir / "named.out", "ab")  # noqa: SIM115 -- handed to the child process
        try:
            self._proc = subprocess.Popen(
                [self.named, "-f", "-c", str(self.dir / "named.conf")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"named exited with {code} while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"named did not answer within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.01)
        return self

    def _ready(self) -> bool:
        try:
            if not self.zones:
                q = dns.message.make_query("version.bind.", "TXT", "CH")
                dns.query.tcp(q, self.host, port=self.port, timeout=0.5)
                return True
            for zone in self.zones:
                r = dns.query.tcp(dns.message.make_query(zone, "SOA"), self.host, port=self.port, timeout=0.5)
                if r.rcode() != dns.rcode.NOERROR or not r.answer:
                    return False
            return True
        except (OSError, EOFError, dns.exception.DNSException):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by pid, then SIGKILL if it lingers. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, timeout: float = 10.0) -> BindServer:
        self.stop()
        return self.start(timeout)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP named: connections are still accepted by the kernel, nothing answers."""
        assert self._proc is not None, "named is not running"
        os.kill(self._proc.pid, signal.SIGSTOP)
        # The signal is delivered asynchronously: until the kernel reports the process stopped
        # ('T' in /proc/PID/stat), named may still answer a query sent now.
        deadline = time.monotonic() + 5
        stat = Path(f"/proc/{self._proc.pid}/stat")
        while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert time.monotonic() < deadline, "named did not stop on SIGSTOP"
            time.sleep(0.01)
        try:
            yield
        finally:
            os.kill(self._proc.pid, signal.SIGCONT)

    def __enter__(self) -> BindServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for name in ("named.out", "named.log"):
            p = self.dir / name
            if p.exists():
                parts.append(f"--- {name}\n" + p.read_text(errors="replace")[-chars:])
        return "\n".join(parts)

    # ------------------------------------------------------------- siblings

    def secondary(self, directory: Path) -> BindServer:
        """A second named serving the same zones from its own copy of the *original* zone files,
        on its own port. It receives no updates: a lagging secondary (tests may update it with
        the same keys to let it catch up)."""
        return BindServer(directory, zones=self.zones, keys=self.keys, update_keys=self.update_keys, named=self.named)

    def caching_resolver(self, directory: Path) -> BindServer:
        """A recursive named that forwards every query to this server and caches the answers."""
        return BindServer(directory, zones={}, keys={}, update_keys=(), forwarders=[self.address], named=self.named)

    # ------------------------------------------------- independent DNS helpers

    def query(self, name: str, rdtype: str, *, recursion: bool = False) -> dns.message.Message:
        """A plain TCP query with raw dnspython (no agent code involved)."""
        q = dns.message.make_query(name, rdtype, flags=dns.flags.RD if recursion else 0)
        return dns.query.tcp(q, self.host, port=self.port, timeout=5)

    def rrset(self, name: str, rdtype: str) -> tuple[int, tuple[str, ...]] | None:
        """(ttl, sorted values) of an RRset, or None when it does not exist."""
        r = self.query(name, rdtype)
        rrset = r.get_rrset(r.answer, dns.name.from_text(name), dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        if rrset is None:
            return None
        return rrset.ttl, tuple(sorted(rd.to_text() for rd in rrset))

    def serial(self, zone: str) -> int:
        r = self.query(zone, "SOA")
        return r.answer[0][0].serial

    def send_update(self, update: dns.update.UpdateMessage) -> dns.message.Message:
        """Send an update made outside the agent (a "foreign" change)."""
        return dns.query.tcp(update, self.host, port=self.port, timeout=5)

    def foreign_update(self, zone: str, key: str = "agent-key") -> dns.update.UpdateMessage:
        """An empty update for ``zone`` signed with one of this server's keys; add operations
        and pass it to :meth:`send_update`."""
        k = self.keys[key].dnspython_key()
        return dns.update.UpdateMessage(zone, keyring=k, keyname=k.name, keyalgorithm=k.algorithm)

    def __repr__(self) -> str:
        return f"BindServer(dir={str(self.dir)!r}, port={self.port}, pid={self.pid})"


@contextlib.contextmanager
def running_bind(directory: Path, **kwargs: object) -> Iterator[BindServer]:
    """Start a :class:`BindServer` in ``directory`` and stop it on exit."""
    server = BindServer(directory, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
