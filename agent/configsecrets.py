""":class:`SecretRef`, the only way a secret appears in the config.

Kept apart from :mod:`agent.config` so that the modules of config sections
(:mod:`agent.confignotify`) can use it without importing the whole config, which imports them.
Everyone else imports it from :mod:`agent.config`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

from agent.errors import RefusedError


class SecretUnavailable(RefusedError):
    code = "secret_unavailable"


class SecretRef:
    """A reference to a secret: ``env:NAME`` or ``file:PATH``. Prints as the reference only.

    A plain value in the config (``password: hunter2``) is refused at load time: secrets do not
    belong in a file that is copied around, diffed and pasted into tickets.
    """

    __slots__ = ("ref",)

    def __init__(self, ref: str) -> None:
        scheme, sep, rest = ref.partition(":")
        if "\0" in rest:
            raise ValueError("a secret reference cannot contain a NUL byte")
        if not sep or scheme not in ("env", "file") or not rest:
            raise ValueError(
                "secrets must be references, 'env:VARIABLE' or 'file:/path/to/secret'; "
                "a plain-text secret is not accepted"
            )
        self.ref = ref

    @property
    def scheme(self) -> str:
        return self.ref.partition(":")[0]

    def reveal(self) -> str:
        """The secret's value. Call only where it is handed to the library that needs it."""
        scheme, _, rest = self.ref.partition(":")
        if scheme == "env":
            value = os.environ.get(rest)
            if value is None:
                raise SecretUnavailable(f"environment variable {rest} is not set", secret=self.ref)
            return value
        try:
            return Path(rest).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretUnavailable(f"cannot read secret file {rest}: {exc.strerror}", secret=self.ref) from exc

    def __repr__(self) -> str:
        return f"SecretRef({self.ref!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRef) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def build(value: object) -> SecretRef:
            if isinstance(value, SecretRef):
                return value
            if not isinstance(value, str):
                raise ValueError("a secret reference is a string: 'env:NAME' or 'file:PATH'")
            return cls(value)

        return core_schema.no_info_plain_validator_function(
            build, serialization=core_schema.plain_serializer_function_ser_schema(lambda v: v.ref)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        return {"type": "string", "pattern": r"^(env|file):.+$", "description": "env:NAME or file:PATH"}
