"""sop-engine directory validate and list, as a coordinator uses them."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
INVALID = Path(__file__).parent / "fixtures" / "invalid"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_the_shipped_directory_by_default() -> None:
    code, out, err = run("directory", "validate")
    assert code == 0, out + err
    assert out == ""
    assert "directory valid:" in err
    assert "5 corridors" in err


def test_validate_reports_every_problem_as_file_line_message(tmp_path: Path) -> None:
    for case in ("unknown_service", "wrong_country"):
        shutil.copy(INVALID / case / "th.yaml", tmp_path / f"{case}.yaml")
    code, out, err = run("directory", "validate", str(tmp_path))
    assert code == 1
    assert out.splitlines() == [
        f"{tmp_path}/unknown_service.yaml:9: agency TH-SYN-A: unknown service "
        "'psychosocal_support' (did you mean 'psychosocial_support'?)",
        f"{tmp_path}/wrong_country.yaml:6: agency LA-SYN-A: country LA does not match the "
        "file's country TH; move the entry to the file of its country",
    ]
    assert "2 problem(s)" in err


def test_validate_refuses_a_path_that_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "th.yaml").write_text("country: TH\n")
    code, _, _ = run("directory", "validate", str(tmp_path / "th.yaml"))
    assert code == 2


def test_list_by_country_and_service() -> None:
    code, out, err = run("directory", "list", "--country", "LA", "--service", "repatriation")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["LA-MLSW", "LA-SYN-TRANSIT-VIENTIANE"]
    assert lines[0].endswith("[focal_point, verify]")
    assert lines[1].endswith("[reception_transit, synthetic]")
    assert "2 agencies." in err


def test_list_by_corridor_shows_who_takes_no_new_cases() -> None:
    code, out, _ = run("directory", "list", "--corridor", "th-mm")
    assert code == 0
    dsw = next(line for line in out.splitlines() if line.startswith("MM-DSW\t"))
    assert "not accepting" in dsw
    code, out, _ = run("directory", "list", "--corridor", "TH-MM", "--accepting")
    assert "MM-DSW" not in out


def test_list_says_which_option_names_an_unknown_word() -> None:
    code, _, err = run("directory", "list", "--service", "psychosocial")
    assert code == 2
    assert err.strip() == (
        "--service: unknown service 'psychosocial' (did you mean 'psychosocial_support'?)"
    )


def test_list_reads_another_folder() -> None:
    code, _, err = run("directory", "list", "--path", str(INVALID / "unknown_service"))
    assert code == 1
    assert "unknown service" in err
