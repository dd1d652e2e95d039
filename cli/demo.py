"""``sop-engine demo``: one complete, synthetic cross-border referral on a throwaway database.

Intake to closure on the example Thailand to Lao PDR corridor SOP, with a missed
acknowledgement deadline and its escalation (time is moved by the clock, not slept), then the
timeline as a table and the result of verifying its hash chain. Every name and agency in it
is synthetic.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.directory.model import Agency, ServiceDirectory
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import upgrade
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime

__all__ = ["run_demo"]

SOP = "example.corridor"
START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)  # 08:30 in Bangkok and Vientiane

CASEWORKER = Actor("demo-caseworker", "caseworker", "TH-NGO-DEMO", ("ngo",))
SUPERVISOR = Actor("demo-supervisor", "supervisor", "TH-NGO-DEMO", ("ngo",))
FOCAL_POINT = Actor(
    "demo-focal-point", "agency_focal_point", "LA-SW-DEMO", ("government_social_welfare",)
)


def _demo_agency(agency_id: str, country: str, kind: str) -> Agency:
    return Agency(
        id=agency_id,
        name=f"Synthetic demo agency {agency_id}",
        country=country,
        province="synthetic",
        agency_types=(kind,),
        services=("case_management",),
        languages=("en",),
        corridors=("TH-LA",),
        contact_channel="phone",
        accepts_new_cases=True,
        source="invented for the demo",
        last_verified=START.date(),
        synthetic=True,
    )


DIRECTORY = ServiceDirectory(
    (
        _demo_agency("TH-NGO-DEMO", "TH", "ngo"),
        _demo_agency("LA-SW-DEMO", "LA", "government_social_welfare"),
    )
)
"""The demo's own directory: two invented agencies, so that no real body is named."""


def run_demo(sop_dir: Path, templates: frozenset[str], echo: Callable[[str], None]) -> bool:
    """Run the scenario; print as it goes; return whether every timeline verified."""
    with tempfile.TemporaryDirectory(prefix="sop-engine-demo-") as folder:
        engine = make_engine(f"sqlite:///{folder}/demo.sqlite3")
        try:
            upgrade(engine)
            library = SopLibrary.load([sop_dir], templates)
            clock = ManualClock(START)
            keys = MasterKeyring(MasterKey.generate("demo"))
            runtime = Runtime(engine, library, keys, clock, directory=DIRECTORY)
            return _scenario(runtime, clock, echo)
        finally:
            engine.dispose()


def _scenario(rt: Runtime, clock: ManualClock, echo: Callable[[str], None]) -> bool:
    def step(text: str) -> None:
        echo(f"  [{clock.now():%Y-%m-%d %H:%M} UTC] {text}")

    echo(f"Synthetic referral on {SOP} (a temporary SQLite database; all data invented)\n")
    view = rt.create_referral(
        sop_key=SOP,
        sop_version=None,
        actor=CASEWORKER,
        origin_country="TH",
        destination_country="LA",
        incident_at=clock.now() - timedelta(hours=30),
        disclosed_at=clock.now() - timedelta(hours=2),
        facts={"survivor_name": "Synthetic Survivor 001", "survivor_age": 24},
    )
    code = view.case_code
    sealed = ", ".join(view.sealed_fields)
    step(f"created {code} in {view.state!r}; identifying facts sealed: {sealed}")
    rt.grant_consent(code, scope="case_management", actor=CASEWORKER, given_by="survivor")
    step("consent recorded: case management")
    r = rt.fire(
        code, "record_consent", CASEWORKER, {"facts": {"safe_contact_method": "text_message"}}
    )
    step(f"{r.event} -> {r.state}")
    clock.advance(timedelta(hours=3))
    facts = {
        "risk_level": "medium",
        "service_needed": "safety_and_shelter",
        "safety_plan_agreed": True,
    }
    r = rt.fire(code, "complete_assessment", CASEWORKER, {"facts": facts})
    step(f"{r.event} -> {r.state}")
    rt.grant_consent(code, scope="cross_border_return", actor=CASEWORKER, given_by="survivor")
    step("consent recorded: return and reintegration in Lao PDR")
    r = rt.fire(
        code, "refer_for_return", CASEWORKER, {"recipient_agency_id": FOCAL_POINT.agency_id}
    )
    grant = (r.consent_grant_id or "")[:8]
    step(f"{r.event} -> {r.state}; disclosed to {r.disclosed_to} under consent {grant}")

    clock.advance(timedelta(days=1, hours=1))
    step("nobody acknowledged within a day; the escalation sweep runs")
    for outcome in rt.sweep():
        step(f"  escalation: timer {outcome.timer_id} {outcome.outcome}")
    for event in ("return_referral.acknowledge", "return_referral.accept"):
        clock.advance(timedelta(hours=2))
        r = rt.fire(code, event, FOCAL_POINT)
        step(f"{event} by the receiving focal point -> {r.state}")
    clock.advance(timedelta(days=5))
    r = rt.fire(code, "return_referral.deliver", FOCAL_POINT, {"outcome": "successful"})
    step(f"return_referral.deliver (successful) -> {r.state}")
    clock.advance(timedelta(days=7))
    r = rt.fire(code, "send_feedback", CASEWORKER)
    step(f"send_feedback (host-country follow-up to the origin agency) -> {r.state}")
    clock.advance(timedelta(days=6))
    r = rt.fire(code, "close", SUPERVISOR)
    step(f"close -> {r.state}")

    _print_timeline(rt, view.id, echo)
    checks = rt.verify_timeline(code)
    ok = all(c.ok for c in checks)
    for c in checks:
        broken = c.broken
        verdict = "chain intact"
        if broken is not None:
            verdict = f"BROKEN at entry {broken.entry_id}: {broken.reason}"
        echo(f"\nTimeline of {c.case_code}: {c.entries} entries, {verdict}")
    with rt.db.connect() as conn:
        outbox = conn.execute(select(tables.outbox.c.template)).scalars().all()
    echo(f"Notifications waiting in the outbox: {len(outbox)} ({', '.join(sorted(set(outbox)))})")
    return ok


def _print_timeline(rt: Runtime, referral_id: str, echo: Callable[[str], None]) -> None:
    t = tables.timeline_entries
    with rt.db.connect() as conn:
        rows = conn.execute(select(t).where(t.c.referral_id == referral_id).order_by(t.c.seq)).all()
    header = (
        f"{'#':>3}  {'time (UTC)':16}  {'actor':18}  {'what':17}  {'event':28}  "
        f"{'to state':28}  disclosure"
    )
    echo("\n" + header)
    echo("-" * len(header))
    for row in rows:
        disclosure = ""
        if row.disclosed_to:
            basis = "OVERRIDE" if row.override else f"consent {row.consent_grant_id[:8]}"
            disclosure = f"{len(row.disclosed_fields)} fields to {row.disclosed_to} ({basis})"
        elif row.kind == "escalation":
            notified = ", ".join(row.details.get("notified", []))
            disclosure = f"notified {notified} (level {row.details.get('level')})"
        echo(
            f"{row.seq:>3}  {row.at:%Y-%m-%d %H:%M}  {row.actor_role:18}  {row.kind:17}  "
            f"{(row.event or ''):28}  {(row.to_state or ''):28}  {disclosure}"
        )
