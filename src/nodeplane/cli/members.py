"""`nodeplane members`: who belongs to the organization, with which role, and ending access."""

from enum import StrEnum
from typing import Annotated

import typer
from rich.markup import escape

from nodeplane.cli.client import NodeplaneClient
from nodeplane.cli.common import (
    OutputFormat,
    OutputOption,
    TokenOption,
    UrlOption,
    YesOption,
    confirm_or_stop,
    connect,
    err,
    out,
    print_json,
    print_list,
)
from nodeplane.cli.lookup import find_member
from nodeplane.cli.models import Member, MemberAccess
from nodeplane.cli.render import members_table, when

members_app = typer.Typer(
    help="Members of your organization: invite, change roles, end access, remove.",
    no_args_is_help=True,
)


class MemberRole(StrEnum):
    """A member's role: owners and admins manage the organization, members read it."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


MemberArg = Annotated[
    str, typer.Argument(help="The member's email or member id.", show_default=False)
]


@members_app.command("list")
def list_members(
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List the organization's members with their roles."""
    with connect(url, token) as client:
        members = client.members()
    print_list(members, output, members_table, "no members")


@members_app.command("invite")
def invite(
    email: Annotated[str, typer.Argument(help="Email address to invite.", show_default=False)],
    role: Annotated[MemberRole, typer.Option(help="The role they join with.")] = (
        MemberRole.MEMBER
    ),
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Invite someone by email; the invite token is printed this once and cannot be shown again."""
    with connect(url, token) as client:
        created = client.invite_member(email, role.value)
    if output is OutputFormat.JSON:
        print_json(created.to_json())
        return
    out.print(
        f"invited [bold]{escape(created.email)}[/bold] as {created.role} "
        f"(valid until {when(created.expires_at)} UTC)"
    )
    err.print(
        "The invite token is shown only now; hand it to them to join with the API's "
        "acceptInvite(token, password):"
    )
    out.print(created.token, markup=False, highlight=False, soft_wrap=True)


@members_app.command("role")
def change_role(
    member: MemberArg,
    role: Annotated[MemberRole, typer.Argument(help="The new role.", show_default=False)],
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Give a member another role; only owners make owners or change an owner."""
    with connect(url, token) as client:
        before = find_member(client, member)
        after = client.change_member_role(before.id, role.value)
    if output is OutputFormat.JSON:
        print_json(after.to_json())
    elif after.role == before.role:
        out.print(f"{escape(after.email)} is already {after.role}")
    else:
        out.print(f"{escape(after.email)} is now {after.role} (was {before.role})")


@members_app.command("remove")
def remove(
    member: MemberArg,
    yes: YesOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Remove a member: their sessions here end and their personal API keys are revoked.

    Executor keys they created keep working: they belong to executors, not to the person.
    """
    with connect(url, token) as client:
        found = find_member(client, member)
        if not yes:
            err.print(
                f"Remove [bold]{escape(found.email)}[/bold] ({found.role}) from the "
                "organization? Their sessions here end and their personal API keys are "
                "revoked; executor keys they created keep working."
                + _if_yourself(client, found, "you leave the organization")
            )
            confirm_or_stop("Remove?", declined="not removed")
        removed = client.remove_member(found.id)
    _show_access(removed, output, "removed")


@members_app.command("revoke-sessions")
def revoke_sessions(
    member: MemberArg,
    yes: YesOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Sign a member out of the organization everywhere and revoke their personal API keys.

    They stay a member and can sign in again; scripts using their keys need new ones.
    """
    with connect(url, token) as client:
        found = find_member(client, member)
        # Revoked personal keys do not come back: a script using one breaks for good, so ask.
        if not yes:
            err.print(
                f"End every session of [bold]{escape(found.email)}[/bold] in this organization "
                "and revoke their personal API keys? They can sign in again; their keys are "
                "gone for good." + _if_yourself(client, found, "you are signed out everywhere")
            )
            confirm_or_stop("Revoke?", declined="nothing revoked")
        revoked = client.revoke_sessions(found.id)
    _show_access(revoked, output, "signed out")


def _if_yourself(client: NodeplaneClient, member: Member, consequence: str) -> str:
    me = client.me()
    if me is None or me.email != member.email:
        return ""
    return f" This is you: {consequence}, this command's session or key included."


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _show_access(change: MemberAccess, output: OutputFormat, done: str) -> None:
    if output is OutputFormat.JSON:
        print_json(change.to_json())
        return
    out.print(
        f"{done} {escape(change.member.email)} ({change.member.role}): "
        f"{_count(change.sessions_ended, 'session')} ended, "
        f"{_count(change.api_keys_revoked, 'personal API key')} revoked"
    )
