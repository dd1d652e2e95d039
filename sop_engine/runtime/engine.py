"""The runtime's front door: one object holding the database, the SOP library, the keys and
the clock, with every operation on referrals as a method.

>>> runtime = Runtime(make_engine(url), library, keyring, clock)      # doctest: +SKIP
>>> view = runtime.create_referral(sop_key="example.corridor", ...)    # doctest: +SKIP
>>> runtime.fire(view.case_code, "record_consent", caseworker, {...})   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, OperationalError

from sop_engine.clock import Clock, SystemClock
from sop_engine.crypto import MasterKeyring
from sop_engine.directory.model import ServiceDirectory
from sop_engine.errors import ConcurrentChange
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime import (
    access_log,
    audit,
    clock_waivers,
    compliance,
    deadlines,
    disclosed,
    fire,
    incident,
    ledger,
    notices,
    outbox,
    referrals,
    reopen,
    tasks,
    transfer,
    views,
)
from sop_engine.runtime.access_log import AccessRecord
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.audit import ReferralSummary, TimelinePage
from sop_engine.runtime.compliance import ComplianceReport
from sop_engine.runtime.deadlines import EscalationOutcome, TimerClaim
from sop_engine.runtime.disclosed import DisclosedFields, DisclosedView
from sop_engine.runtime.fire import FireResult
from sop_engine.runtime.ledger import GrantRecord
from sop_engine.runtime.notices import Notice
from sop_engine.runtime.outbox import OutboxClaim
from sop_engine.runtime.recent import Recent
from sop_engine.runtime.referrals import ReferralView
from sop_engine.runtime.services import Services
from sop_engine.runtime.tasks import TaskView
from sop_engine.runtime.transfer import TransferView
from sop_engine.timeline.verifications import due_for_verification, record_verifications
from sop_engine.timeline.verify import TimelineCheck, verify_referral_timeline, verify_timelines

__all__ = ["Runtime"]

_I = tables.idempotency_keys

RETRIES = 3
"""Attempts of a fire without an expected version, when other changes keep winning."""


class Runtime:
    """Every operation on referrals; each method is one database transaction.

    ``compliance_max_age``: how old a deadline compliance report may be when answered (see
    :mod:`sop_engine.runtime.recent`); None or zero counts on every call.
    """

    def __init__(
        self,
        db: Engine,
        library: SopLibrary,
        keyring: MasterKeyring,
        clock: Clock | None = None,
        *,
        directory: ServiceDirectory | None = None,
        compliance_max_age: timedelta | None = None,
        timer_lease: timedelta = deadlines.DEFAULT_LEASE,
        refuse_past_review: bool = False,
    ) -> None:
        """``directory``: the service directory's files (coordinators' managed entries are read
        from ``db`` over it); a referral is disclosed only to an agency it lists.
        ``compliance_max_age``: how long a compliance report may be served from memory.
        ``timer_lease``: how long a sweep's claim on a timer lasts unless renewed.
        ``refuse_past_review``: refuse new referrals on SOP versions due for review
        (:mod:`sop_engine.runtime.sop_dates`), instead of warning."""
        self.timer_lease = timer_lease
        self.services = Services(
            db,
            library,
            keyring,
            clock or SystemClock(),
            directory or ServiceDirectory(),
            refuse_past_review,
        )
        self._compliance: Recent[tuple[Any, ...], ComplianceReport] | None = None
        if compliance_max_age:
            self._compliance = Recent(self._count_compliance, compliance_max_age.total_seconds())

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

    def read_as_agency(self, case_code: str, actor: Actor) -> ReferralView:
        """See :func:`sop_engine.runtime.views.read_as_agency`."""
        return views.read_as_agency(self.services, case_code, actor)

    def fire(
        self,
        case_code: str,
        event: str,
        actor: Actor,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        expected_version: int | None = None,
        hide_from_outsiders: bool = False,
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
                    hide_from_outsiders=hide_from_outsiders,
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
        with read_transaction(self.db) as conn:
            seen = conn.execute(
                select(_I.c.result).where(_I.c.actor_id == actor.id, _I.c.key == idempotency_key)
            ).first()
        return FireResult.from_json(seen.result, replayed=True) if seen is not None else None

    def record_incident_time(
        self,
        case_code: str,
        *,
        incident_at: datetime,
        reason: str,
        actor: Actor,
        expected_version: int | None = None,
    ) -> ReferralView:
        """Record or correct when the incident happened (:mod:`sop_engine.runtime.incident`);
        the referral as it is then."""
        incident.record_incident_time(
            self.services,
            case_code,
            incident_at=incident_at,
            reason=reason,
            actor=actor,
            expected_version=expected_version,
        )
        return self.read_referral(case_code, actor=actor)

    def reopen_case(
        self, case_code: str, *, reason: str, actor: Actor, expected_version: int | None = None
    ) -> ReferralView:
        """Reopen a closed case (:mod:`sop_engine.runtime.reopen`); the referral then."""
        reopen.reopen_case(
            self.services, case_code, reason=reason, actor=actor, expected_version=expected_version
        )
        return self.read_referral(case_code, actor=actor)

    def request_transfer(
        self,
        case_code: str,
        *,
        to_agency_id: str,
        actor: Actor,
        expected_version: int | None = None,
    ) -> TransferView:
        """Ask another agency to take over the case (:mod:`sop_engine.runtime.transfer`)."""
        return transfer.request_transfer(
            self.services,
            case_code,
            to_agency_id=to_agency_id,
            actor=actor,
            expected_version=expected_version,
        )

    def accept_transfer(
        self, case_code: str, *, actor: Actor, expected_version: int | None = None
    ) -> TransferView:
        """The receiving agency takes over the case (:mod:`sop_engine.runtime.transfer`)."""
        return transfer.accept_transfer(
            self.services, case_code, actor=actor, expected_version=expected_version
        )

    def decline_transfer(
        self, case_code: str, *, reason: str, actor: Actor, expected_version: int | None = None
    ) -> TransferView:
        """The receiving agency declines, with a reason (:mod:`sop_engine.runtime.transfer`)."""
        return transfer.decline_transfer(
            self.services, case_code, reason=reason, actor=actor, expected_version=expected_version
        )

    def cancel_transfer(
        self, case_code: str, *, actor: Actor, expected_version: int | None = None
    ) -> TransferView:
        """The requester withdraws a pending transfer (:mod:`sop_engine.runtime.transfer`)."""
        return transfer.cancel_transfer(
            self.services, case_code, actor=actor, expected_version=expected_version
        )

    def list_transfers(self, case_code: str, actor: Actor) -> list[TransferView]:
        return transfer.list_transfers(self.services, case_code, actor)

    def waive_clock(
        self,
        case_code: str,
        clock: str,
        *,
        reason: str,
        actor: Actor,
        expected_version: int | None = None,
    ) -> ReferralView:
        """Waive a case clock with a reason (:mod:`sop_engine.runtime.clock_waivers`); the
        referral then."""
        clock_waivers.waive_clock(
            self.services,
            case_code,
            clock,
            reason=reason,
            actor=actor,
            expected_version=expected_version,
        )
        return self.read_referral(case_code, actor=actor)

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

    def list_notices(self, actor: Actor, **options: Any) -> list[Notice]:
        """The actor's in-app notifications (see :mod:`sop_engine.runtime.notices`)."""
        return notices.list_notices(self.services, actor, **options)

    def mark_notice_read(self, actor: Actor, message_id: str) -> datetime:
        return notices.mark_read(self.services, actor, message_id)

    def access_log(self, **filters: Any) -> list[AccessRecord]:
        return access_log.list_access(self.services, **filters)

    def erase(self, case_code: str, actor: Actor) -> None:
        referrals.erase_referral(self.services, case_code, actor)

    def list_tasks(self, actor: Actor, **filters: Any) -> list[TaskView]:
        """The tasks of the actor's agency (:func:`sop_engine.runtime.tasks.list_tasks`)."""
        return tasks.list_tasks(self.services, actor, **filters)

    def read_task(self, task_id: str, actor: Actor, *, action: str = tasks.READ_ACTION) -> TaskView:
        """One task of the actor's agency, or NotFound; access-logged as ``action``."""
        return tasks.read_task(self.services, task_id, actor, action=action)

    def answer_handoff(
        self,
        task_id: str,
        action: str,
        actor: Actor,
        *,
        reason: str | None = None,
        outcome: str | None = None,
        idempotency_key: str | None = None,
        expected_version: int | None = None,
    ) -> FireResult:
        """Answer the handoff of a task of the actor's agency (``acknowledge``, ``accept``,
        ``decline`` with a reason, ``deliver`` with an outcome) by firing its event on the
        task's referral; a retry with the same idempotency key answers the first result, the
        task closed since."""
        task = self.read_task(task_id, actor, action=f"task.{action}")
        retry = self._replay(actor, idempotency_key) is not None
        event = tasks.handoff_event(task, action, retry=retry)
        given = {"reason": reason, "outcome": outcome}
        payload = {k: v for k, v in given.items() if v is not None} or None
        code, key = task.case_code, idempotency_key
        return self.fire(code, event, actor, payload, key, expected_version=expected_version)

    def read_disclosed(self, case_code: str, actor: Actor) -> DisclosedView:
        """The fields disclosed to the actor's agency under standing consent, access-logged
        (:mod:`sop_engine.runtime.disclosed`)."""
        return disclosed.read_disclosed(self.services, case_code, actor)

    def disclosed_fields(self, case_code: str, agency_id: str) -> DisclosedFields:
        """The names of the fields an agency may read now (no values, nothing logged)."""
        return disclosed.held_by(self.services, case_code, agency_id)

    def claim_due_timers(
        self,
        now: datetime | None = None,
        limit: int = 100,
        *,
        worker: str | None = None,
        lease: timedelta | None = None,
    ) -> list[TimerClaim]:
        return deadlines.claim_due_timers(
            self.services, now, limit, worker=worker, lease=lease or self.timer_lease
        )

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

    def sweep(
        self,
        limit: int = 100,
        *,
        worker: str | None = None,
        lease: timedelta | None = None,
    ) -> list[EscalationOutcome]:
        """Claim due timers and fire each: one batch of the escalation sweep, its claims
        (``lease``, by default the runtime's ``timer_lease``) renewed while it works
        (:func:`sop_engine.runtime.deadlines.sweep_batch`)."""
        return deadlines.sweep_batch(
            self.services,
            self.fire_escalation,
            limit,
            worker=worker,
            lease=lease or self.timer_lease,
        )

    def claim_outbox(
        self, limit: int = 50, *, worker: str, lease: timedelta | None = None
    ) -> list[OutboxClaim]:
        """Lease up to ``limit`` due messages for ``worker`` (``lease``, by default the
        runtime's ``timer_lease``; :meth:`renew_outbox_claims` extends it)."""
        lease = lease or self.timer_lease
        return outbox.claim_outbox(self.services, limit=limit, worker=worker, lease=lease)

    def renew_outbox_claims(
        self, claims: list[OutboxClaim], lease: timedelta | None = None
    ) -> list[OutboxClaim]:
        return outbox.renew_outbox_claims(self.services, claims, lease or self.timer_lease)

    def mark_sent(
        self,
        claim: OutboxClaim,
        *,
        channels: Iterable[str],
        users: int = 0,
        refused_users: Mapping[str, str] | None = None,
    ) -> bool:
        return outbox.mark_sent(
            self.services, claim, channels=channels, users=users, refused_users=refused_users
        )

    def mark_failed_attempt(
        self, claim: OutboxClaim, error: str, *, retryable: bool
    ) -> Literal["pending", "dead"]:
        return outbox.mark_failed_attempt(self.services, claim, error, retryable=retryable)

    def verify_timeline(
        self, case_code: str | None = None, *, record: bool = False
    ) -> list[TimelineCheck]:
        """Verify every timeline in full, or one referral's (:mod:`sop_engine.timeline.verify`);
        with ``record``, keep each result as the referral's last full verification."""
        with read_transaction(self.db) as conn:
            checks = verify_timelines(conn, case_code)
        if record:
            record_verifications(self.db, checks, self.clock.now())
        return checks

    def verify_due_timelines(self, limit: int = 100) -> list[TimelineCheck]:
        """Verify in full, and record, up to ``limit`` timelines due for it (never verified,
        changed since, or last verified a day ago or more:
        :func:`sop_engine.timeline.verifications.due_for_verification`)."""
        now = self.clock.now()
        with read_transaction(self.db) as conn:
            due = due_for_verification(conn, now, limit=limit)
            checks = [verify_referral_timeline(conn, referral_id) for referral_id in due]
        record_verifications(self.db, checks, now)
        return checks

    def list_referrals(self, **filters: Any) -> list[ReferralSummary]:
        """Referrals for auditors, without facts (:mod:`sop_engine.runtime.audit`)."""
        return audit.list_referrals(self.services, **filters)

    def read_timeline(
        self,
        case_code: str,
        *,
        after_seq: int | None = None,
        limit: int = 50,
        verify: Literal["page", "full"] = "page",
    ) -> TimelinePage:
        """A page of a referral's timeline with its chain's verification
        (:func:`sop_engine.runtime.audit.read_timeline`)."""
        return audit.read_timeline(
            self.services, case_code, after_seq=after_seq, limit=limit, verify=verify
        )

    def compliance(
        self,
        group_by: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        sop: str | None = None,
    ) -> ComplianceReport:
        """Deadline compliance (:mod:`sop_engine.runtime.compliance`), counted now or, with a
        ``compliance_max_age``, up to that long ago (its ``as_of`` says when)."""
        if group_by not in compliance.GROUPINGS:
            return compliance.compliance(self.services, group_by)  # refused
        key = (group_by, since, until, sop)
        if self._compliance is None:
            return self._count_compliance(key)
        return self._compliance.get(key)

    def _count_compliance(self, key: tuple[Any, ...]) -> ComplianceReport:
        group_by, since, until, sop = key
        return compliance.compliance(self.services, group_by, since=since, until=until, sop=sop)


def _lock_not_available(exc: OperationalError) -> bool:
    """PostgreSQL's answer to ``FOR UPDATE NOWAIT`` on a row someone else holds."""
    return getattr(exc.orig, "sqlstate", None) == "55P03"
