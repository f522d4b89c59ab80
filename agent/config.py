"""The agent's configuration: pydantic models of its YAML file. The one place input is validated.

Nothing here reads a file at import time; ``agent.configfile.load_config`` loads and reports.
Every model forbids unknown keys, so a typo is an error, not a silently ignored setting.
Secrets are never written in the file: a :class:`SecretRef` names where the value lives
(``env:NAME`` or ``file:PATH``) and never prints the value.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from agent.configapi import Api
from agent.configlog import Logging
from agent.confignotify import Notifications
from agent.configrefs import cross_reference_problems
from agent.configrules import Model, PreflightInterval, SafePath, TestFailoverAge, no_nul, seconds
from agent.configsecrets import SecretRef, SecretUnavailable  # noqa: F401  (imported from here)
from agent.dns.names import configured_host_name, derive_host_name
from agent.domain.matching import Names, fold
from agent.domain.model import Address, Name, Prefix, RecoveryPointChoice

# -------------------------------------------------------------------------------- sites


class Endpoint(Model):
    """How the agent reaches one remote system."""

    transport: Literal["sim", "psrp", "winrm", "local"] = "sim"
    """``sim``: the simulated site; ``psrp``: PowerShell remoting over WSMan (pypsrp);
    ``winrm``: a WinRM command shell (pywinrm); ``local``: ``powershell.exe`` on this machine
    (the agent runs on the VMM server itself)."""
    address: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None
    credential: SecretRef | None = None
    auth: Literal["negotiate", "kerberos", "ntlm", "credssp", "certificate", "basic"] = "negotiate"
    """``basic`` sends the password on every request: for test servers only, and over HTTPS."""
    ssl: bool = True
    cert_validation: bool = True
    """Check the server's HTTPS certificate (against ``ca_file`` when set, else the system CAs)."""
    ca_file: SafePath | None = None
    """A PEM bundle of the CAs that sign the endpoints' HTTPS certificates."""
    client_cert: SafePath | None = None
    """With ``auth: certificate``: the client certificate (PEM) mapped to a local account."""
    client_key: SafePath | None = None
    connect_timeout_s: float = seconds(30.0, high=600)
    operation_timeout_s: float = seconds(60.0, high=86400)
    """How long one WSMan operation may wait for the host before the call is a timeout."""

    @model_validator(mode="after")
    def _remote_needs_address(self) -> Endpoint:
        if self.transport not in ("sim", "local") and not self.address:
            raise ValueError(f"transport {self.transport} needs an address")
        if self.transport == "local" and self.address:
            raise ValueError("transport local runs on this machine and takes no address")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if self.auth == "certificate" and (self.client_cert is None or not self.ssl):
            raise ValueError("auth certificate needs ssl: true, client_cert and client_key")
        if self.auth != "certificate" and self.client_cert is not None:
            raise ValueError(f"client_cert is used only with auth certificate, not {self.auth}")
        if self.ca_file is not None and not (self.ssl and self.cert_validation):
            raise ValueError("ca_file is used only with ssl: true and cert_validation: true")
        # Kerberos and negotiate may use the service account's ticket; the others need the password.
        if self.transport in ("psrp", "winrm") and self.auth in ("basic", "ntlm", "credssp") \
                and self.username is not None and self.credential is None:
            raise ValueError(f"username {self.username} needs a credential (env:NAME or file:PATH)")
        return self


class HyperVHost(Model):
    name: Name
    endpoint: Endpoint = Endpoint()


class ScriptRef(Model):
    """An operator's script: a path on its host, or relative to the config (then sent as text)."""

    path: str = Field(min_length=1)
    parameters: dict[str, str | int | bool] = Field(default_factory=dict)


class RouterScript(ScriptRef):
    """What drives a router of kind ``script``; its contract: README, "Routers"."""
    timeout_s: float = seconds(120.0, high=3600)


class Router(Model):
    name: Name
    kind: Literal["sim", "netroute", "bgp", "script"] = "sim"
    """NetTCPIP static routes, BGP custom routes (announced networks) or the operator's ``script``."""
    endpoint: Endpoint = Endpoint()
    script: RouterScript | None = None


