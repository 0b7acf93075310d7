"""``factory tickets``: remediation tickets opened by failed gates (mounted by ``_cli_gates``)."""

from __future__ import annotations

import typer

from factory.runtime._cli_common import HomeOption, JsonOption, console, open_store, plain, print_json, short_digest

tickets_app = typer.Typer(help="Remediation tickets opened by failed gates: list (open ones by default), show, close.",
                          invoke_without_command=True)


@tickets_app.callback()
def tickets(ctx: typer.Context,
            include_closed: bool = typer.Option(False, "--all", help="Closed tickets too."),
            home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """The open tickets (with --all, the closed ones too), oldest first."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from factory.gates import list_tickets

    found = list_tickets(open_store(home), include_closed=include_closed)
    if as_json:
        print_json([t.to_dict() for t in found])
        return
    state = "" if include_closed else "open "
    table = Table(title=f"{len(found)} {state}tickets", title_justify="left")
    for col in ("id", "state", "model", "policy", "what failed", "opened"):
        table.add_column(col, overflow="fold", no_wrap=col in ("id", "state"))
    for t in found:
        colour = "red" if t.is_open else "dim"
        table.add_row(plain(t.id), f"[{colour}]{t.state}[/]", plain(f"{t.subject_name} {short_digest(t.subject)}"),
                      plain(t.policy), plain(t.failure), plain(t.opened_at[:16].replace("T", " ")))
    console.print(table)


@tickets_app.command()
def show(ticket: str = typer.Argument(..., help="The ticket id (see 'factory tickets')."), home: str = HomeOption,
         as_json: bool = JsonOption) -> None:
    """One ticket: what failed, the evidence, the suggested fix, and its history."""
    from factory.gates import get_ticket

    store = open_store(home)
    found = get_ticket(store, ticket)
    if as_json:
        print_json(found.to_dict())
        return
    rows = [("ticket", f"{found.id} ({found.state})"), ("model", f"{found.subject_name} {found.subject}"),
            ("policy", found.policy), ("failed", found.failure), ("fix", found.suggestion),
            ("attested", f"{found.attestation} (log index {found.index}, run {found.run})"),
            ("opened", f"{found.opened_at} by {found.opened_by}")]
    if not found.is_open:
        rows.append(("closed", f"{found.closed_at} by {found.closed_by}: {found.closed_reason}"))
    rows += [(f"evidence {k}", v) for k, v in found.evidence.items()]
    for label, value in rows:
        console.print(f"[bold]{plain(label):<10}[/bold] {plain(value)}", highlight=False, soft_wrap=True)
    for change in store.refs.history(f"ticket/{found.id}"):
        console.print(plain(f"  {change.at[:19]} {change.actor}: {change.reason}"), highlight=False)


@tickets_app.command()
def close(ticket: str = typer.Argument(..., help="The ticket id (see 'factory tickets')."),
          reason: str = typer.Option(..., "--reason", help="What was done about it (kept in the ticket's history)."),
          home: str = HomeOption) -> None:
    """Close an open ticket, saying why."""
    from factory.gates import close_ticket

    closed = close_ticket(open_store(home), ticket, reason=reason)
    console.print(plain(f"closed {closed.id}: {closed.closed_reason}"), highlight=False)
