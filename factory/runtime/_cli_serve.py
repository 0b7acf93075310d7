"""``factory serve``: deploy a model package as an OIP model server, list and delete served models."""

from __future__ import annotations

import typer

from factory.runtime._cli_common import (
    HomeOption,
    JsonOption,
    connect_ray,
    console,
    fail,
    open_store,
    print_json,
    short_digest,
)

app = typer.Typer(
    help="Model servers on Ray Serve (Open Inference Protocol v2): deploy, list, delete. These connect to the "
         "running Ray cluster (RAY_ADDRESS, else address 'auto').",
    no_args_is_help=True,
)


def _autoscale(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        fail(f"--autoscale {text!r} is not MIN,MAX: give two whole numbers, e.g. --autoscale 1,4")
    low, high = (int(p) for p in parts)
    if not 0 <= low <= high or high < 1:
        fail(f"--autoscale {text!r} needs 0 <= MIN <= MAX and MAX >= 1")
    return low, high


@app.command()
def deploy(
    digest: str = typer.Argument(..., help="The model package's digest (or a unique prefix)."),
    env: str = typer.Option(..., "--env", help="Environment (dev, staging, prod): its policy must admit the "
                                               "package, and its ref model/<name>/<env> moves to it."),
    name: str = typer.Option(None, "--name", help="Served name, at /v2/models/NAME. Default: the contract's name."),
    replicas: int = typer.Option(None, "--replicas", min=1, help="Fixed number of replicas (default 1)."),
    autoscale: str = typer.Option(None, "--autoscale", help="MIN,MAX replicas, scaled on load (instead of --replicas)."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Serve a model package over the Open Inference Protocol; print its URL and a curl of one inference.

    Connects to the running Ray cluster (RAY_ADDRESS, else address 'auto') and returns once the
    model answers. With no cluster running it starts an embedded one in this process and keeps
    serving in the foreground until Ctrl-C. Serve's HTTP proxy listens on FACTORY_SERVE_HOST and
    FACTORY_SERVE_PORT (default 127.0.0.1:8000) when this starts it.
    """
    from factory.serve import deploy as deploy_model
    from factory.serve import require_admitted

    if replicas is not None and autoscale is not None:
        fail("give --replicas or --autoscale, not both")
    bounds = _autoscale(autoscale)
    store = open_store(home)
    digest = store.artifacts.resolve(digest)
    require_admitted(store, digest, env)  # a refusal needs no cluster: say it before connecting to (or starting) one
    embedded = connect_ray(start=True)
    done = deploy_model(store, digest, env, name=name, replicas=replicas, autoscale=bounds)
    if as_json:
        print_json(done.__dict__)
    else:
        console.print(f"serving {done.model} {short_digest(done.digest)} (version {done.version}) in {done.env} "
                      f"as {done.name}", highlight=False)
        console.print(f"endpoint: {done.url}", highlight=False, soft_wrap=True)
        console.print("one inference:", highlight=False)
        console.print(done.curl, highlight=False, soft_wrap=True, markup=False)
    if embedded:
        _serve_in_foreground()


def _serve_in_foreground() -> None:
    import threading

    import ray
    from ray import serve

    console.print("serving from an embedded Ray cluster in this process: Ctrl-C stops it", highlight=False)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


@app.command("list")
def list_served(home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Served models: versions (the environment's first), environment, running replicas, status and URL."""
    from rich.table import Table

    from factory.serve import deployments

    store = open_store(home)
    connect_ray()
    rows = deployments(store)
    if as_json:
        print_json([r.__dict__ for r in rows])
        return
    table = Table(title="served models")
    for col in ("model", "versions", "env", "replicas", "status", "URL"):
        table.add_column(col)
    for r in rows:
        versions = ", ".join(f"{v}*" if i == 0 and r.primary else v for i, v in enumerate(r.versions))
        if r.traffic:
            versions += " (" + ", ".join(f"{v}: {w:g} %" for v, w in sorted(r.traffic.items())) + ")"
        name = r.name if r.name == r.model else f"{r.name} ({r.model})"
        table.add_row(name, versions, r.env, str(r.replicas), r.status, r.url)
    console.print(table)


@app.command()
def delete(name: str = typer.Argument(..., help="The served name (see 'factory serve list')."),
           home: str = HomeOption) -> None:
    """Stop serving a model and drop its deployment record; its environment ref stays."""
    from factory.serve import undeploy

    store = open_store(home)
    connect_ray()
    undeploy(store, name)
    console.print(f"deleted {name}", highlight=False)
