"""What the runtime's operations need: the database, the SOP library, the keys, the clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from sop_engine.clock import Clock, SystemClock
from sop_engine.crypto import MasterKeyring
from sop_engine.directory.model import ServiceDirectory
from sop_engine.language.compiler import CompiledSop, SopLibrary

__all__ = ["Services"]


@dataclass(frozen=True)
class Services:
    db: Engine
    library: SopLibrary
    keyring: MasterKeyring
    clock: Clock = field(default_factory=SystemClock)
    directory: ServiceDirectory = field(default_factory=ServiceDirectory)
    """Who may receive a disclosure (with the managed entries of ``db`` over it). Empty by
    default: nothing is disclosed to an agency the directory does not list."""
    refuse_past_review: bool = False
    """Whether a new referral on an SOP version due for review is refused (else warned)."""

    def sop(self, key: str, version: int) -> CompiledSop:
        return self.library.get(key, version)
