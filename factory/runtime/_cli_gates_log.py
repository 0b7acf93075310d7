"""``factory attest`` (verify the transparency log, prove an entry) and ``factory keys`` (mounted by ``_cli_gates``)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import typer

from factory.runtime._cli_common import HomeOption, JsonOption, console, err_console, open_store, plain, print_json

if TYPE_CHECKING:
    from factory.gates import KeyRing, LogReport
    from factory.store import Store

attest_app = typer.Typer(help="The transparency log of attestations: verify it, prove an entry.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys and the trusted public keys (FACTORY_KEYS).", no_args_is_help=True)


def _keys(store: Store) -> KeyRing:
    from factory.gates import KeyRing

    return KeyRing.from_settings(store.settings)


@attest_app.command()
def verify(full: bool = typer.Option(False, "--full", help="Check every signature, even those this verifier "
                                                           "checked before (its receipt is not used)."),
           home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Check every entry, every signature and the chain of signed checkpoints. Exit 1 if anything is wrong."""
    from factory.gates import Receipts, attestation_log

    store = open_store(home)
    keys = _keys(store)
    log = attestation_log(store, keys=keys)
    report = log.verify(receipts=Receipts(keys), full=full)
    if as_json:
        print_json(_report_json(report))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _report_json(report: LogReport) -> dict[str, Any]:
    latest = report.latest
    return {"origin": report.origin, "ok": report.ok, "entries": report.entries, "checkpoints": report.checkpoints,
            "covered": report.covered, "uncovered": report.uncovered,
            "latest": {"size": latest.size, "root": base64.b64encode(latest.root).decode()} if latest else None,
            "signatures_checked": report.signatures_checked, "signatures_skipped": report.signatures_skipped,
            "receipt": report.receipt,
            "problems": [{"kind": p.kind, "index": p.index, "record": p.record, "detail": p.detail}
                         for p in report.problems]}


def _print_report(report: LogReport) -> None:
    from rich.table import Table

    latest = report.latest
    head = (f"log {report.origin}: {report.entries} entries, {report.checkpoints} checkpoints"
            + (f", latest signs size {latest.size} root {base64.b64encode(latest.root).decode()}" if latest else ""))
    console.print(plain(head), highlight=False, soft_wrap=True)
    console.print(f"signatures checked {report.signatures_checked}, skipped {report.signatures_skipped} "
                  f"(unchanged since this verifier's receipt: {plain(report.receipt)})", highlight=False)
    if report.uncovered:
        console.print(f"{report.uncovered} entries are not yet covered by a signed checkpoint", highlight=False)
    if report.ok:
        console.print("[green]ok[/]: every entry, signature and checkpoint verifies", highlight=False)
        return
    table = Table(title=f"[red]{len(report.problems)} problem(s)[/]", title_justify="left")
    for col in ("entry", "checkpoint", "problem", "detail"):
        table.add_column(col, overflow="fold")
    for p in report.problems:
        table.add_row("" if p.index is None else str(p.index), "" if p.record is None else str(p.record),
                      plain(p.kind), plain(p.detail))
    console.print(table)


