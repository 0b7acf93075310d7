"""`factory demo`'s wiring, without running a cycle: its options reach the run, and bad input exits 2."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from factory.runtime._demo_phases import Cycle, Options

EXE = os.path.join(os.path.dirname(sys.executable), "factory")


def _demo_app():
    import typer

    from factory.runtime._cli_demo import demo

    app = typer.Typer()
    app.command()(demo)
    return app


def test_the_options_reach_the_run_and_the_home_is_made(tmp_path, monkeypatch):
    """--quick, --port and --home choose the quick sizes, Serve's port and a fresh store acting as the controller;
    the next demo with the same home starts from an empty store."""
    import factory.runtime._demo as demo_module

    seen = {}

    def fake_run(store, options, progress, *, after=None):
        seen.update(store=store, options=options)
        cycle = Cycle(store, options, progress)
        cycle.timings.update({"whole demo": 1.0, "candidate: dataset version to 100 % production": 0.5})
        return cycle

    monkeypatch.setattr(demo_module, "run_demo", fake_run)
    home = tmp_path / "demo"
    done = CliRunner().invoke(_demo_app(), ["--quick", "--port", "18123", "--home", str(home)])
    assert done.exit_code == 0, done.output
    assert seen["options"] == Options.quick()
    settings = seen["store"].settings
    assert (settings.actor, settings.serve_port, settings.home) == ("factory-controller", 18123,
                                                                   str((home / "store").resolve()))
    assert "the whole demo took 1.0 s" in done.output
    (home / "store" / "stale").write_text("from the last demo")
    again = CliRunner().invoke(_demo_app(), ["--quick", "--home", str(home)])
    assert again.exit_code == 0, again.output
    assert not (home / "store" / "stale").exists()  # a home the demo made is wiped for the next one


def test_a_home_with_files_no_demo_made_is_refused_and_kept(tmp_path):
    """The demo wipes its home, so a folder holding someone's files is refused with one line, exit 2, untouched."""
    home = tmp_path / "mine"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    done = subprocess.run([EXE, "demo", "--home", str(home)], capture_output=True, text=True)
    assert done.returncode == 2 and "holds files that no demo made" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and (home / "notes.txt").read_text() == "keep me"


def test_a_port_out_of_range_exits_2():
    """--port takes 0-65535; anything else is refused before anything starts."""
    done = subprocess.run([EXE, "demo", "--port", "70000"], capture_output=True, text=True)
    assert done.returncode == 2 and "65535" in done.stderr
