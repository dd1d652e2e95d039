"""One settings object for the whole engine, read from ``SOP_ENGINE_*`` environment variables.

Defaults work on a laptop: an SQLite database in ``./data`` and the SOP library shipped
with the package.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "default_sop_dir", "get_settings"]


def default_sop_dir() -> Path:
    """The ``sop_definitions`` folder shipped with the package."""
    return Path(str(resources.files("sop_definitions")))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOP_ENGINE_", extra="ignore")

    data_dir: Path = Path("data")
    """Where the embedded SQLite database and other local state live."""
    sop_dir: Path = default_sop_dir()
    """Where the SOP library is read from."""


@cache
def get_settings() -> Settings:
    return Settings()