@attest_app.command()
def prove(index: int = typer.Argument(..., min=0, help="The log index of the entry (see 'factory gates show')."),
          home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Prove that entry INDEX is in the newest signed checkpoint: the proof, printed and checked."""
    from factory.gates import attestation_log, leaf_hash
    from factory.gates.attestations import read_statement

    store = open_store(home)
    log = attestation_log(store, keys=_keys(store))
    checkpoint, proof, entry = log.prove(index)  # checked: raises when the entry does not match
    statement = read_statement(entry)
    subject = statement["subject"][0]
    summary = {"subject": f"{subject.get('name')} sha256:{subject['digest']['sha256']}",
               "predicate_type": statement["predicateType"],
               "verdict": statement.get("predicate", {}).get("verdict")}
    b64 = lambda h: base64.b64encode(h).decode()  # noqa: E731
    if as_json:
        print_json({"index": index, "leaf_hash": b64(leaf_hash(entry)), "tree_size": proof.size,
                    "root": b64(checkpoint.root), "proof": [b64(h) for h in proof.hashes], "verified": True,
                    "checkpoint": log.signed_checkpoint(), **summary})
        return
    console.print(plain(f"entry {index}: {summary['predicate_type']} about {summary['subject']}, verdict "
                        f"{summary['verdict']}"), highlight=False, soft_wrap=True)
    console.print(f"leaf hash  {b64(leaf_hash(entry))}", highlight=False)
    console.print(plain(f"checkpoint (signed note):\n{log.signed_checkpoint()}"), highlight=False, soft_wrap=True)
    console.print(f"inclusion proof, {len(proof.hashes)} hashes:", highlight=False)
    for h in proof.hashes:
        console.print(f"  {b64(h)}", highlight=False)
    console.print(f"[green]verified[/]: entry {index} is in the tree of size {proof.size} with root "
                  f"{b64(checkpoint.root)}", highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """The trusted public keys (active, retired, revoked) and this machine's signing keys."""
    from rich.table import Table

    keys = _keys(open_store(home))
    trusted = sorted(keys.trusted(), key=lambda k: k.added_at)
    signing = {p.stem for p in keys.path.glob("*.key")} if keys.path.exists() else set()
    if as_json:
        print_json({"folder": str(keys.path), "signing": sorted(signing), "trusted": [k.to_dict() for k in trusted]})
        return
    table = Table(title=plain(f"keys in {keys.path}"), title_justify="left")
    for col in ("key id", "name", "status", "added", "retired/revoked", "signs here"):
        table.add_column(col, overflow="fold")
    for k in trusted:
        ended = k.revoked_at or k.retired_at
        table.add_row(k.keyid[:16], plain(k.name), k.status, f"{k.added_at:%Y-%m-%d %H:%M}",
                      f"{ended:%Y-%m-%d %H:%M}" if ended else "",
                      "yes" if k.status == "active" and k.name in signing else "")
    console.print(table)


@keys_app.command()
def rotate(name: str = typer.Argument("attestation", help="The signing key to replace (attestation or log)."),
           home: str = HomeOption) -> None:
    """Replace a signing key: the old one is retired (what it signed still verifies), a new one signs from now on."""
    signer = _keys(open_store(home)).rotate(name)
    console.print(plain(f"{name}: new key {signer.keyid[:16]}; the previous one is retired"), highlight=False)


@keys_app.command()
def export(name: str = typer.Argument("attestation", help="The signing key whose public half to print."),
           home: str = HomeOption) -> None:
    """Print a signing key's public key (base64), for 'factory keys trust' on another machine."""
    signer = _keys(open_store(home)).signer(name)
    console.print(base64.b64encode(signer.public_key).decode(), highlight=False)
    err_console.print(f"key id {signer.keyid}", highlight=False)


@keys_app.command()
def trust(public_key: str = typer.Argument(..., help="An Ed25519 public key, base64 (from 'factory keys export')."),
          name: str = typer.Option(..., "--name", help="A name for it (e.g. the signer's host)."),
          home: str = HomeOption) -> None:
    """Trust another signer's public key, so its attestations and checkpoints verify here."""
    import binascii

    from factory.runtime._cli_common import fail

    try:
        key = _keys(open_store(home)).trust(public_key, name)
    except binascii.Error:
        fail(f"{public_key!r} is not base64: paste the output of 'factory keys export'")
    console.print(plain(f"trusted {key.keyid[:16]} ({key.name})"), highlight=False)


@keys_app.command()
def revoke(keyid: str = typer.Argument(..., help="At least 8 characters of the key id (see 'factory keys list').")
           , home: str = HomeOption) -> None:
    """Stop trusting a key for anything, past signatures included (a leaked key)."""
    key = _keys(open_store(home)).revoke(keyid)
    console.print(plain(f"revoked {key.keyid[:16]} ({key.name}): nothing it signed verifies any more"),
                  highlight=False)