class Site(Model):
    name: Name
    vmm: Endpoint = Endpoint()
    hyperv_hosts: list[HyperVHost] = Field(default_factory=list)
    dns_servers: list[Name] = Field(default_factory=list)
    """Names of entries in ``dns.servers`` that serve this site."""
    routers: list[Router] = Field(default_factory=list)


class ThirdSite(Model):
    """A site outside the protection pair whose routers must follow a moved subnet."""

    name: Name
    routers: list[Router] = Field(default_factory=list)


# ------------------------------------------------------------------------- network maps


class NetworkRef(Model):
    site: Name
    vm_network: Name


class TestNetworkOption(Model):
    """Where test-failover VMs are connected (the three options of the source documents)."""

    mode: Literal["none", "existing", "create"] = "none"
    vm_network: Name | None = None
    """With ``existing``: the isolated VM network at the target site."""

    @model_validator(mode="after")
    def _existing_needs_network(self) -> TestNetworkOption:
        if self.mode == "existing" and not self.vm_network:
            raise ValueError("test_network mode 'existing' needs vm_network")
        if self.mode != "existing" and self.vm_network:
            raise ValueError(f"test_network mode '{self.mode}' takes no vm_network")
        return self


class NetworkMapping(Model):
    """Source VM network -> target VM network, and how addresses cross over."""

    source: NetworkRef
    target: NetworkRef
    ip_strategy: Literal["retain", "change", "dhcp"]
    test_network: TestNetworkOption = TestNetworkOption()


# ------------------------------------------------------------------------------ subnets


class Announcement(Model):
    """A subnet's route on one router; which fields a router's kind takes: ``agent.configrefs``."""

    router: Name
    next_hop: Address | None = None
    interface: str | None = None
    metric: int = Field(default=256, ge=0, le=65535)


class ThirdSiteRoute(Model):
    """A third-site router whose route for the subnet must point at whichever site holds it."""

    router: Name
    next_hop_by_site: dict[Name, Address]
    metric: int = Field(default=256, ge=0, le=65535)


class WholeSubnet(Model):
    """A subnet that fails over as a whole (its addresses are retained), or is stretched."""

    prefix: Prefix
    stretched: bool = False
    """Stretched across both sites: no route move, partial failover allowed."""
    announcements: dict[Name, list[Announcement]] = Field(default_factory=dict)
    """Per site: the routes that make the subnet reachable there."""
    third_site_routes: list[ThirdSiteRoute] = Field(default_factory=list)


# ---------------------------------------------------------------------------------- DNS


class Tsig(Model):
    name: str
    algorithm: Literal[
        "hmac-sha256", "hmac-sha224", "hmac-sha384", "hmac-sha512", "hmac-sha1", "hmac-md5"
    ] = "hmac-sha256"
    secret: SecretRef


class GssTsig(Model):
    """Kerberos-signed (GSS-TSIG, RFC 3645) updates: what AD-integrated zones accept.

    ``keytab`` and ``ccache`` are ``env:NAME`` references to a variable holding the *path*: the
    file itself is binary key material, so it is never read into the config.
    """

    principal: str
    """The agent's Kerberos principal, ``name@REALM`` (REALM is upper case by convention)."""
    keytab: str | None = None
    ccache: str | None = None
    server_principal: str | None = None
    """Default ``DNS/<server host name>@<REALM of principal>``."""

    @field_validator("principal", "server_principal")
    @classmethod
    def _principal(cls, value: str | None) -> str | None:
        if value is not None and (value.count("@") != 1 or value.startswith("@") or value.endswith("@")):
            raise ValueError(f"a Kerberos principal is 'name@REALM', not {value!r}")
        return value

    @field_validator("keytab", "ccache")
    @classmethod
    def _env_ref(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("env:") or len(value) == 4 or "\0" in value):
            raise ValueError("keytab and ccache are 'env:VARIABLE' references to a variable holding the path")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> GssTsig:
        if (self.keytab is None) == (self.ccache is None):
            raise ValueError("gss_tsig needs exactly one of keytab or ccache")
        return self


