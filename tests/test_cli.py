"""The sop-engine command as a coordinator uses it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "language" / "fixtures"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_the_library_by_default() -> None:
    code, out, err = run("validate")
    assert code == 0, out
    assert out == ""
    assert "SOP(s) valid." in err


def test_validate_reports_every_problem_as_file_line_message(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "valid" / "minimal.sop.yaml", tmp_path)
    for name in ("unknown_role", "guard_unknown_fact", "unknown_key"):
        shutil.copy(FIXTURES / "invalid" / f"{name}.sop.yaml", tmp_path)
    code, out, err = run("validate", str(tmp_path))
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 3
    assert (
        f"{tmp_path}/unknown_role.sop.yaml:9: [SOP bad.role, state referred] transition "
        "'confirm': unknown role 'casewrker' (did you mean 'caseworker'?)" in lines
    )
    assert any(line.startswith(f"{tmp_path}/unknown_key.sop.yaml:6: ") for line in lines)
    assert "3 problem(s); 1 SOP(s) valid." in err


def test_validate_a_single_file_whatever_its_name(tmp_path: Path) -> None:
    sop = tmp_path / "mine.yaml"
    sop.write_text((FIXTURES / "valid" / "minimal.sop.yaml").read_text("utf-8"))
    assert run("validate", str(sop))[0] == 0


def test_validate_says_when_nothing_was_found(tmp_path: Path) -> None:
    code, _, err = run("validate", str(tmp_path))
    assert code == 1
    assert "no SOP files found" in err


def test_list_prints_key_version_title() -> None:
    code, out, _ = run("list", str(FIXTURES / "valid"))
    assert code == 0
    assert out.splitlines() == ["test.child 1 Child", "test.minimal 1 Minimal"]


def test_diagram_of_a_version() -> None:
    code, out, _ = run("diagram", "test.child@1", "--path", str(FIXTURES / "valid"))
    assert code == 0
    assert out.startswith("---\ntitle: Child (test.child@1)\n---\nstateDiagram-v2\n")


def test_diagram_of_an_unknown_sop_is_a_clear_error() -> None:
    code, _, err = run("diagram", "test.chld", "--path", str(FIXTURES / "valid"))
    assert code == 1
    assert "no SOP test.chld (did you mean 'test.child'?)" in err


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "sop-engine"
    result = subprocess.run(
        [str(script), "list"], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "example.baseline 1 " in result.stdout


def test_validate_a_file_that_extends_the_library(tmp_path: Path) -> None:
    """A coordinator checks her national draft on its own; its parent comes from the library."""
    draft = tmp_path / "draft.sop.yaml"
    draft.write_text(
        "key: draft.national\nversion: 1\nextends: mekong.baseline@1\ntitle: Draft\n"
        "jurisdiction: {countries: [KH]}\nlanguages: [en, km]\n",
        encoding="utf-8",
    )
    code, out, err = run("validate", str(draft))
    assert code == 0, out
    assert "1 SOP(s) valid." in err
    draft.write_text(
        draft.read_text("utf-8") + "states:\n  intake: {tasks: {x: {role: nobody, ask: y}}}\n"
    )
    code, out, _ = run("validate", str(draft))
    assert code == 1
    assert out.splitlines() == [
        f"{draft}:8: [SOP draft.national, state intake] task 'x': unknown role 'nobody'"
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("key: " + "[" * 400 + "]" * 400 + "\n", 1, "refused: nesting deeper than 32 levels"),
        (
            "".join("  " * i + "a:\n" for i in range(400)) + "  " * 400 + "b: 1\n",
            33,
            "refused: nesting deeper than 32 levels",
        ),
        ("key: a\ntitle: a\x00b\n", 2, "character 0x0000 is not allowed in YAML"),
    ],
    ids=["flow", "block", "nul"],
)
def test_validate_a_hostile_file_is_a_clear_error_without_a_traceback(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    """Regression: 329 levels of nesting and more were a RecursionError."""
    hostile = tmp_path / "hostile.sop.yaml"
    hostile.write_text(text, encoding="utf-8")
    script = Path(sys.executable).parent / "sop-engine"
    result = subprocess.run(
        [str(script), "validate", str(hostile)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [f"{hostile}:{line}: {message}"]
    assert "Traceback" not in result.stderr


def _modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code``."""
    report = "import sys; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    return set(result.stdout.split("\n")[-2].split())


def _top_modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The top-level packages a fresh interpreter has imported after running ``code``."""
    return {name.split(".")[0] for name in _modules_after(code, env)}


HEAVY = {"sqlalchemy", "prefect", "uvicorn", "fastapi", "httpx", "jwt", "jinja2"}
COMPILER = {"cel", "jsonschema", "transitions", "yaml", "prompt_toolkit"}


def test_the_command_line_imports_nothing_heavy_before_a_command_runs() -> None:
    loaded = _top_modules_after("import cli.main")
    assert not loaded & (HEAVY | COMPILER | {"pydantic", "pydantic_settings"})


def test_validate_a_file_does_not_import_the_database_or_the_web() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['validate', 'sop_definitions/mekong/national.kh.sop.yaml'])\n"
        "assert r.exit_code == 0, r.output\n"
    )
    loaded = _top_modules_after(code)
    assert "cel" in loaded  # the check ran
    assert not loaded & (HEAVY | {"prompt_toolkit"})


def test_users_add_does_not_import_the_sop_compiler(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SOP_ENGINE_DATA_DIR": str(tmp_path / "data"),
        "SOP_ENGINE_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
    }
    env.pop("SOP_ENGINE_ENVIRONMENT", None)
    code = (
        "from click.testing import CliRunner\n"
        "from cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['db', 'upgrade'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(cli, ['users', 'add', 'aud-01', '--role', 'auditor'])\n"
        "assert r.exit_code == 0, r.output\n"
    )
    modules = _modules_after(code, env)
    loaded = {name.split(".")[0] for name in modules}
    assert "sqlalchemy" in loaded  # the user was stored
    assert not loaded & (COMPILER | {"prefect", "uvicorn", "fastapi", "httpx", "jinja2"})
    assert "sqlalchemy.orm" not in modules  # the tables are Core: the ORM would only cost time


def test_keys_generate_prints_a_new_key_the_settings_read() -> None:
    from sop_engine.crypto import MasterKeyring

    first = CliRunner().invoke(cli, ["keys", "generate"])
    second = CliRunner().invoke(cli, ["keys", "generate", "--id", "k2"])
    assert first.exit_code == 0
    assert second.exit_code == 0
    ring = MasterKeyring.from_setting(f"{second.stdout.strip()},{first.stdout.strip()}")
    assert (ring.current.key_id, ring.previous[0].key_id) == ("k2", "k1")
    assert ring.current.material != ring.previous[0].material
    assert "SOP_ENGINE_MASTER_KEY" in first.stderr
    refused = CliRunner().invoke(cli, ["keys", "generate", "--id", "not an id"])
    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert "--id: a master key id must be" in refused.stderr
