"""Console sign-in from the command line (`opentess users set-password`)."""

from __future__ import annotations

import sys

import click

from opentess.cli.common import domain_errors, run_with_store, settings_from
from opentess.errors import InvalidInput
from opentess.settings import Settings
from opentess.store import Store
from opentess.web.accounts import Accounts
from opentess.web.passwords import check_policy, hash_password


@click.command("set-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin (scripts).")
@click.pass_context
@domain_errors
def set_password(ctx: click.Context, email: str, password_stdin: bool) -> None:
    """Set the password a user signs in to the web console with (/ui); ends their console sessions."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    try:
        check_policy(password)
    except InvalidInput as exc:
        raise click.ClickException(exc.errors["password"][0]) from exc

    async def go(store: Store, _: Settings) -> int:
        user = await store.users.by_email(email)
        accounts = Accounts(store.engine)
        ended = await accounts.end_sessions(user.id)
        await accounts.set_password(user.id, hash_password(password))
        return ended

    ended = run_with_store(go, settings_from(ctx))
    sessions = f"; {ended} console session(s) ended" if ended else ""
    click.echo(f"password set for {email}{sessions}")


# commands added to the `users` group
USER_COMMANDS: list[click.Command] = [set_password]