class DnsServer(Model):
    name: Name
    kind: Literal["rfc2136", "windows", "sim"]
    address: str | None = None
    port: int = Field(default=53, ge=1, le=65535)
    tsig: Tsig | None = None
    gss_tsig: GssTsig | None = None
    """``rfc2136``: sign with Kerberos instead of a shared key (AD-integrated zones need this)."""
    endpoint: Endpoint | None = None
    """``windows``: how to reach the DNS server for the DnsServer cmdlets."""
    purpose: Literal["production", "test"] = "production"
    """``test``: the DNS of the isolated test networks; test failovers update only these."""
    timeout_s: float = seconds(5.0, high=300)
    verify_servers: list[str] = Field(default_factory=list)
    """After an update, every one of these (``host`` or ``host:port``) must answer the new data:
    the zone's other authoritative servers. Default: the server itself."""
    verify_resolvers: list[str] = Field(default_factory=list)
    """Resolvers to ask once after an update, to report what they still cache."""
    verify_timeout_s: float = seconds(30.0, high=3600, zero_ok=True)
    """How long to wait for lagging servers before reporting them (0: do not verify)."""

    @model_validator(mode="after")
    def _kind_needs(self) -> DnsServer:
        if self.kind == "rfc2136":
            if not self.address:
                raise ValueError("an rfc2136 server needs address")
            if (self.tsig is None) == (self.gss_tsig is None):
                raise ValueError(
                    "an rfc2136 server needs exactly one of tsig (shared key) or gss_tsig (Kerberos; "
                    "the only signing AD-integrated zones accept); unsigned updates are not sent"
                )
        if self.kind == "windows" and (self.endpoint is None or self.endpoint.transport == "sim"):
            raise ValueError("a windows DNS server needs endpoint, with a remoting transport (psrp, winrm or local)")
        return self


class DnsZone(Model):
    name: str
    """Fully qualified or not; a trailing dot is added."""
    server: Name

    @field_validator("name")
    @classmethod
    def _fqdn(cls, value: str) -> str:
        value = value.strip().lower()
        return value if value.endswith(".") else value + "."


HostName = Annotated[str, AfterValidator(configured_host_name)]
"""A DNS host name as written in ``dns.hostnames``: letters, digits and inner hyphens per label
(non-ASCII labels are IDNA-encoded), at most 63 characters a label and 253 in all; kept lower
case with a trailing dot."""


class TtlPolicy(Model):
    failover_ttl: int = Field(default=60, ge=0, le=86400)
    """TTL written with changed records."""
    lower_before_planned: bool = False
    """Lower the TTL of records a planned failover will change, and wait out the old TTL."""
    record_ttl: int = Field(default=3600, ge=0, le=86400)
    """The TTL the zones' records normally have: what a record the failover created where there
    was none (the PTR of a new address when the VM had no PTR before) gets at commit, in place of
    the failover TTL. A record that existed gets its own TTL back, and a PTR that moved the TTL of
    the PTR it replaces. A setting, not read from the zone: a zone's default TTL is not data that
    RFC 2136 or the DnsServer cmdlets return for a name. 3600 s is the default of Windows DNS
    zones and the usual ``$TTL`` of BIND ones."""


