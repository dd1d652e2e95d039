"""The engine's one exception tree.

Every error the engine raises on purpose is a :class:`SopEngineError`. Each branch also
subclasses the builtin it resembles, so that an existing ``except ValueError`` or
``except LookupError`` still catches it::

    SopEngineError
    ├── DefinitionError (ValueError)        an SOP file is broken; carries every Problem
    ├── TransitionNotAllowed (ValueError)   the SOP does not allow this event now
    │   ├── GuardFailed                     a guard expression said no
    │   ├── RoleNotAllowed (PermissionError) the actor's role or agency may not fire it
    │   └── MissingFacts                    the target state requires facts not yet known
    ├── ConsentMissing (PermissionError)    a disclosure lacks a covering, unexpired grant
    ├── InvalidInput (ValueError)           a request's data is wrong; ``field`` names where
    │   └── IdempotencyKeyReused            the key was used before for another request
    ├── ConcurrentChange (RuntimeError)     someone else changed the referral first
    ├── NotFound (LookupError)              no such SOP, referral, timer or grant
    ├── ConfigurationError (ValueError)     the settings cannot work (missing master key, …)
    └── TamperedData (ValueError)           sealed data or a wrapped key failed authentication

Messages never carry personal data: they name case codes, SOP keys, states and fields, never
values of identifying fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ConcurrentChange",
    "ConfigurationError",
    "ConsentMissing",
    "DefinitionError",
    "GuardFailed",
    "IdempotencyKeyReused",
    "InvalidInput",
    "MissingFacts",
    "MissingMasterKey",
    "NotFound",
    "Problem",
    "RoleNotAllowed",
    "SopEngineError",
    "TamperedData",
    "TransitionNotAllowed",
]


class SopEngineError(Exception):
    """Base of every error the engine raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One fault in an SOP definition, located as precisely as the source allows."""

    file: str
    line: int
    message: str
    sop: str | None = None
    state: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = []
        if self.sop:
            where.append(f"SOP {self.sop}")
        if self.state:
            where.append(f"state {self.state}")
        prefix = f"[{', '.join(where)}] " if where else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.file}:{self.line}: {prefix}{self.message}{hint}"


class DefinitionError(SopEngineError, ValueError):
    """An SOP definition is broken. ``problems`` lists every fault found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(
            sorted(problems, key=lambda p: (p.file, p.line, p.message))
        )
        super().__init__(self.report())

    def report(self) -> str:
        """All problems, one ``file:line: message`` per line."""
        return "\n".join(str(p) for p in self.problems)


class TransitionNotAllowed(SopEngineError, ValueError):
    """The referral's SOP does not allow this event from its current state for this actor."""

    def __init__(self, message: str, *, available: Sequence[str] = ()) -> None:
        self.available = tuple(available)
        super().__init__(message)


class GuardFailed(TransitionNotAllowed):
    """A transition's guard expression evaluated to false."""


class RoleNotAllowed(TransitionNotAllowed, PermissionError):
    """The actor's role or agency may not fire this event."""


class MissingFacts(TransitionNotAllowed):
    """The target state requires facts that the referral does not have yet."""

    def __init__(self, message: str, *, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        super().__init__(message)


class ConsentMissing(SopEngineError, PermissionError):
    """A disclosure is not covered by an unexpired consent grant, nor by a valid override."""


class ApprovalByRequester(SopEngineError, PermissionError):
    """Whoever asked for something (uploaded an SOP's text) may not approve it: a second
    person must."""


class InvalidInput(SopEngineError, ValueError):
    """A request's data is wrong. ``field`` names the field at fault, when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class IdempotencyKeyReused(InvalidInput):
    """An idempotency key was sent again with a different request."""


class ConcurrentChange(SopEngineError, RuntimeError):
    """The referral changed since the caller read it; ``current_version`` says to what."""

    def __init__(self, message: str, *, current_version: int | None = None) -> None:
        self.current_version = current_version
        super().__init__(message)


class NotFound(SopEngineError, LookupError):
    """No such SOP, version, referral, timer or consent grant."""


class ConfigurationError(SopEngineError, ValueError):
    """The settings cannot work as given."""


class MissingMasterKey(ConfigurationError):
    """A case key is wrapped under a master key id this process's ring lacks: another
    process runs a newer ring (a rotation under way), or a key was retired too early."""


class TamperedData(SopEngineError, ValueError):
    """Encrypted data or a wrapped key failed authentication, or is not in a known format.

    The message says which check failed, never the plaintext or any key.
    """
