"""``factory demo``: the whole factory cycle on the embedded Ray cluster (what ``make demo`` runs).

Generated data to dataset versions and feature views, a point-in-time training set, a
2-worker training run, the prod gates and a deployment under steady traffic; then the
candidates' pipelines on the controller actor: a Tune sweep's best trial promoted through
shadow and canary steps, and a faulty one rolled back; then a summary (digests, gates, the rollout timeline, velocity metrics, the live endpoint) and an
HTML report with pictures. Each phase is timed; progress shows throughout.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from factory.runtime._cli_common import console, fail, plain

_DEFAULT_HOME = ".factory/demo"
_MARK = ".factory-demo"  # written into a demo home: only a folder holding it is wiped by the next demo


def _fresh_home(home: Path) -> None:
    """Empty ``home`` for a new demo: the default home, a folder an earlier demo made, or an empty one; anything
    else is refused."""
    if home.exists() and not home.is_dir():
        fail(f"--home {home} is a file: give a folder for the demo's store and report (it is wiped first)")
    if home.is_dir() and any(home.iterdir()):
        made_by_demo = ((home / _MARK).exists() or home.resolve() == Path(_DEFAULT_HOME).resolve()
                        or {p.name for p in home.iterdir()} == {"store", "report.html"})
        if not made_by_demo:
            fail(f"--home {home} holds files that no demo made, and the demo wipes its home first: give an empty "
                 f"or new folder (or {_DEFAULT_HOME})")
        shutil.rmtree(home)
    (home / "store").mkdir(parents=True, exist_ok=True)
    (home / _MARK).write_text("made by 'factory demo': the next demo with this --home wipes this folder\n")


class _RichProgress:
    """Phases as rich status lines: a spinner while one runs, its time when it ends."""

    def __init__(self):
        self._status = None
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        console.print(f"\n[bold cyan]> {plain(name)}[/bold cyan]", highlight=False)
        with console.status(f"{plain(name)} ...", spinner="dots") as status:
            self._status = status
            try:
                yield
            finally:
                self._status = None
        console.print(f"  [green]done[/green] in {time.perf_counter() - started:.1f} s "
                      f"[dim](total {time.perf_counter() - self._started:.0f} s)[/dim]", highlight=False)

    def note(self, text: str) -> None:
        console.print(f"  [dim]{plain(text)}[/dim]", highlight=False, soft_wrap=True)

    def value(self, label: str, value: object) -> None:
        console.print(f"  {plain(label):<18} {plain(value)}", highlight=False, soft_wrap=True)


def demo(
    home: Path = typer.Option(Path(_DEFAULT_HOME), "--home", help="Store root for the demo (wiped first)."),
    quick: bool = typer.Option(False, "--quick", help="Smaller data and shorter windows (what the tests run)."),
    report: Path | None = typer.Option(None, "--report", help="Where the HTML report goes (default HOME/report.html)."),
    serve_port: int = typer.Option(0, "--port", min=0, max=65535,
                                   help="Serve's HTTP port (0: a free one; FACTORY_SERVE_PORT is not used)."),
    keep_serving: bool = typer.Option(False, "--keep-serving",
                                      help="Keep the endpoint up after the summary, until Ctrl-C."),
) -> None:
    """Run the whole factory cycle on generated data in a fresh store, and write the HTML report."""
    import dataclasses

    from factory.runtime._demo import run_demo
    from factory.runtime._demo_cluster import free_port
    from factory.runtime._demo_phases import Options
    from factory.runtime._demo_summary import print_summary
    from factory.runtime._report import write_report
    from factory.settings import Settings
    from factory.store import Store

    _fresh_home(home)
    settings = dataclasses.replace(Settings.from_env(), home=str((home / "store").resolve()), catalog=None,
                                   actor="factory-controller", serve_port=serve_port or free_port())
    store = Store(settings.home, settings=settings)
    options = Options.quick() if quick else Options()
    out = report or home / "report.html"

    def finish(cycle) -> None:
        print_summary(console, cycle)
        written = write_report(cycle, out)
        console.print(f"\n[bold green]report[/bold green] {plain(written)}", highlight=False)
        if keep_serving:
            cycle.made["load"].stop()  # the demo's own traffic ends; the endpoint stays
            console.print("serving until Ctrl-C ...")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)

    import logging

    for noisy in ("ray.serve", "ray.tune", "ray.train"):  # their INFO lines would break the progress view
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console.print(f"[bold]factory demo[/bold]: the store is {plain(settings.home)}", highlight=False)
    cycle = run_demo(store, options, _RichProgress(), after=finish)
    console.print(f"\n[bold green]done[/bold green]: the whole demo took {cycle.timings['whole demo']:.1f} s; "
                  f"one candidate from dataset version to 100 % production "
                  f"{cycle.timings['candidate: dataset version to 100 % production']:.1f} s", highlight=False)


COMMANDS = {"demo": demo}
