"""What a referral sent to an agency lets it read: ``GET /referrals/{case_code}/disclosed``.

Exactly the fields disclosed to the caller's agency, identifying ones decrypted, under
consent that is neither withdrawn nor expired (or an override); see
:mod:`sop_engine.runtime.disclosed`. The answers:

- 200 with the fields that may be read, and the names of those withheld;
- 404 for an agency that takes no part in the referral (the same as for a wrong case code),
  and for one that takes part but was disclosed nothing;
- 403 ``consent_missing`` once every disclosure to the agency lost its consent (withdrawn
  or expired): the data may no longer be read.

Every read and every refusal is written to the access log (``disclosed.read``) before the
answer leaves. The answer is never cached (``Cache-Control: no-store``).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import Authorized, RuntimeDep, actor_of
from api.openapi import error_responses
from api.schemas.tasks import DisclosedPublic

__all__ = ["router"]

router = APIRouter(
    prefix="/referrals", tags=["agencies"], responses=error_responses(401, 403, 404, 422)
)


@router.get("/{case_code}/disclosed")
def read_disclosed(
    runtime: RuntimeDep, user: Authorized, case_code: str, response: Response
) -> DisclosedPublic:
    """The referral's data disclosed to the caller's agency, while its consent stands (403
    ``consent_missing`` after withdrawal or expiry)."""
    view = runtime.read_disclosed(case_code, actor_of(user))
    response.headers["Cache-Control"] = "no-store"
    return DisclosedPublic.of(view)
