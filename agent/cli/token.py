"""``failover-agent token create``: a new API token, printed once, and the config line that
admits it (only its hash is ever stored)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from agent.cli.app import app, out
from agent.configapi import SCOPES, Scope

token_app = typer.Typer(help="API tokens: create one (only its hash goes into the config).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create", help="Print a new random token once, and the api.tokens entry for the config "
                   "(its SHA-256 only: the token itself is kept nowhere). Scopes: read (site admins), operate "
                   "(orchestrator, recovery-plan scripts; includes read), admin (includes both).")
def create(name: Annotated[str, typer.Option(help="Who uses it, e.g. orchestrator (shown in the audit trail).")],
           scope: Annotated[list[str], typer.Option(help="read, operate or admin; repeat for several.")],
           as_json: Annotated[bool, typer.Option("--json", help="One JSON object: token, name, sha256, scopes.")]
           = False) -> None:
    from agent.api.auth import new_token, token_hash
    from agent.configapi import ApiToken

    unknown = [s for s in scope if s not in SCOPES]
    if unknown:
        raise typer.BadParameter(f"unknown scope {', '.join(unknown)}; use {', '.join(SCOPES)}", param_hint="--scope")
    scopes: list[Scope] = [s for s in SCOPES if s in scope]
    token = new_token()
    entry = ApiToken(name=name, sha256=token_hash(token), scopes=scopes)  # validates the name
    if as_json:
        out.print(json.dumps({"token": token, **entry.model_dump()}), highlight=False, markup=False, soft_wrap=True)
        return
    literal = {"highlight": False, "markup": False, "soft_wrap": True}
    out.print(f"token (shown once; give it to {name}, keep it nowhere else):\n  {token}\n", **literal)
    out.print("add to the config, under api.tokens:", **literal)
    out.print(f"  - {{name: {name}, sha256: {entry.sha256}, scopes: [{', '.join(scopes)}]}}", **literal)
