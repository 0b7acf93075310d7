"""``factory gates``: judge a candidate, show its results, override a failed gate, check admission.

The area also mounts ``factory attest`` (verify the transparency log, prove an entry),
``factory tickets`` (remediation tickets) and ``factory keys`` (signing and trusted
keys), from ``_cli_gates_log`` and ``_cli_gates_tickets``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer

from factory.runtime._cli_common import (
    HomeOption,
    JsonOption,
    console,
    err_console,
    fail,
    open_store,
    parse_time,
    plain,
    print_json,
    short_digest,
)
from factory.runtime._cli_gates_log import attest_app, keys_app
from factory.runtime._cli_gates_tickets import tickets_app

if TYPE_CHECKING:
    from factory.gates import Admission, GateInputs, GateRun, PolicyResult

app = typer.Typer(help="Policy gates: run a policy set on a candidate, show results, override, admit.",
                  no_args_is_help=True)
env_app = typer.Typer(help="Environment policies: what dev, staging, prod (and yours) require.", no_args_is_help=True)
app.add_typer(env_app, name="env")
GROUPS = {"attest": attest_app, "tickets": tickets_app, "keys": keys_app}

_THRESHOLD = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(>=|<=)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")
VERDICT = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "conditional": "[yellow]conditional[/]"}


def _thresholds(values: list[str]) -> dict[str, dict[str, float]] | None:
    if not values:
        return None
    out: dict[str, dict[str, float]] = {}
    for text in values:
        match = _THRESHOLD.match(text)
        if not match:
            fail(f"--threshold {text!r} is not a bound: write METRIC>=VALUE or METRIC<=VALUE, e.g. accuracy>=0.9")
        name, op, value = match.groups()
        out.setdefault(name, {})["min" if op == ">=" else "max"] = float(value)
    return out


def figures_text(figures: Mapping[str, Any], limit: int = 6) -> str:
    """A result's figures as ``name=value`` pairs, the first ``limit`` of them."""
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(figures.items())[:limit]]
    more = len(figures) - limit
    return plain("\n".join(shown) + (f"\n+{more} more" if more > 0 else ""))


def short_type(predicate_type: str) -> str:
    """``.../policy/fairness/v1`` -> ``fairness/v1``: enough to tell predicate types apart in a table."""
    parts = predicate_type.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else predicate_type


