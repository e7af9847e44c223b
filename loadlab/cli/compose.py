"""`loadlab compose`: the lab's Docker Compose twin (compose/), from the knobs and the roles' templates."""

from __future__ import annotations

from pathlib import Path

import click

from loadlab.cli.usage import OneLineCommand, OneLineGroup
from loadlab.console import console, fail


@click.group(cls=OneLineGroup)
def compose() -> None:
    """The lab as `docker compose up`: one host, the same knobs, templates and dashboards."""


@compose.command(cls=OneLineCommand)
@click.option(
    "-i",
    "--inventory",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Inventory holding the twin's knobs (default: inventory/compose.yml of this project).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where compose.yml and its config files go (default: the folder of the inventory's "
    "loadlab_compose_file, compose/).",
)
@click.option("--check", is_flag=True, help="Write nothing; fail when the folder differs from the render.")
def render(inventory: Path | None, out_dir: Path | None, check: bool) -> None:
    """Write compose.yml and its configs, and secrets/compose/ (passwords, generated where missing, 0600)."""
    from loadlab import compose as twin
    from loadlab.lab import Lab, default_inventory

    if inventory is None:
        inventory = default_inventory().parent / twin.DEFAULT_INVENTORY.name
    lab = Lab.load(inventory)
    out = out_dir if out_dir is not None else twin.default_out_dir(lab)
    if check:
        files = twin.render(lab, out).files
        stale = twin.stale_files(out, files)
        if stale:
            fail(f"{out} is out of date ({', '.join(stale)}): run `loadlab compose render`", code=1)
        console.print(f"{out}: {len(files)} files up to date", soft_wrap=True)
        return
    twin.render(lab, out)  # every knob checked before a password is generated
    passwords = twin.ensure_passwords(lab.secrets_dir)
    rendered = twin.render(lab, out, passwords)
    written = twin.write_files(out, rendered.files)
    folder = twin.write_secret_files(lab.secrets_dir, rendered.secret_files)
    console.print(f"wrote {len(written)} files to {out}", soft_wrap=True)
    console.print(
        f"wrote {len(rendered.secret_files)} files to {folder} (mode 0600: passwords, git-ignored)",
        soft_wrap=True,
    )
    console.print(f"next: docker compose -f {out / twin.COMPOSE_FILE} up -d", soft_wrap=True, markup=False)
