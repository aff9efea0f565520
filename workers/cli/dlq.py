"""``rampwatch dlq``: dead letters, i.e. work that failed for good, listed, requeued, purged.

The sources and their summaries are ``workers.deadletters`` (the console reads the same).
"""

from __future__ import annotations

from dataclasses import asdict

import click

from workers.cli.common import Failure, Runtime, emit_json, json_option, pass_runtime, say, table, when
from workers.deadletters import sources


@click.group()
def dlq() -> None:
    """Dead letters: jobs that failed for good (RQ's failed registries of every queue)."""


@dlq.command("list")
@json_option
@pass_runtime
def list_letters(rt: Runtime, as_json: bool) -> None:
    """Failed jobs: id, function, a summary of its arguments (no raw bodies), the
    error's last line, when it failed."""
    letters = [letter for source in sources(rt.redis()) for letter in source.list()]
    letters.sort(key=lambda d: (d.failed_at is None, d.failed_at), reverse=True)
    if as_json:
        emit_json({"dead_letters": [{**asdict(d), "failed_at": when(d.failed_at)} for d in letters]})
        return
    if not letters:
        say("no dead letters")
        return
    rows = [(d.source, d.id, d.function.rsplit(".", 1)[-1], d.args, d.error, d.failed_at) for d in letters]
    click.echo(table(("source", "id", "function", "args", "error", "failed at"), rows))


@dlq.command("requeue")
@click.argument("letter_id", required=False)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@json_option
@pass_runtime
def requeue(rt: Runtime, letter_id: str | None, everything: bool, as_json: bool) -> None:
    """Run a failed job again (ID), or every one (--all)."""
    if bool(letter_id) == everything:
        raise Failure("give one job ID or --all", code=2)
    done: list[str] = []
    for source in sources(rt.redis()):
        ids = [d.id for d in source.list()] if everything else [letter_id or ""]
        done += [f"{source.name} {i}" for i in ids if source.requeue(i)]
    if letter_id and not done:
        raise Failure(f"no dead letter {letter_id}")
    if as_json:
        emit_json({"requeued": done})
        return
    for item in done:
        click.echo(f"requeued {item}")
    if everything:
        click.echo(f"{len(done)} job(s) requeued")


@dlq.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_runtime
def purge(rt: Runtime, yes: bool, as_json: bool) -> None:
    """Delete every dead letter, for good: requeue first what should still run."""
    every = sources(rt.redis())
    count = sum(len(s.list()) for s in every)
    if count and not yes:
        click.confirm(f"delete {count} dead letter(s) for good?", abort=True, err=True)
    purged = sum(s.purge() for s in every) if count else 0
    if as_json:
        emit_json({"purged": purged})
    else:
        click.echo(f"{purged} dead letter(s) purged")
