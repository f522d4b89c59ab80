"""The PowerShell gate itself: it must find what it claims to find (a gate that cannot fail
proves nothing), and the grammar's known false positives must be handled, not hidden."""

from __future__ import annotations

import pytest

from tests import pscheck


def _problems(source: str) -> list[str]:
    data = source.encode()
    findings = pscheck.syntax_errors("t.ps1", data)
    for call in pscheck.commands(data):
        findings.extend(pscheck.check_call("t.ps1", call, pscheck.defined_functions(data)))
    return [f.problem for f in findings]


@pytest.mark.parametrize("construct", [
    "Set-VMNetworkAdapterFailoverConfiguration -VMName a -IPv4Address 10.0.0.5 -IPv4SubnetMask 255.255.255.0\n",
    "Get-Process | Select-Object Name, Id\n",
    "if ($size -gt 1MB) { $big = $true }\n",
])
def test_known_false_positives_of_the_grammar_are_neutralised(construct: str) -> None:
    raw = pscheck._parser().parse(construct.encode())
    assert raw.root_node.has_error, "tree-sitter-powershell fixed this: drop the neutralisation"
    assert _problems(construct) == []


def test_neutralising_keeps_every_offset() -> None:
    source = b"Set-X -IPv4Address 1\nSelect-Object Name, Id\n$a = 10MB\n"
    assert len(pscheck.neutralise(source)) == len(source)


def test_digit_parameter_is_bound_by_its_real_name() -> None:
    assert _problems("Set-VMNetworkAdapterFailoverConfiguration -VMName a -IPv9Address 1\n") == [
        "unknown parameter -IPv9Address"]


@pytest.mark.parametrize(("source", "expected"), [
    ("$x = $a ?? 1\n", "does not parse"),
    ("$x = $a ? 1 : 2\n", "does not parse"),
    ("Get-VM -Name a\n", "module-qualify"),
    ("Hyper-V\\Get-VM -Nam a -Bogus 1\n", "unknown parameter -Bogus"),
    ("Get-DnsServerResourceRecord -ZoneName z -RRType A -Name a -Name b\n", "given twice"),
    ("Start-VMFailover -VMName a -AsTest -Prepare\n", "fit no single parameter set"),
    ("New-Item -Path a -ProgressAction SilentlyContinue\n", "unknown parameter -ProgressAction"),
    ("Get-FrobnicatedThing -Name a\n", "unknown cmdlet"),
    ("Add-DnsServerResourceRecordA -ZoneName z -IPv4Address 10.0.0.1\n", "missing mandatory"),
    ("Get-VMNetworkAdapterFailoverConfiguration a b c d e\n", "positional"),
    ("Get-DnsServerZone -ZoneName\n", "has no argument"),
    ("Hyper-V\\Get-SCVirtualMachine -Name a\n", "does not hold it"),
    ("Get-DnsServerResourceRecord -Zone z -Name a\n", "ambiguous parameter -Zone"),
])
def test_each_kind_of_mistake_is_found(source: str, expected: str) -> None:
    problems = _problems(source)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("source", [
    "Hyper-V\\Get-VM -Name a\n",
    "Get-SCVirtualMachine -Name:$n -VMMServer $s\n",
    "$p = @{ Name = 'a' }\nAdd-DnsServerResourceRecordA @p\n",
    "$names | Hyper-V\\Get-VM\n",
    "Remove-DnsServerResourceRecord -ZoneName z -RRType A -Name n -Force -Confirm:$false\n",
    "Hyper-V\\Get-VM a\n",
    "function Get-Local { 1 }\nGet-Local\n",
    "ConvertTo-Json -InputObject $a -Depth 10 -Compress\n",
    "Get-DnsServerResourceRecord -ZoneN z -Name a\n",
])
def test_correct_calls_pass(source: str) -> None:
    assert _problems(source) == []


def test_script_parameters_are_read_with_their_mandatory_flag() -> None:
    source = b"""[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string[]] $VmName,
    [Parameter(Mandatory)][string] $RequestJson,
    [Parameter()][switch] $WhatIfOnly,
    [int] $Depth = 3
)
function Inner { param([string] $NotAScriptParameter) }
"""
    assert pscheck.script_parameters(source) == [
        pscheck.ScriptParameter("VmName", True, "string[]"),
        pscheck.ScriptParameter("RequestJson", True, "string"),
        pscheck.ScriptParameter("WhatIfOnly", False, "switch"),
        pscheck.ScriptParameter("Depth", False, "int"),
    ]
