"""The commands that change nothing, for checking before a failover: validate a config against
the sites, preview a plan, and the config file format (schema, template). The demo runs the same
checks and previews."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from agent.cli.app import (
    EXIT_CODES_HELP,
    ConfigOption,
    RecoveryPointOption,
    app,
    echo,
    err,
    out,
    print_json,
    read_config,
    reporting,
)
from agent.cli.sites import open_sites
from agent.cli.vocabulary import kind_option
from agent.configfile import LoadedConfig
from agent.domain.model import Inventory

if TYPE_CHECKING:
    from agent.domain.plan import Plan, PlanKind

config_app = typer.Typer(
    help="Work with the config file format (JSON Schema for editors, a template for a real site).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(config_app, name="config")


def _summary(loaded: LoadedConfig, inventory: Inventory | None = None) -> str:
    cfg = loaded.config
    primary, recovery = (s.name for s in cfg.sites)
    plans = ", ".join(
        f"{p.name} ({len(p.vms)} VM{'s' if len(p.vms) != 1 else ''} in {len(p.groups)} "
        f"group{'s' if len(p.groups) != 1 else ''})"
        for p in cfg.recovery_plans
    ) or "none"
    lines = [
        f"sites: {primary} <-> {recovery}; this agent runs at {cfg.agent.site} in {cfg.agent.mode} mode",
        f"network mappings: {len(cfg.network_mappings)} "
        f"({_count(m.ip_strategy for m in cfg.network_mappings)})",
        f"subnets failing over whole: {', '.join(s.prefix for s in cfg.subnets if not s.stretched) or 'none'}",
        f"DNS: {len(cfg.dns.servers)} server{'s' if len(cfg.dns.servers) != 1 else ''}, "
        f"{len(cfg.dns.zones)} zone{'s' if len(cfg.dns.zones) != 1 else ''}",
        f"recovery plans: {plans}",
    ]
    if cfg.address_overrides or cfg.address_overrides_file is not None:
        from agent.cli.addresses import overrides_summary

        lines.append(overrides_summary(loaded))
    if inventory is not None:
        replicated = {r.vm for r in inventory.replications}
        lines.append(
            f"inventory: {len(replicated)} replicated VMs, {len(inventory.vm_networks)} VM networks, "
            f"{len(inventory.pools)} static pools, {len(inventory.record_sets)} DNS record sets, "
            f"{len(inventory.routes)} routes read"
        )
    return "\n".join("  " + line for line in lines)


def _count(items: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "none"


def _where(loaded: LoadedConfig) -> str:
    how = {"option": "--config", "env": "$FAILOVER_AGENT_CONFIG", "demo": "the shipped demo"}[loaded.source]
    return f"{loaded.path} (from {how})"


def validate_config(loaded: LoadedConfig, *, reset_simulator: bool = False, deep: bool = False) -> None:
    """Check ``loaded`` against what its sites hold and print 'config OK' with a summary; what
    is wrong is raised, each problem located in the file. ``deep``: first the preflight of
    everything the config names (:mod:`agent.preflight`), refused unless it all answers."""

    from agent.wiring import NotAvailableYet, check_available

    try:
        check_available(loaded)
    except NotAvailableYet:
        # Say what did pass: someone filling in the site template can check the file today.
        err.print(
            f"the file itself is valid (format and internal references): {escape(str(loaded.path))}\n"
            "but it cannot be checked against the sites yet:"
        )
        raise
    report = None
    if deep:
        from agent.cli.preflight import require_preflight, show

        _probe_powershell_endpoints(loaded)
        report = require_preflight(loaded)
    inventory = check_against_sites(loaded, reset_simulator=reset_simulator)
    out.print(f"config OK: {escape(_where(loaded))}")
    out.print(escape(_summary(loaded, inventory)))
    if report is not None:
        show(report, out)


def _probe_powershell_endpoints(loaded: LoadedConfig) -> None:
    """``--deep``: each PowerShell endpoint, read-only, one line each; refused unless all answer
    and have the module their role needs (exit 3 when they only did not answer: try again)."""

    from agent.errors import UnreachableError

    probes = probe_powershell_endpoints(loaded)
    for p in probes:
        out.print(escape(f"{p.key} ({p.address}): {p.outcome}: {p.detail}"))
    failed = [p for p in probes if not p.ok]
    if failed:
        located = loaded.located([(p.key, f"{p.address}: {p.outcome}: {p.detail}") for p in failed])
        if all(p.outcome == "unreachable" for p in failed):
            raise UnreachableError(str(located), endpoints=[p.key for p in failed])
        raise located


def probe_powershell_endpoints(loaded: LoadedConfig) -> list[Any]:
    """Each PowerShell endpoint the config names, reached read-only (``agent.drivers.remoting.probe``)."""

    from agent.drivers.remoting.probe import probe_endpoints
    from agent.drivers.remoting.transports import open_remote

    opened: dict[str, Any] = {}

    def remote(transport: str) -> Any:
        if transport not in opened:
            opened[transport] = open_remote(transport, loaded)
        return opened[transport]

    try:
        return list(probe_endpoints(loaded.config, remote))
    finally:
        for r in opened.values():
            r.close()


def check_against_sites(loaded: LoadedConfig, *, reset_simulator: bool = False) -> Inventory:
    """What the sites hold, read; what ``loaded`` names that they lack is raised, located."""

    from agent.cli.addresses import override_problems
    from agent.domain.validation import check_config_against_inventory
    from agent.yamlfile import InvalidFileError

    with open_sites(loaded, reset_simulator=reset_simulator) as sites:
        issues = check_config_against_inventory(loaded.config, sites.read)
        overrides = override_problems(loaded, sites.read)
        if issues or overrides:
            located = loaded.located(issues)
            raise InvalidFileError(located.problems[0].file if issues else overrides[0].file,
                                   [*located.problems, *overrides])
        return sites.read


def plan_from_sites(loaded: LoadedConfig, plan_name: str, kind: PlanKind) -> Plan:
    """The plan of a failover as the sites are now (nothing changes)."""

    from agent.domain.planning import build_plan

    # A test failover writes only to test DNS servers, the others only to production ones.
    with open_sites(loaded, dns_purpose="test" if kind == "test" else "production") as sites:
        return build_plan(loaded.config, sites.read, plan_name, kind)


# -------------------------------------------------------------------------- commands


@app.command(
    help="Check a config file: its format, its internal references (sites, routers, hosts, DNS "
    "servers), and that the VM networks and VMs it names exist at the sites. Prints 'config OK' "
    "with a short summary, or every problem found with file, line and key.\n\n"
    "--deep first checks that every secret resolves and every endpoint answers a read-only call "
    "(each VMM server, Hyper-V host and router, and each DNS server for each zone with a query "
    "signed the way its updates are: a shared TSIG key for BIND, Kerberos (gss_tsig) for "
    "AD-integrated Windows zones, which accept no shared-key TSIG), as 'run' does before it "
    "changes anything.\n\n" + EXIT_CODES_HELP
)
def validate(
    config: ConfigOption = None,
    deep: Annotated[bool, typer.Option("--deep", help="Also resolve every secret and reach every endpoint "
                                       "(read-only calls, signed DNS queries).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (ok, problems, "
                                          "probes) and nothing else.")] = False,
) -> None:
    if as_json:
        from agent.cli.preflight import validate_json

        with reporting(as_json=True):
            validate_json(config, deep=deep)
    else:
        with reporting():
            validate_config(read_config(config), deep=deep)


@app.command(
    help="Preview what an operation of a recovery plan would change, without changing anything. "
    "A failover (test, planned, unplanned, failback) shows IP reservations in VMM pools, failover "
    "IPs on replica NICs, test networks, route moves and DNS records, per group and VM, then a "
    "summary line; a prepare, cleanup, commit or reverse shows the operation it follows, the VMs "
    "as the sites report them and the steps it would run. Each shows the checksum 'run "
    "--checksum' accepts. A plan that breaks a rule (a subnet left half behind, a test network "
    "that cannot work, an exhausted pool ...) is refused with every reason; a kind the plan's "
    "state does not allow now says so in its first note.\n\n" + EXIT_CODES_HELP
)
def plan(
    plan_name: Annotated[
        str, typer.Option("--plan", "-p", metavar="NAME", help="Recovery plan name (recovery_plans[].name).")
    ],
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            "-k",
            metavar="KIND",
            callback=kind_option,
            help="test: a drill in isolated networks, production untouched. planned: source VMs "
            "shut down first, no data loss. unplanned: the primary site is lost. Also prepare, "
            "cleanup, commit, reverse, failback, change_recovery_point (as 'run --kind').",
        ),
    ],
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plan as JSON on stdout (nothing else goes to stdout).")
    ] = False,
    recovery_point: RecoveryPointOption = None,
) -> None:
    from agent.cli.preview import preview
    from agent.cli.remote import remote_agent
    from agent.cli.session import open_engine

    with reporting(as_json=as_json):
        if (agent := remote_agent(config)) is not None:
            from agent.cli.remote_ops import remote_plan

            remote_plan(agent, plan_name, kind, as_json)
            return
        loaded = read_config(config)
        with open_engine(loaded) as engine:
            shown = preview(engine, kind, plan_name, recovery_point=recovery_point)
        if as_json:
            print_json(shown.body)
        else:
            echo(shown.text, nl=False)


@config_app.command("schema", help="Print the JSON Schema of the config file, for editors (e.g. the "
                    "YAML extension of VS Code: '# yaml-language-server: $schema=<file>').")
def config_schema() -> None:
    with reporting(as_json=True):
        from agent.config import AgentConfig

        schema = AgentConfig.model_json_schema()
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "failover-agent config",
            **{k: v for k, v in schema.items() if k != "title"},
        }
        print_json(schema)


@config_app.command("template", help="Print a commented config template for a real pair of sites "
                    "(PowerShell remoting to VMM and Hyper-V, RFC 2136 DNS). Save it, fill it in, "
                    "then run 'failover-agent validate --config FILE'.")
def config_template() -> None:
    with reporting():
        from agent.configfile import demo_dir

        typer.echo((demo_dir() / "site-template.yaml").read_text(encoding="utf-8"), nl=False)
