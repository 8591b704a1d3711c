"""The ``onerec`` command: one subcommand per pipeline stage, each a plain function in its stage module.

Stage modules keep heavy imports (torch, faiss) inside their command functions so ``onerec --help`` is fast.
Expected errors (bad input, bad config) print one line ``error: ...`` and exit with status 2, no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from onerec import __version__

app = typer.Typer(
    name="onerec",
    help="OneRec: semantic IDs, an encoder-decoder with an MoE decoder, a session reward model and iterative DPO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("version")
def version() -> None:
    """Print the onerec version."""
    typer.echo(__version__)


@app.command("report")
def report_command(
    run: Annotated[Path, typer.Option("--run", help="Pipeline run directory.")],
) -> None:
    """Write RUN/report.html from the stages that have run."""
    from onerec.report import write_report

    typer.echo(f"report: {write_report(run)}")


def pipeline_command(
    config: Annotated[Path, typer.Option("--config", help="TOML file with a \\[pipeline] table and stage tables.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory (one subdirectory per stage).")],
    from_stage: Annotated[str | None, typer.Option("--from", help="Rerun this stage and every stage after it.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. train.epochs=2.")] = None,
) -> None:
    """The main job: data -> embed -> tokenize -> train -> baselines -> reward -> align -> evaluate -> report."""
    from onerec.pipeline import run_pipeline

    run_pipeline(config, out, list(set_ or []), from_stage)
    typer.echo(f"done: open {out / 'report.html'}")


_registered = False


def _register() -> None:
    """Attach each stage's commands (the order is the pipeline's); idempotent."""
    global _registered
    if _registered:
        return
    _registered = True
    # One block per stage, in pipeline order; each stage's CLI module keeps heavy imports inside its functions.
    from onerec.simulate.cli import app as simulate_app

    app.add_typer(simulate_app, name="simulate")
    from onerec.data.cli import app as data_app

    app.add_typer(data_app, name="data")
    from onerec.embed.cli import embed_command

    app.command("embed")(embed_command)
    from onerec.tokenizer.cli import tokenize as tokenize_command

    app.command("tokenize")(tokenize_command)
    from onerec.train_cli import train as train_command

    app.command("train")(train_command)
    from onerec.evaluate.cli import baseline as baseline_command
    from onerec.evaluate.cli import compare as compare_command
    from onerec.evaluate.cli import evaluate as evaluate_command
    from onerec.evaluate.cli import seeds as seeds_command
    from onerec.evaluate.cli import tune as tune_command

    app.command("evaluate")(evaluate_command)
    app.command("tune")(tune_command)
    app.command("compare")(compare_command)
    app.command("seeds")(seeds_command)
    app.command("baseline")(baseline_command)
    from onerec.reward.cli import app as reward_app

    app.add_typer(reward_app, name="reward")
    from onerec.align.cli import align_command, sample_server_command

    app.command("align")(align_command)
    app.command("sample-server")(sample_server_command)
    from onerec.serve.cli import serve_command

    app.command("pipeline")(pipeline_command)

    app.command("serve")(serve_command)


def main(argv: list[str] | None = None) -> int:
    from onerec.config import ConfigError
    from onerec.io import OnerecError

    _register()
    try:
        app(args=argv, standalone_mode=False)
    except (OnerecError, ConfigError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except Exception as err:  # click usage errors come as click.exceptions.ClickException
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            return err.exit_code
        if isinstance(err, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
