"""The runtime's front door: one object holding the database, the SOP library, the keys and
the clock, with every operation on referrals as a method.

>>> runtime = Runtime(make_engine(url), library, keyring, clock)      # doctest: +SKIP
>>> view = runtime.create_referral(sop_key="example.corridor", ...)    # doctest: +SKIP
>>> runtime.fire(view.case_code, "record_consent", caseworker, {...})   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, OperationalError

from sop_engine.clock import Clock, SystemClock
from sop_engine.crypto import MasterKeyring
from sop_engine.errors import ConcurrentChange
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence.models import IdempotencyRecord, table
from sop_engine.runtime import access_log, deadlines, fire, ledger, outbox, referrals
from sop_engine.runtime.access_log import AccessRecord
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.deadlines import EscalationOutcome, TimerClaim
from sop_engine.runtime.fire import FireResult
from sop_engine.runtime.ledger import GrantRecord
from sop_engine.runtime.outbox import OutboxClaim
from sop_engine.runtime.referrals import ReferralView
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import TimelineCheck, verify_timelines

__all__ = ["Runtime"]

_I = table(IdempotencyRecord)

RETRIES = 3
"""Attempts of a fire without an expected version, when other changes keep winning."""


class Runtime:
    """Every operation on referrals; each method is one database transaction."""

    def __init__(
        self, db: Engine, library: SopLibrary, keyring: MasterKeyring, clock: Clock | None = None
    ) -> None:
        self.services = Services(db, library, keyring, clock or SystemClock())

    @property
    def db(self) -> Engine:
        return self.services.db

    @property
    def clock(self) -> Clock:
        return self.services.clock

    @property
    def library(self) -> SopLibrary:
        return self.services.library

    def create_referral(self, **kwargs: Any) -> ReferralView:
        return referrals.create_referral(self.services, **kwargs)

    def read_referral(
        self, case_code: str, *, actor: Actor | None = None, reveal_identifying: bool = False
    ) -> ReferralView:
        return referrals.read_referral(
            self.services, case_code, actor=actor, reveal_identifying=reveal_identifying
        )

    def fire(
        self,
        case_code: str,
        event: str,
        actor: Actor,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        expected_version: int | None = None,
    ) -> FireResult:
        """See :func:`sop_engine.runtime.fire.fire`.

        Without ``expected_version`` the caller asks for the event on whatever the referral is
        now, so a change that another transaction committed meanwhile (an escalation, say) is
        met by reading the referral again and re-checking everything, up to
        :data:`RETRIES` times. With ``expected_version`` a conflict is the caller's to resolve.
        A race lost on an idempotency key returns the winner's result.
        """
        attempts = 1 if expected_version is not None else RETRIES
        for attempt in range(1, attempts + 1):
            try:
                return fire.fire(
                    self.services,
                    case_code,
                    event,
                    actor,
                    payload,
                    idempotency_key,
                    expected_version=expected_version,
                )
            except (ConcurrentChange, IntegrityError) as exc:
                replay = self._replay(actor, idempotency_key)
                if replay is not None:
                    return replay
                if attempt == attempts:
                    if isinstance(exc, ConcurrentChange):
                        raise
                    raise ConcurrentChange(
                        f"referral {case_code} was changed by someone else; read it again"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _replay(self, actor: Actor, idempotency_key: str | None) -> FireResult | None:
        if idempotency_key is None:
            return None
        with self.db.connect() as conn:
            seen = conn.execute(
                select(_I.c.result).where(_I.c.actor_id == actor.id, _I.c.key == idempotency_key)
            ).first()
        return FireResult.from_json(seen.result, replayed=True) if seen is not None else None

    def grant_consent(self, case_code: str, **kwargs: Any) -> GrantRecord:
        return ledger.grant_consent(self.services, case_code, **kwargs)

    def withdraw_consent(self, case_code: str, grant_id: str, actor: Actor) -> list[str]:
        return ledger.withdraw_consent(self.services, case_code, grant_id, actor)

    def acknowledge_withdrawal(self, case_code: str, actor: Actor) -> int:
        return ledger.acknowledge_withdrawal(self.services, case_code, actor)

    def list_grants(self, case_code: str) -> list[GrantRecord]:
        return ledger.list_grants(self.services, case_code)

    def log_access(
        self,
        actor: Actor,
        action: str,
        *,
        case_code: str | None = None,
        fields: Sequence[str] = (),
        outcome: str = "granted",
    ) -> None:
        """Append to the access log (see :mod:`sop_engine.runtime.access_log`)."""
        access_log.log_access(
            self.services, actor, action, case_code=case_code, fields=fields, outcome=outcome
        )

    def access_log(self, **filters: Any) -> list[AccessRecord]:
        return access_log.list_access(self.services, **filters)

    def erase(self, case_code: str, actor: Actor) -> None:
        referrals.erase_referral(self.services, case_code, actor)

    def claim_due_timers(
        self,
        now: datetime | None = None,
        limit: int = 100,
        *,
        worker: str | None = None,
        lease: timedelta = deadlines.DEFAULT_LEASE,
    ) -> list[TimerClaim]:
        return deadlines.claim_due_timers(self.services, now, limit, worker=worker, lease=lease)

    def fire_escalation(self, claim: TimerClaim) -> EscalationOutcome:
        try:
            return deadlines.fire_escalation(self.services, claim)
        except (ConcurrentChange, IntegrityError, OperationalError) as exc:
            if isinstance(exc, OperationalError) and not _lock_not_available(exc):
                raise
            # The referral changed, or is being changed: the claim's lease runs out and a
            # later sweep tries again, and does nothing if the state was left meanwhile.
            later = "the referral changed; retried later"
            return EscalationOutcome(claim.timer_id, "conflict", note=later)

    def sweep(self, limit: int = 100, *, worker: str | None = None) -> list[EscalationOutcome]:
        """Claim due timers and fire each: one batch of the escalation sweep."""
        return [self.fire_escalation(c) for c in self.claim_due_timers(limit=limit, worker=worker)]

    def claim_outbox(
        self, limit: int = 50, *, worker: str, lease: timedelta = timedelta(minutes=5)
    ) -> list[OutboxClaim]:
        return outbox.claim_outbox(self.services, limit=limit, worker=worker, lease=lease)

    def mark_sent(self, claim: OutboxClaim) -> bool:
        return outbox.mark_sent(self.services, claim)

    def mark_failed_attempt(self, claim: OutboxClaim, error: str) -> str:
        return outbox.mark_failed_attempt(self.services, claim, error)

    def verify_timeline(self, case_code: str | None = None) -> list[TimelineCheck]:
        with self.db.connect() as conn:
            return verify_timelines(conn, case_code)


def _lock_not_available(exc: OperationalError) -> bool:
    """PostgreSQL's answer to ``FOR UPDATE NOWAIT`` on a row someone else holds."""
    return getattr(exc.orig, "sqlstate", None) == "55P03"
