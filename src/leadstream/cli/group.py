"""How the commands read: the typer.Typer every group is made of (a flag shows no ``<bool>``,
a value its metavar, never a Python type), and the server's defaults, read from ``Settings``."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

from leadstream.settings import Settings

DEFAULTS = Settings.model_construct()  # the defaults alone: no environment read, nothing checked


class Stream(enum.StrEnum):
    """A choice typer checks and lists in help and in its error."""

    activity = "activity"
    audit = "audit"
    notification = "notification"


class Format(enum.StrEnum):
    legacy = "legacy"
    cloudevents = "cloudevents"
    adobe_io = "adobe_io"


class Scope(enum.StrEnum):
    ingest = "ingest"
    subscriptions = "subscriptions"
    read = "read"


def with_default(help_text: str, value: object) -> str:
    """``help_text`` and a default the option itself does not hold (it is None, so that ``Settings``
    applies its own), shown as typer shows one."""
    return f"{help_text} \\[default: {value}]"


class _NamedArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # its metavar says what it is


class _FlagsShowNoType:
    """Flags (--help among them) show no type; an argument with a metavar shows only that."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
            elif type(param) is TyperArgument and param.metavar is not None:
                param.__class__ = _NamedArgument
        return params


class _Command(_FlagsShowNoType, TyperCommand):
    pass


class _Group(_FlagsShowNoType, TyperGroup):
    pass


class CommandGroup(typer.Typer):
    """``typer.Typer`` with leadstream's settings; its commands use the help above."""

    def __init__(self, help: str, *, runs_alone: bool = False) -> None:
        """``runs_alone``: the group is a command too (its callback runs when no subcommand is given)."""
        # rich markup, said explicitly: help texts escape "\[default: …]" the same on every typer version
        super().__init__(
            cls=_Group, help=help, no_args_is_help=not runs_alone, invoke_without_command=runs_alone,
            add_completion=False, rich_markup_mode="rich",
        )  # fmt: skip

    def command(
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(name, cls=cls or _Command, **kwargs)
