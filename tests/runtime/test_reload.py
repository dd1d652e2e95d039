"""Save and reload after every step: a fresh engine on the same database sees exactly what
the first one left, so nothing lives only in memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta

from sqlalchemy import Engine

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence.db import make_engine
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory
from tests.handoffs import DELIVERED


def test_every_step_survives_a_reload(
    engine: Engine,
    library: SopLibrary,
    keyring: MasterKeyring,
    clock: ManualClock,
    caseworker: Actor,
    supervisor: Actor,
    focal_point: Actor,
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    runtime = Runtime(engine, library, keyring, clock, directory=agency_directory())
    view = runtime.create_referral(
        sop_key="example.corridor",
        sop_version=1,
        actor=caseworker,
        origin_country="TH",
        destination_country="LA",
        incident_at=clock.now() - timedelta(hours=3),
        facts={"survivor_age": 29, "survivor_name": "Synthetic Survivor Reload"},
    )
    code = view.case_code
    steps: list[Callable[[], object]] = [
        lambda: runtime.grant_consent(
            code, scope="case_management", actor=caseworker, given_by="survivor"
        ),
        lambda: runtime.fire(
            code, "record_consent", caseworker, {"facts": {"safe_contact_method": "in_person"}}
        ),
        lambda: runtime.fire(
            code,
            "complete_assessment",
            caseworker,
            {
                "facts": {
                    "risk_level": "low",
                    "service_needed": "legal_aid",
                    "safety_plan_agreed": True,
                }
            },
        ),
        lambda: runtime.grant_consent(
            code, scope="cross_border_return", actor=caseworker, given_by="survivor"
        ),
        lambda: runtime.fire(
            code, "refer_for_return", caseworker, {"recipient_agency_id": "LA-SW-1"}
        ),
        lambda: runtime.fire(code, "return_referral.acknowledge", focal_point),
        lambda: runtime.fire(code, "return_referral.accept", focal_point),
        lambda: runtime.fire(code, "return_referral.deliver", focal_point, DELIVERED),
        lambda: runtime.fire(code, "close", supervisor),
    ]
    for step in steps:
        step()
        clock.advance(timedelta(minutes=30))
        before = runtime.read_referral(code, actor=caseworker, reveal_identifying=True)
        fresh_engine = make_engine(url)
        try:
            fresh = Runtime(
                fresh_engine,
                SopLibrary(list(library)),
                keyring,
                clock,
                directory=agency_directory(),
            )
            after = fresh.read_referral(code, actor=caseworker, reveal_identifying=True)
            assert asdict(after) == asdict(before)
            assert [asdict(c) for c in fresh.verify_timeline(code)] == [
                asdict(c) for c in runtime.verify_timeline(code)
            ]
        finally:
            fresh_engine.dispose()
    final = runtime.read_referral(code)
    assert final.state == "closed"
    assert final.version == 10  # created, then nine steps
