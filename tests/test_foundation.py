"""The ground floor: packages import, detectron2 works on CPU, PostGIS answers, the CLI helps."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_etl_stays_light():
    # `import etl` must not pull torch or SQLAlchemy (DESIGN.md floors): check in a fresh interpreter.
    code = (
        "import sys, etl; heavy = [m for m in ('torch', 'sqlalchemy', 'detectron2') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_packages_import_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-c", "import detectron2_rfcn, age_net, etl, atlas_db"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_detectron2_builds_and_runs_a_stock_model_on_cpu():
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()  # stock Faster R-CNN R50-C4 defaults, no model-zoo file needed
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    model = build_model(cfg).eval()
    image = torch.rand(3, 97, 131) * 255
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 97, "width": 131}])
    inst = out["instances"]
    assert inst.image_size == (97, 131)
    assert {"pred_boxes", "scores", "pred_classes"} <= set(inst.get_fields())


def test_postgis_answers_over_a_real_connection(database_url):
    from sqlalchemy import text

    from atlas_db.engine import get_engine

    engine = get_engine(database_url)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT postgis_full_version()")).scalar()
    engine.dispose()
    assert version.startswith("POSTGIS=")


def test_make_db_leaves_a_database_url_servers_settings_alone(database_url):
    """``make db`` sizes only the local cluster it manages (tools/db.sh): on a server named by
    DATABASE_URL it prints what it would set and changes nothing, neither live settings nor
    the configuration files (ALTER SYSTEM)."""
    from sqlalchemy import text

    from atlas_db.engine import get_engine

    engine = get_engine(database_url)
    query = text("SELECT name, setting FROM pg_settings WHERE name IN "
                 "('shared_buffers', 'max_wal_size', 'shared_preload_libraries') UNION ALL "
                 "SELECT 'file:' || name, setting FROM pg_file_settings ORDER BY 1")

    def settings():
        with engine.connect() as conn:
            return conn.execute(query).fetchall()

    before = settings()
    env = {**os.environ, "DATABASE_URL": database_url, "PY": sys.executable, "PG_SHARED_BUFFERS": "1234MB"}
    out = subprocess.run(["bash", "tools/db.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "left to its administrator" in out.stdout and "shared_buffers = 1234MB" in out.stdout
    assert settings() == before
    engine.dispose()


def test_missing_database_is_an_error_not_a_skip():
    from atlas_db.engine import ensure_database

    with pytest.raises(RuntimeError, match="no PostgreSQL server answers") as err:
        ensure_database("postgresql://postgres:secret@localhost:1/nowhere")
    assert "secret" not in str(err.value)  # credentials are never shown


def test_cli_help_lists_commands():
    for cmd in (["deepcraters", "--help"], [sys.executable, "-m", "etl", "--help"]):
        if cmd[0] == "deepcraters":
            cmd = [str(Path(sys.executable).with_name("deepcraters")), "--help"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        assert "usage: deepcraters" in out
        for name in ("synth", "tiles", "load", "query"):
            assert f"  {name}" in out


def test_every_subcommand_explains_itself(capsys):
    # In-process (test_cli_help_lists_commands runs the entry points): --help of each subcommand.
    from etl.cli import COMMANDS, main

    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0, name
        assert f"usage: deepcraters {name}" in capsys.readouterr().out


def test_tests_never_write_into_database_url(request):
    """A user's DATABASE_URL names their atlas: the test database comes from the option,
    TEST_DATABASE_URL or the default only."""
    from conftest import DEFAULT_TEST_DATABASE_URL, resolve_test_database_url

    mine = "postgresql://me@atlas-server:5432/deepcraters"
    assert resolve_test_database_url(None, {"DATABASE_URL": mine}) == DEFAULT_TEST_DATABASE_URL
    assert resolve_test_database_url(None, {"DATABASE_URL": mine, "TEST_DATABASE_URL": "postgresql://t/x"}) \
        == "postgresql://t/x"
    assert resolve_test_database_url("postgresql://o/y", {"TEST_DATABASE_URL": "postgresql://t/x"}) == "postgresql://o/y"


def test_database_tests_are_marked_from_their_fixtures(request):
    """``-m "not db"`` leaves out every test that touches the database, marked or not by hand."""
    marked = {item.name for item in request.session.items if item.get_closest_marker("db")}
    uses_db = {item.name for item in request.session.items
               if {"database_url", "atlas_url", "atlas_engine"} & set(getattr(item, "fixturenames", ()))}
    assert uses_db <= marked
    assert request.node.get_closest_marker("db") is None  # and only those


def test_every_database_command_takes_one_db_option():
    """``--db`` is defined once (etl/commands/_options.py) and every command that reaches the
    database takes it from there."""
    from etl.commands import db, demo, load, query

    repo = Path(__file__).resolve().parents[1]
    defined = [p.name for p in sorted((repo / "etl" / "commands").glob("*.py")) if '"--db"' in p.read_text()]
    assert defined == ["_options.py"]
    url = "postgresql://me@host:5432/x"
    assert load.build_parser().parse_args(["atlas", "a.gpkg", "--db", url]).db == url
    assert query.build_parser().parse_args(["runs", "--db", url]).db == url
    assert db.build_parser().parse_args(["upgrade", "--db", url]).db == url
    assert demo.build_parser().parse_args(["--db", url]).db == url
