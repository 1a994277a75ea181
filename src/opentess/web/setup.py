"""What a server start prints about the console: its URL and, while nobody can sign in yet,
a link that sets the first user's password (once, within opentess.web.signing.SETUP_LINK_HOURS)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.settings import Settings
from opentess.web.accounts import Accounts
from opentess.web.signing import SETUP_LINK_HOURS, Signer


async def banner_lines(engine: AsyncEngine, settings: Settings) -> list[str]:
    if not settings.console_enabled:
        return []
    base = f"{settings.public_base_url}/ui"
    lines = [f"  Web console: {base}"]
    accounts = Accounts(engine)
    account = await accounts.first_without_password()
    if account is not None:
        token = Signer(await accounts.signing_key()).setup_token(account.user_id)
        lines.append(
            f"  Set the console password of {account.email} (this link works once, for {SETUP_LINK_HOURS} h; "
            f"later: opentess users set-password {account.email}):\n    {base}/setup?token={token}"
        )
    return lines
