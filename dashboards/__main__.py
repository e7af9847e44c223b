"""`python -m loadlab.dashboards` regenerates json/; `--check` fails when json/ differs from the code."""

from __future__ import annotations

from pathlib import Path

import click

from loadlab.console import console, fail
from loadlab.dashboards import JSON_DIR, generate


def stale_files(out_dir: Path) -> list[str]:
    """Files in out_dir that differ from the generated JSON, are missing, or are left over."""
    wanted = generate()
    stale = [
        name
        for name, text in wanted.items()
        if not (out_dir / name).is_file() or (out_dir / name).read_text() != text
    ]
    extra = [p.name for p in out_dir.glob("*.json") if p.name not in wanted] if out_dir.is_dir() else []
    return sorted(stale + extra)


@click.command()
@click.option("--check", is_flag=True, help="Fail when the committed JSON differs from what the code builds.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=JSON_DIR,
    show_default=True,
    help="Where the JSON goes.",
)
def main(check: bool, out_dir: Path) -> None:
    """Generate the Grafana dashboards' JSON from the dashboard modules."""
    if check:
        stale = stale_files(out_dir)
        if stale:
            fail(
                f"{out_dir} is out of date ({', '.join(stale)}): run `python -m loadlab.dashboards`",
                code=1,
            )
        console.print(f"{out_dir}: {len(generate())} dashboards up to date")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = generate()
    for name, text in wanted.items():
        (out_dir / name).write_text(text)
    for path in out_dir.glob("*.json"):
        if path.name not in wanted:
            path.unlink()
    console.print(f"wrote {len(wanted)} dashboards to {out_dir}")


if __name__ == "__main__":
    main()
