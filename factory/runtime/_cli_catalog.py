"""``factory catalog``: what a store's catalog is (backend, location, schema version, store id)
and, on demand, its migrations."""

from __future__ import annotations

import os

import typer

from factory.runtime._cli_common import CatalogOption, HomeOption, JsonOption, console, fail, open_store, print_json

app = typer.Typer(help="The catalog (SQLite or PostgreSQL): info, migrate.", no_args_is_help=True)


@app.command()
def info(home: str = HomeOption, catalog: str = CatalogOption, as_json: bool = JsonOption) -> None:
    """Backend, location, schema version and store id of the catalog, and whether the home agrees. Changes nothing."""
    from rich.markup import escape
    from rich.table import Table

    facts = open_store(home, catalog).catalog_info()
    if as_json:
        print_json(facts)
        return
    version = f"{facts['schema_version']} (this factory: {facts['latest_schema_version']})"
    if facts["schema_version"] == 0:
        version = "none: not created yet (`factory init`, or the first write of a new SQLite catalog)"
    elif facts["schema_version"] < facts["latest_schema_version"]:
        version += ": run `factory catalog migrate`"
    matches = {True: "yes", False: "NO: home and catalog belong to different stores", None: "-"}[facts["matches"]]
    table = Table(title="catalog", show_header=False)
    for label, value in (("backend", facts["backend"]), ("location", facts["location"]), ("schema version", version),
                         ("store id", facts["store_id"] or "-"), ("made for home", facts["catalog_home"] or "-"),
                         ("home", facts["home"]), ("home's store id", facts["home_store_id"] or "-"),
                         ("home's catalog", facts["home_catalog"] or "-"), ("home and catalog match", matches)):
        table.add_row(label, escape(str(value)))
    console.print(table)


@app.command()
def migrate(home: str = HomeOption, catalog: str = CatalogOption) -> None:
    """Apply the schema migrations the catalog lacks, in one transaction. A PostgreSQL catalog needs
    this after factory is upgraded (a SQLite one upgrades itself when opened)."""
    from rich.markup import escape

    store = open_store(home, catalog)
    target = store.bare_catalog
    if target.backend == "sqlite" and target.schema_version() == 0 and not os.path.exists(target.location):
        fail(f"there is no catalog at {target.location}: check FACTORY_CATALOG or --catalog (a new catalog is made "
             "by `factory init` or by the store's first write)")
    applied = target.migrate()
    where = escape(target.location)
    if not applied:
        console.print(f"{where} is up to date (schema version {target.schema_version()})", highlight=False)
        return
    console.print(f"{where}: applied migrations {', '.join(str(m.version) for m in applied)} "
                  f"(schema version {applied[-1].version})", highlight=False)
    for m in applied:
        console.print(f"  {m.version}  {escape(m.summary)}", highlight=False)
    if store.catalog_info()["store_id"] is None:
        console.print("no store id recorded yet: run `factory init` to record it", highlight=False)
