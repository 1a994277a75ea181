"""Console passwords: Argon2id through argon2-cffi, with its default parameters (64 MiB, 3
passes). A hash costs ~140 ms of CPU and 64 MiB, so hashing runs in worker threads (the
bindings release the GIL) and at most ``CONCURRENT_HASHES`` at once per process: a burst of
sign-ins waits instead of taking the memory of the server."""

from __future__ import annotations

import asyncio
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from opentess.errors import InvalidInput

MIN_LENGTH = 8
MAX_LENGTH = 1024  # hashing cost grows with the input: a megabyte "password" is refused
CONCURRENT_HASHES = 2

_hasher = PasswordHasher()


def check_policy(password: str) -> None:
    """InvalidInput (field ``password``) for a password the console does not accept."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput({"password": [f"The password must be at least {MIN_LENGTH} characters long."]})
    if len(password) > MAX_LENGTH:
        raise InvalidInput({"password": [f"The password must be at most {MAX_LENGTH} characters long."]})


def hash_password(password: str) -> str:
    """The stored form of a new password (blocking: call ``Hashing.hash`` from async code)."""
    check_policy(password)
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (blocking). A user without a password is checked
    against a dummy hash all the same, so that the answer takes as long as for a real one."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with weaker parameters than today's."""
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


@cache
def _dummy_hash() -> str:
    return _hasher.hash("not the password of anybody")


class Hashing:
    """Hashes and verifies off the event loop, a bounded number at a time."""

    def __init__(self, concurrency: int = CONCURRENT_HASHES) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    async def hash(self, password: str) -> str:
        check_policy(password)
        async with self._slots:
            return await asyncio.to_thread(_hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(verify_password, stored, password)