@app.command("run")
def run(
    candidate: str = typer.Argument(..., help="A model digest (or unique prefix), or its candidate ref."),
    set_name: str = typer.Option("prod", "--set", help="A built-in set (dev, staging, prod) or a YAML policy set file."),
    dataset: str = typer.Option(None, "--dataset", help="Evaluation dataset version (quality, fairness): NAME[@V]."),
    label: str = typer.Option(None, "--label", help="Its label column."),
    features: str = typer.Option(None, "--features", help="Columns stacked into the model's input, comma-separated."),
    threshold: list[str] = typer.Option([], "--threshold", help="A quality bound, METRIC>=X or METRIC<=X (repeat)."),
    sensitive: str = typer.Option(None, "--sensitive", help="The column fairness compares groups by."),
    reference: str = typer.Option(None, "--reference", help="Drift: the dataset version the model was trained on."),
    current: str = typer.Option(None, "--current", help="Drift: the dataset version to compare with it."),
    directory: str = typer.Option(None, "--directory", help="Security: a folder the model was imported from."),
    rerun: bool = typer.Option(False, "--rerun", help="Judge again even if this set already judged this candidate."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Judge a candidate with a policy set: every result signed, logged, recorded; a ticket per failure.

    Exit status: 0 when every policy passes; 1 when one fails (see 'factory tickets');
    2 on bad input (a set that needs an input you did not give names it).
    """
    from factory.gates import GateInputs, policy_set, run_gate

    store = open_store(home)
    feature_list = tuple(f.strip() for f in features.split(",") if f.strip()) if features else None
    fields = dict(dataset=dataset, label=label, features=feature_list, thresholds=_thresholds(threshold),
                  sensitive=sensitive, reference=reference, current=current, directory=directory)
    inputs = GateInputs(**{k: v for k, v in fields.items() if v is not None})
    pset = policy_set(set_name, inputs)
    if not as_json:
        err_console.print(plain(f"judging {candidate} with the {pset.name} set: "
                                + ", ".join(p.id for p in pset.policies)), highlight=False)

    def progress(result: PolicyResult) -> None:
        if not as_json:
            err_console.print(f"  {plain(result.policy):<14} {VERDICT.get(str(result.verdict), result.verdict)}  "
                              f"{plain(result.reason[:120])}", highlight=False)

    gate = run_gate(store, candidate, pset, rerun=rerun, on_result=progress)
    if gate.reused and not as_json:
        err_console.print(plain(f"  already judged by run {gate.run.id}: its results follow (--rerun to judge "
                                "again)"), highlight=False)
    if as_json:
        print_json(gate_json(gate))
    else:
        _print_gate(gate)
    if not gate.passed:
        raise typer.Exit(1)


def gate_json(gate: GateRun) -> dict[str, Any]:
    return {"run": gate.run.id, "subject": gate.subject, "name": gate.subject_name, "set": gate.set_name,
            "passed": gate.passed, "reused": gate.reused, "first": gate.first,
            "outcomes": [{**o.result.to_dict(), "predicate_type": o.predicate_type, "attestation": o.attestation,
                          "index": o.index, "ticket": o.ticket} for o in gate.outcomes]}


def _print_gate(gate: GateRun) -> None:
    from rich.table import Table

    title = f"{gate.set_name} gate on {gate.subject_name} {short_digest(gate.subject)} (run {gate.run.id}" \
            + (", recorded earlier" if gate.reused else "") + ")"
    table = Table(title=plain(title), title_justify="left")
    for col in ("policy", "verdict", "reason", "figures", "log", "ticket"):
        table.add_column(col, overflow="fold", no_wrap=col in ("policy", "verdict", "log"))
    for o in gate.outcomes:
        table.add_row(plain(o.policy), VERDICT.get(str(o.result.verdict), str(o.result.verdict)),
                      plain(o.result.reason), figures_text(o.result.figures), str(o.index), plain(o.ticket or ""))
    console.print(table)
    failed = [o.policy for o in gate.failed]
    if failed:
        console.print(plain(f"{len(failed)} of {len(gate.outcomes)} failed: {', '.join(failed)}. Tickets: "
                            "'factory tickets'; to accept one: 'factory gates override DIGEST --policy ID --reason'"),
                      highlight=False)
    else:
        console.print(f"all {len(gate.outcomes)} policies passed", highlight=False)


@app.command()
def show(candidate: str = typer.Argument(..., help="A model digest (or unique prefix), or its candidate ref."),
         home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """The newest result of every policy on a candidate, each checked against the log, and its overrides."""
    from rich.table import Table

    from factory.gates import latest_results, list_tickets, resolve_candidate

    store = open_store(home)
    subject, name = resolve_candidate(store, candidate)
    results, overrides = latest_results(store, subject)
    tickets = list_tickets(store, subject=subject)
    if as_json:
        print_json({"subject": subject, "name": name, "results": [_logged_json(e) for e in results],
                    "overrides": [_logged_json(e) for e in overrides], "tickets": [t.id for t in tickets]})
        return
    if not results:
        console.print(plain(f"no gate results for {name} {subject}: run 'factory gates run {short_digest(subject)}'"),
                      highlight=False)
        return
    table = Table(title=plain(f"gate results for {name} {short_digest(subject)}"), title_justify="left")
    for col in ("policy", "verdict", "reason", "figures", "log", "evaluated", "checked"):
        table.add_column(col, overflow="fold", no_wrap=col in ("policy", "verdict", "log"))
    for e in results:
        result = e.attestation.result() if e.attestation else None
        when = e.attestation.evaluated_at.strftime("%Y-%m-%d %H:%M") if e.attestation and e.attestation.evaluated_at \
            else ""
        table.add_row(plain(e.policy), VERDICT.get(e.verdict, plain(e.verdict)), plain(result.reason if result else ""),
                      figures_text(result.figures) if result else "", str(e.index), when, _checked(e.problem))
    console.print(table)
    if overrides:
        table = Table(title="overrides", title_justify="left")
        for col in ("policy", "by", "reason", "log", "when", "checked"):
            table.add_column(col, overflow="fold")
        for e in overrides:
            p = e.attestation.predicate if e.attestation else {}
            when = e.attestation.evaluated_at.strftime("%Y-%m-%d %H:%M") if e.attestation and \
                e.attestation.evaluated_at else ""
            table.add_row(plain(e.policy), plain(p.get("actor", "")), plain(p.get("reason", "")), str(e.index), when,
                          _checked(e.problem))
        console.print(table)
    if tickets:
        console.print(plain("open tickets: " + ", ".join(t.id for t in tickets)), highlight=False)


def _checked(problem: str | None) -> str:
    return "[green]verified[/]" if problem is None else f"[red]{plain(problem)}[/]"


def _logged_json(e) -> dict[str, Any]:
    out = {"policy": e.policy, "kind": e.kind, "verdict": e.verdict, "predicate_type": e.predicate_type,
           "index": e.index, "attestation": e.digest, "verified": e.ok, "problem": e.problem}
    if e.attestation is not None:
        out["predicate"] = dict(e.attestation.predicate)
    return out


@app.command()
def override(
    candidate: str = typer.Argument(..., help="A model digest (or unique prefix), or its candidate ref."),
    policy: str = typer.Option(..., "--policy", help="The id of the failed policy to accept."),
    reason: str = typer.Option(..., "--reason", help="Why the failure is accepted (kept in the log)."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Accept a failed gate: a signed override by you (FACTORY_ACTOR), in the transparency log."""
    from factory.gates import override as make_override

    done = make_override(open_store(home), candidate, policy, reason=reason)
    if as_json:
        print_json(done.__dict__)
        return
    console.print(plain(f"{done.actor} overrode {done.policy} on {short_digest(done.subject)}: log index "
                        f"{done.index}, override {done.digest}")
                  + (plain(f"; ticket {done.ticket} closed") if done.ticket else ""), highlight=False)


@app.command()
def admit(candidate: str = typer.Argument(..., help="A model digest (or unique prefix), or its candidate ref."),
          env: str = typer.Option(..., "--env", help="The environment: dev, staging, prod or a configured one."),
          home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Would this environment serve the candidate? Exit 0 if admitted, 1 if refused (saying what is missing)."""
    from factory.gates import admit as check_admission, resolve_candidate

    store = open_store(home)
    subject, _ = resolve_candidate(store, candidate)
    admission = check_admission(store, subject, env)
    if as_json:
        print_json(admission_json(admission))
    else:
        print_admission(admission)
    if not admission.allowed:
        raise typer.Exit(1)


def admission_json(admission: Admission) -> dict[str, Any]:
    return {"environment": admission.environment, "package": admission.package, "allowed": admission.allowed,
            "requirements": [{"predicate_type": r.predicate_type, "met": r.met, "reason": r.reason,
                              "overridden": r.overridden,
                              "index": r.attestation.index if r.attestation else None} for r in admission.requirements]}


def print_admission(admission: Admission) -> None:
    from rich.table import Table

    verdict = "[green]admitted[/]" if admission.allowed else "[red]refused[/]"
    table = Table(title=f"{plain(admission.environment)}: {short_digest(admission.package)} {verdict}",
                  title_justify="left")
    for col in ("requires", "met", "why", "log"):
        table.add_column(col, overflow="fold")
    for r in admission.requirements:
        met = "[yellow]override[/]" if r.overridden else ("[green]yes[/]" if r.met else "[red]no[/]")
        index = r.attestation.index if r.attestation is not None and r.attestation.index is not None else ""
        table.add_row(plain(short_type(r.predicate_type)), met, plain(r.reason), str(index))
    console.print(table)


@app.command()
def friction(since: str = typer.Option(None, "--since", help="Candidates first gated at or after (ISO; UTC if no zone)."),
             set_name: str = typer.Option(None, "--set", help="Only gate runs of this set."),
             home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Promotion friction: the share of candidates that failed their first gate run."""
    from factory.gates import promotion_friction

    found = promotion_friction(open_store(home), since=parse_time(since, "--since", naive_is_utc=True),
                               set_name=set_name)
    if as_json:
        print_json({"candidates": found.candidates, "failed_first": found.failed_first, "share": found.share,
                    "failed": list(found.failed)})
        return
    share = "n/a" if found.share is None else f"{found.share:.1%}"
    console.print(f"promotion friction {share}: {found.failed_first} of {found.candidates} candidates failed their "
                  "first gate run", highlight=False)


@env_app.command("list")
def env_list(home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Every environment and what it requires (the defaults are written on first use)."""
    from rich.table import Table

    from factory.gates import list_environments

    envs = list_environments(open_store(home))
    if as_json:
        print_json({name: p.model_dump(mode="json") for name, p in envs.items()})
        return
    table = Table(title="environments")
    for col in ("env", "requires", "fresh for", "overridable", "keys"):
        table.add_column(col, overflow="fold")
    for name, p in envs.items():
        overridable = "any" if p.overridable is None else ", ".join(short_type(t) for t in p.overridable) or "none"
        keys = "every trusted key" if p.trusted_keys is None else ", ".join(k[:16] for k in p.trusted_keys)
        table.add_row(plain(name), plain(", ".join(short_type(t) for t in p.requires)), _age(p.max_age),
                      plain(overridable), keys)
    console.print(table)


def _age(age) -> str:
    days, seconds = age.days, age.seconds
    parts = ([f"{days} day{'s' if days != 1 else ''}"] if days else []) + ([f"{seconds // 3600} h"] if seconds >= 3600
                                                                          else []) \
        + ([f"{seconds % 3600 // 60} min"] if seconds % 3600 >= 60 else [])
    return " ".join(parts) or f"{age.total_seconds():g} s"


@env_app.command("set")
def env_set(file: str = typer.Argument(..., help="A YAML environment policy (name, requires, max_age, ...)."),
            reason: str = typer.Option(..., "--reason", help="Why it changes (kept in the ref's history)."),
            home: str = HomeOption) -> None:
    """Change what an environment requires (a ref move: protected environments need an actor their rule lists)."""
    import yaml
    from pydantic import ValidationError

    from factory.gates import EnvironmentPolicy, set_environment

    try:
        with open(file, encoding="utf-8") as f:
            policy = EnvironmentPolicy.model_validate(yaml.safe_load(f))
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    except yaml.YAMLError as exc:
        fail(f"{file} is not valid YAML: {exc}")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        fail(f"{file}: {'.'.join(str(p) for p in first['loc']) or 'the policy'}: {first['msg']}")
    change = set_environment(open_store(home), policy, reason=reason)
    console.print(plain(f"policy/env/{policy.name} -> {change.new} (by {change.actor})"), highlight=False)
