"""What each agency sees of a referral: what it wrote, and what was disclosed to it.

The managing agency sees the facts it (or the engine) wrote, as they are now. A fact written
by another agency (a receiving agency's assessment, say) is that agency's: the managing
agency sees it only as disclosed to it, under the survivor's consent for that feedback, like
any other disclosure, with the value as disclosed. An agency the referral was sent to sees
the facts it wrote itself and the fields disclosed to it (as disclosed, while the basis
stands; see :mod:`sop_engine.runtime.disclosed`). An agency that takes no part in the
referral is answered :class:`~sop_engine.errors.NotFound`, as for a code that does not exist.
"""

from __future__ import annotations

from dataclasses import replace

from sop_engine.errors import NotFound
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.change import SELECT_BY_CASE_CODE
from sop_engine.runtime.disclosed import as_disclosed, disclosed_fields, is_identifying, takes_part
from sop_engine.runtime.referrals import ReferralView, handoffs_seen_by, referral_view
from sop_engine.runtime.services import Services

__all__ = ["read_as_agency"]


def read_as_agency(services: Services, case_code: str, actor: Actor) -> ReferralView:
    """The referral as the actor's agency may see it (see the module docstring), with the
    events the actor may fire; identifying values are never included, only their names."""
    with read_transaction(services.db) as conn:
        ref = conn.execute(SELECT_BY_CASE_CODE, {"p_code": case_code}).first()
        agency = actor.agency_id
        if ref is None or agency is None or not takes_part(ref, agency):
            raise NotFound(f"no referral {case_code}")
        view = referral_view(conn, services, ref, actor=actor)
        held = disclosed_fields(conn, ref.id, agency, services.clock.now())
        spec = services.sop(ref.sop_key, ref.sop_version).spec
        values = as_disclosed(conn, services, ref, held.disclosures, spec) if held.readable else {}
    writers = dict(ref.fact_writers or {})
    owner = ref.owner_agency_id

    def own(name: str) -> bool:
        writer = writers.get(name)
        return writer == agency or (agency == owner and writer is None)

    disclosed = {f for f in held.readable if f in spec.facts}
    facts = {f: values.get(f) for f in disclosed if not is_identifying(spec, f)}
    facts.update((f, v) for f, v in view.facts.items() if own(f))
    sealed = {f for f in view.sealed_fields if own(f)}
    sealed |= {f for f in disclosed if is_identifying(spec, f) and f in view.sealed_fields}
    handoffs = handoffs_seen_by(spec, view.handoffs, view.agencies, owner, agency)
    return replace(view, facts=facts, sealed_fields=tuple(sorted(sealed)), handoffs=handoffs)
