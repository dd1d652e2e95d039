"""Failed authentication, limited per client and written to the access log.

A request that presents a bearer token the API refuses (unknown, expired, a disabled user's,
a JWT that does not verify) counts as one failure of its client. Once a client has made
``limit`` failures in the current window, each further refused token is answered **429**
with ``Retry-After`` (the seconds until its window ends) instead of 401, and costs a read,
no write: neither the count nor the log grows while the limit holds.

A token that is good is served whatever its client's failures: the limit is on failures.
Blocking good tokens too would buy nothing against guessing (a token is 32 random bytes: no
number of guesses finds one), and would lock out every colleague behind the same address (a
field office's NAT, a proxy) because one device keeps sending a stale token. It also keeps
the cost of the limit off the requests that succeed: none at all.

The count lives in the database (``auth_failures``: one row per client, a fixed window),
so it is shared by every API process on the same database and survives a restart: a
client spreading its attempts over several processes behind a load balancer meets the same
limit. A client therefore makes at most ``limit`` failed attempts per window (plus those in
flight at once when it reaches it), and at most twice that in any span of one window's
length (the end of one window and the start of the next).

The client is the address the server sees: behind a reverse proxy, the forwarded address,
which uvicorn takes from ``X-Forwarded-For`` only when the proxy is trusted
(``FORWARDED_ALLOW_IPS``, by default the loopback addresses). IPv6 clients count per /64
network, since one host commonly holds a whole /64. Requests without a token are not
counted (they guess nothing), and a valid token never resets a client's count.

Each failure is written to the access log in the same transaction as its count (action
``auth.<reason>``, outcome ``refused``, the client's address; the user id when the token was
a known user's, expired or disabled), never the token nor any part of it; the first refused
request of a blocked client is written as ``auth.limited``, once per window.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from api.users import Principal
from sop_engine.clock import Clock
from sop_engine.persistence import tables
from sop_engine.persistence.tables import UtcDateTime
from sop_engine.runtime.access_log import record_access
from sop_engine.runtime.actors import Actor

__all__ = ["UNAUTHENTICATED", "AuthFailures", "Blocked", "FailedAuthLimit", "client_key"]

_F = tables.auth_failures
_BY_CLIENT = select(_F.c.failures, _F.c.window_started_at).where(
    _F.c.client == bindparam("p_client")
)

UNAUTHENTICATED = Actor("unauthenticated", "none")
"""Who the access log names for a failure whose token was nobody's."""


@dataclass(frozen=True, slots=True)
class FailedAuthLimit:
    """``limit`` failed authentications per client and ``window``."""

    limit: int = 20
    window: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("the limit allows at least one failed attempt")
        if self.window <= timedelta(0):
            raise ValueError("the window must be longer than zero")


def client_key(host: str | None) -> str:
    """What a client is counted by: its IPv4 address, its IPv6 /64 network, or (for a host
    that is not an address, such as a Unix socket's) the host as given, at most 64
    characters."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Blocked:
    """A client over its limit: how long until it may try again, and the row as read (so
    that the first refusal is logged once, whichever process sees it first)."""

    client: str
    seconds: int
    failures: int
    window_started_at: datetime


class AuthFailures:
    """The failed authentications of the clients of one database."""

    def __init__(self, db: Engine, clock: Clock, limit: FailedAuthLimit | None = None) -> None:
        self.db = db
        self.clock = clock
        self.limit = limit or FailedAuthLimit()

    def blocked(self, conn: Connection, client: str) -> Blocked | None:
        """Whether ``client`` is over its limit (read on ``conn``); None while it is not."""
        row = conn.execute(_BY_CLIENT, {"p_client": client}).first()
        if row is None or row.failures < self.limit.limit:
            return None
        now = self.clock.now()
        ends = row.window_started_at + self.limit.window
        if ends <= now:
            return None
        seconds = max(1, math.ceil((ends - now).total_seconds()))
        return Blocked(client, seconds, row.failures, row.window_started_at)

    def refuse(self, blocked: Blocked) -> int:
        """The seconds to wait; the first refusal of a window is counted and logged."""
        limit = self.limit.limit
        if blocked.failures == limit:
            with self.db.begin() as conn:
                first = conn.execute(
                    update(_F)
                    .where(
                        _F.c.client == blocked.client,
                        _F.c.failures == limit,
                        _F.c.window_started_at == blocked.window_started_at,
                    )
                    .values(failures=limit + 1)
                ).rowcount
                if first:
                    self._log(conn, self.clock.now(), blocked.client, "limited", None)
        return blocked.seconds

    def record(self, client: str, reason: str, user: Principal | None = None) -> None:
        """Count one failure of ``client`` and write it to the access log, in one
        transaction; forget clients whose window ended (their counts no longer matter)."""
        now = self.clock.now()
        with self.db.begin() as conn:
            self._count(conn, client, now)
            self._log(conn, now, client, reason, user)
            # Rows another failure holds are skipped, never waited for: two transactions each
            # holding its own client's row and waiting for the other's would deadlock.
            # (SQLite has no row locks and runs one writer at a time: the clause is dropped.)
            stale = (
                select(_F.c.client)
                .where(_F.c.window_started_at <= now - self.limit.window)
                .with_for_update(skip_locked=True)
            )
            conn.execute(delete(_F).where(_F.c.client.in_(stale)))

    def _count(self, conn: Connection, client: str, now: datetime) -> None:
        stamp = bindparam("p_now", now, type_=UtcDateTime())
        ended = _F.c.window_started_at <= bindparam(
            "p_cutoff", now - self.limit.window, type_=UtcDateTime()
        )
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(_F)
        conn.execute(
            insert.values(client=client, window_started_at=now, failures=1).on_conflict_do_update(
                index_elements=[_F.c.client],
                set_={
                    "failures": case((ended, 1), else_=_F.c.failures + 1),
                    "window_started_at": case((ended, stamp), else_=_F.c.window_started_at),
                },
            )
        )

    @staticmethod
    def _log(
        conn: Connection, now: datetime, client: str, reason: str, user: Principal | None
    ) -> None:
        actor = Actor(user.id, user.role, user.agency_id) if user is not None else UNAUTHENTICATED
        record_access(conn, now, actor, f"auth.{reason}", outcome="refused", client=client)
