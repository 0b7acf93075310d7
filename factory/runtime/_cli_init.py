"""``factory init``: set up a store's catalog and record the store's identity in it and in the home."""

from __future__ import annotations

from factory.runtime._cli_common import CatalogOption, HomeOption, JsonOption, console, open_store, print_json


def init(home: str = HomeOption, catalog: str = CatalogOption, as_json: bool = JsonOption) -> None:
    """Make a store, or check one: create or upgrade its catalog (the way to set up a PostgreSQL
    catalog) and record the store's id in the catalog and in the home (<home>/STORE_ID).
    Running it again is harmless; a home and a catalog of two different stores are refused."""
    from rich.markup import escape

    identity = open_store(home, catalog).init()
    if as_json:
        print_json(identity.__dict__)
        return
    state = "new" if identity.created else "existing"
    console.print(f"store {identity.store_id} ({state})", highlight=False)
    console.print(f"  home     {escape(identity.home)}", highlight=False)
    console.print(f"  catalog  {escape(identity.catalog)} ({identity.backend}, schema version {identity.schema_version})",
                  highlight=False)
    if identity.migrations:
        console.print(f"  applied migrations {', '.join(map(str, identity.migrations))}", highlight=False)


COMMANDS = {"init": init}