class DnsConfig(Model):
    servers: list[DnsServer] = Field(default_factory=list)
    zones: list[DnsZone] = Field(default_factory=list)
    """Forward and reverse zones; a VM's record goes in the longest matching zone."""
    default_domain: str | None = None
    """A VM's host name is ``<host label>.<default_domain>`` unless ``hostnames`` says otherwise;
    the label is derived from the VM name by :func:`agent.dns.names.derive_host_label` (README,
    "DNS host names")."""
    hostnames: dict[Name, HostName] = Field(default_factory=dict)
    """VM name (matched case-insensitively) -> its host name, for VMs whose name gives none or
    the wrong one."""
    ttl: TtlPolicy = TtlPolicy()
    self_registering_vms: list[Name] = Field(default_factory=list)
    """VMs that register their own records (dynamic DNS): the agent leaves their records alone."""
    _hostnames_index: tuple[dict[str, str], Names[str]] | None = PrivateAttr(default=None)

    @field_validator("default_domain")
    @classmethod
    def _fqdn(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return configured_host_name(value, what="default domain")

    def _folded_hostnames(self) -> Names[str]:
        # Built once per hostnames mapping: the planner asks for every VM of a plan.
        cached = self._hostnames_index
        if cached is None or cached[0] is not self.hostnames:
            cached = self._hostnames_index = (self.hostnames, Names(self.hostnames.items()))
        return cached[1]

    def host_name_of(self, vm: str) -> str | None:
        """A VM's DNS name (fully qualified, lower case): ``hostnames[vm]`` (case-insensitive),
        else derived from the VM name under ``default_domain``; None when neither is configured.
        ``HostNameError`` when the VM name gives no valid DNS name (refused at load for the VMs
        of the recovery plans, see ``AgentConfig``)."""
        name = self.hostnames.get(vm)
        if name is None and self.hostnames:
            name = self._folded_hostnames().get(vm)
        if name is not None:
            return name
        if self.default_domain is None:
            return None
        return derive_host_name(vm, self.default_domain)


# ------------------------------------------------------------------------ recovery plans


class ScriptStep(ScriptRef):
    """A PowerShell script run on a named host between groups."""

    host: Name
    timeout_s: float = seconds(600, high=86400)


class ManualStep(Model):
    """A pause: the operation waits (``waiting_for_manual_action``) until an operator resumes it."""

    instruction: str = Field(min_length=1)


class Step(Model):
    script: ScriptStep | None = None
    manual: ManualStep | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        if (self.script is None) == (self.manual is None):
            raise ValueError("a step is exactly one of script or manual")
        return self


class Group(Model):
    name: Name
    vms: list[Name] = Field(min_length=1)
    before: list[Step] = Field(default_factory=list)
    """Steps run before anything of this group changes (after the previous group's steps)."""
    after: list[Step] = Field(default_factory=list)
    """Steps run after this group's VMs have failed over, before the next group starts."""


class RecoveryPlan(Model):
    name: Name
    groups: list[Group] = Field(min_length=1)
    recovery_point: RecoveryPointChoice = "latest"
    """The recovery point its failovers use unless the operation names one: ``latest``,
    ``latest_app_consistent``, or the name of a replica snapshot (``agent.domain.recovery``)."""

    @property
    def vms(self) -> list[str]:
        return [vm for g in self.groups for vm in g.vms]


# --------------------------------------------------------------------- address overrides


class AddressOverride(Model):
    """An operator-chosen address for one IP configuration of a VM's NIC (SRM's DR IP Customizer)."""

    vm: Name
    nic: Name
    ip_configuration: int = Field(default=0, ge=0, le=255)
    """Which IP configuration of the NIC: 0 the primary, 1.. its secondaries."""
    failover: Address | None = None
    """The replica's address after a planned or unplanned failover (instead of the derived one)."""
    test: Address | None = None
    """The test VM's address in a test failover (instead of the failover address)."""

    @model_validator(mode="after")
    def _sets_something(self) -> AddressOverride:
        if self.failover is None and self.test is None:
            raise ValueError("an address override gives failover, test or both")
        return self

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.vm, self.nic, self.ip_configuration)


# ----------------------------------------------------------------------------- policies


class RetryPolicy(Model):
    attempts: int = Field(default=5, ge=1, le=100)
    initial_backoff_s: float = seconds(1.0, high=3600, zero_ok=True)
    max_backoff_s: float = seconds(30.0, high=3600, zero_ok=True)
    multiplier: float = Field(default=2.0, ge=1, le=10, allow_inf_nan=False)


class Concurrency(Model):
    global_limit: int = Field(default=16, ge=1, le=1000)
    per_host: int = Field(default=4, ge=1, le=1000)


