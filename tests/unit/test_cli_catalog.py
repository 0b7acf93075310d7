"""``factory init`` and ``factory catalog info|migrate`` as a user runs them on the embedded catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from factory.store._schema import LATEST

EXE = os.path.join(os.path.dirname(sys.executable), "factory")


def cli(*args: str, catalog: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FACTORY_CATALOG"}
    if catalog is not None:
        env["FACTORY_CATALOG"] = catalog
    return subprocess.run([EXE, *args], capture_output=True, text=True, env={**env, "COLUMNS": "250"})


def test_init_info_and_migrate_on_a_new_home(tmp_path):
    """`factory init` makes the store, says so, and again says it exists; info shows one store id on both sides."""
    home = str(tmp_path / "home")
    made = cli("init", "--home", home)
    assert made.returncode == 0, made.stderr
    assert "(new)" in made.stdout and "sqlite" in made.stdout
    again = cli("init", "--home", home, "--json")
    assert json.loads(again.stdout)["created"] is False
    info = json.loads(cli("catalog", "info", "--home", home, "--json").stdout)
    assert info["schema_version"] == LATEST and info["matches"] is True
    assert info["store_id"] == info["home_store_id"] == open(os.path.join(home, "STORE_ID")).read().strip()
    assert "up to date" in cli("catalog", "migrate", "--home", home).stdout


def test_a_mismatched_catalog_and_a_missing_one_are_one_line_errors(tmp_path):
    """Pointing a made store at another catalog, or migrating a catalog that is not there: exit 2, one line, the fix."""
    home = str(tmp_path / "home")
    assert cli("init", "--home", home).returncode == 0
    stray = str(tmp_path / "stray.db")
    listed = cli("refs", "list", "--home", home, catalog=stray)
    assert listed.returncode == 2 and listed.stderr.count("\n") == 1
    assert f"at {home}/catalog.db" in listed.stderr and not os.path.exists(stray)
    migrated = cli("catalog", "migrate", "--catalog", stray)
    assert migrated.returncode == 2 and "there is no catalog at" in migrated.stderr and not os.path.exists(stray)
    shown = cli("catalog", "info", "--home", str(tmp_path / "fresh"))
    assert shown.returncode == 0 and "not created yet" in shown.stdout and not os.path.exists(tmp_path / "fresh")
