"""docs/sops is generated from the SOP library and must never go stale."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cli.main import cli, sop_documents
from tests.shipped import shipped_library

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "sops"


def test_every_sop_has_a_fresh_summary_and_diagram() -> None:
    library = shipped_library()
    pages = sop_documents(library)
    for sop in library:
        assert f"{sop.key}.md" in pages
        assert f"{sop.key}.mmd" in pages
    stale = [
        name
        for name, text in pages.items()
        if not (DOCS / name).is_file() or (DOCS / name).read_text("utf-8") != text
    ]
    extra = [p.name for p in DOCS.iterdir() if p.name not in pages]
    assert stale == [], "run 'sop-engine docs' to regenerate docs/sops"
    assert extra == [], "docs/sops holds pages of SOPs that no longer exist"


def test_summary_names_deadlines_datasets_consent_and_sources() -> None:
    page = (DOCS / "mekong.baseline.md").read_text("utf-8")
    assert "| **pep** | 72h from `incident_at` |" in page  # a case clock, in every state
    assert (
        "| `health_referral` (clinical care) | managing agency | `health_provider` "
        "| `health_referral` |" in page
    )
    assert "**override** (life_at_risk)" in page
    assert "Clinical management of rape and intimate partner violence survivors" in page
    assert "```mermaid\n---\ntitle:" in page


def test_summary_says_which_agency_fires_each_event() -> None:
    page = (DOCS / "corridor.th-la.md").read_text("utf-8")
    assert "| `report_family_assessment` | family_assessment | agency_focal_point | " \
        "`receiving_focal_point` |" in page  # fmt: skip
    assert "| `reintegration_referral` (reintegration) | `receiving_focal_point` |" in page
    assert (
        "| `close_case` | action_plan, follow_up | caseworker, supervisor | managing agency |"
        in page
    )


def test_docs_check_reports_a_stale_page(tmp_path: Path) -> None:
    runner = CliRunner()
    written = runner.invoke(cli, ["docs", "--output", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert runner.invoke(cli, ["docs", "--output", str(tmp_path), "--check"]).exit_code == 0
    page = tmp_path / "mekong.baseline.md"
    page.write_text(page.read_text("utf-8") + "edited by hand\n", encoding="utf-8")
    (tmp_path / "gone.sop.md").write_text("old\n", encoding="utf-8")
    stale = runner.invoke(cli, ["docs", "--output", str(tmp_path), "--check"])
    assert stale.exit_code == 1
    assert "mekong.baseline.md: stale" in stale.output
    assert "gone.sop.md: stale" in stale.output