class Policies(Model):
    test_failover_max_age: TestFailoverAge = timedelta(days=14)
    """Older test failovers are cleaned up by force (the source documents' two weeks)."""
    concurrency: Concurrency = Concurrency()
    retry: RetryPolicy = RetryPolicy()
    preflight_interval: PreflightInterval = timedelta(hours=1)
    """How often ``serve`` re-plans every recovery plan and reports what would fail (0: never)."""


# ------------------------------------------------------------------------------- agent


class Simulator(Model):
    """The simulated sites: an inventory describing the world, and where its state is kept."""

    inventory: SafePath
    """YAML inventory (relative paths are relative to the config file)."""
    state: SafePath | None = None
    """Where the simulated world is persisted; default: beside the store."""


class Store(Model):
    url: Annotated[str, AfterValidator(no_nul)] | None = None
    """Any SQLAlchemy URL; default: a SQLite file in ``data_dir``."""
    lease_s: float = seconds(15.0, high=3600)
    """How long the lease of the process executing operations lasts unrenewed: a standby
    takes over at most this long after the leader stopped renewing it (killed, paused, cut off)."""


class AgentSettings(Model):
    site: Name
    """The site this agent runs at."""
    mode: Literal["network-only", "full"] = "network-only"
    owner_id: str = Field(default="failover-agent", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@\-]+$")
    """Written into every reservation description and journal entry: what the agent owns."""
    data_dir: SafePath = Path("var")
    """Store, simulator state and logs (relative paths are relative to the config file)."""


class AgentConfig(Model):
    """The whole configuration file."""

    agent: AgentSettings
    sites: list[Site] = Field(min_length=2, max_length=2)
    third_sites: list[ThirdSite] = Field(default_factory=list)
    simulator: Simulator | None = None
    network_mappings: list[NetworkMapping] = Field(default_factory=list)
    subnets: list[WholeSubnet] = Field(default_factory=list)
    dns: DnsConfig = DnsConfig()
    recovery_plans: list[RecoveryPlan] = Field(default_factory=list)
    address_overrides: list[AddressOverride] = Field(default_factory=list)
    address_overrides_file: Path | None = None
    """A CSV of more overrides, written by ``addresses import`` (format: ``agent.overrides``)."""
    policies: Policies = Policies()
    store: Store = Store()
    api: Api = Api()
    notifications: Notifications = Notifications()
    logging: Logging = Logging()
    _imported_overrides: tuple[tuple[int, AddressOverride], ...] = PrivateAttr(default=())  # (line, row) of the CSV

    # Cross-references are checked here so a bad config is reported before anything runs.
    @model_validator(mode="after")
    def _cross_references(self, info: ValidationInfo) -> AgentConfig:
        problems = cross_reference_problems(self)
        if problems:
            # One ValueError carrying every problem; the loader splits them back into located errors.
            raise ValueError(CROSS_REFERENCE_MARK + "\n".join(problems))
        return self

    def site(self, name: str) -> Site:
        return next(s for s in self.sites if s.name == name)

    def plan(self, name: str) -> RecoveryPlan | None:
        """The recovery plan of that name, matched case-insensitively."""
        return next((p for p in self.recovery_plans if fold(p.name) == fold(name)), None)

    @property
    def overrides(self) -> tuple[AddressOverride, ...]:  # the file's own, then the CSV's
        return (*self.address_overrides, *(o for _, o in self._imported_overrides))

    @property
    def imported_overrides(self) -> tuple[tuple[int, AddressOverride], ...]:
        return self._imported_overrides

    def with_imported_overrides(self, rows: tuple[tuple[int, AddressOverride], ...]) -> AgentConfig:
        copy = self.model_copy()
        copy._imported_overrides = rows
        return copy

    @property
    def local_site(self) -> Site:
        return self.site(self.agent.site)

    @property
    def peer_site(self) -> Site:
        return next(s for s in self.sites if s.name != self.agent.site)


CROSS_REFERENCE_MARK = "cross-reference problems:\n"
"""Prefix of the ValueError raised by ``AgentConfig``'s cross-reference check; each following
line starts with the dotted key path it is about."""
