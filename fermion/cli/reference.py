"""The command-line reference page, generated from the `fermion` command's own options.

    python -m fermion.cli.reference            # print the page
    python -m fermion.cli.reference --write    # rewrite docs/cli-reference.md
    python -m fermion.cli.reference --check    # exit 1 when docs/cli-reference.md is stale

Every command, argument and option comes from walking the command tree (what `--help` prints), so
the page cannot drift from the code; tests/test_cli_reference.py fails when it does. The
environment variables are listed in `ENVIRONMENT`, and that test checks the list against every
`FERMION_*` name the code reads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

#: Where `--write` puts the page, relative to the repository root.
PAGE = Path("docs") / "cli-reference.md"


@dataclass(frozen=True)
class EnvVar:
    """An environment variable Fermion reads: its name, who reads it and what it sets."""

    name: str
    read_by: str
    meaning: str


def _serve_variables() -> list[EnvVar]:
    """One `FERMION_<FIELD>` per `fermion serve` setting that ServeConfig.from_env reads (all but the TLS files)."""
    from fermion.serving.config import COMMAND_LINE_ONLY, ServeConfig

    notes = {
        "max_body_size": "; bytes or a size with a unit, e.g. `16MiB`, `10MB`",
        "access_log": "; `1`, `true`, `yes` or `on` turn it on, anything else off",
    }
    return [
        EnvVar(
            f"FERMION_{f.name.upper()}",
            "`fermion serve`, each replica",
            f"`--{f.name.replace('_', '-')}` when it is not on the command line{notes.get(f.name, '')}",
        )
        for f in fields(ServeConfig)
        if f.name not in COMMAND_LINE_ONLY
    ]


#: The variables beyond `fermion serve`'s settings. Order: what people set most first.
ENVIRONMENT = (
    EnvVar(
        "FERMION_URL",
        "every command that talks to the platform",
        "the platform's URL when `--url` is not given; without either, commands use the local `fermion up` of the default data dir",
    ),
    EnvVar(
        "FERMION_TOKEN",
        "platform commands, `fermion call`, `fermion bench`",
        "the API token when `--token` is not given; without either, platform commands read the local admin token",
    ),
    EnvVar(
        "FERMION_CA_CERT",
        "platform commands, `fermion call`, `Client`, `Platform`",
        "the PEM file of the CA that signed an https:// server's certificate when `--ca-cert` (`ca_cert=`) is not given; "
        "without either, the system's CAs. Verification is never turned off",
    ),
    EnvVar(
        "FERMION_HOME",
        "`fermion up`, `data`, `train`, `models`, `report`, `model:` sources",
        "the data dir (database, secret key, replica logs, admin token, datasets, models) when `--data-dir` is not given; default `~/.fermion`",
    ),
    EnvVar(
        "FERMION_DB",
        "`fermion up`",
        "the database URL when `--db` is not given, e.g. `postgresql://user:pw@host/db`; default SQLite in the data dir",
    ),
    EnvVar(
        "FERMION_SECRET_KEY",
        "`fermion up`, `fermion secrets rotate`",
        "the key that encrypts deployment secrets in the database (`fermion secrets new-key` makes one); several, "
        "comma-separated, newest first, while rotating; default `secret.key` in the data dir, made on the first start",
    ),
    EnvVar(
        "FERMION_RAY_ADDRESS",
        "`fermion up --backend ray`",
        "the Ray dashboard's address when `--ray-address` is not given; without either, `fermion up` starts a Ray head of its own",
    ),
    EnvVar(
        "FERMION_METRICS_INTERVAL_S",
        "`fermion up`",
        "seconds between the samples of the console's metrics history (default 5, from 0.1 to 3600)",
    ),
    EnvVar(
        "FERMION_LLM_MAX_SEQUENCES, FERMION_LLM_MAX_WAITING, FERMION_LLM_MAX_CACHE_TOKENS",
        "`hf:` text-generation sources",
        "the continuous-batching engine's bounds: requests generating at once (default 16), requests waiting to join "
        "(default 64; beyond, 429 with Retry-After) and KV-cache positions (default: sequences × the model's context); "
        "see docs/models/llm.md",
    ),
    EnvVar(
        "FERMION_LLM_DEVICE",
        "`hf:` text-generation sources",
        "the torch device the model runs on, e.g. `cuda:1` (default `cuda` when torch sees a GPU, else `cpu`); "
        "`fermion serve --device` wins over it",
    ),
    EnvVar(
        "FERMION_METRICS_DIR",
        "`fermion serve --workers N`",
        "set by `fermion serve` for its worker processes, which publish their counters there for `/metrics`; leave it unset",
    ),
    EnvVar(
        "FERMION_REPLICAS_DIR, FERMION_REPLICA_ID",
        "`fermion up` (local backend)",
        "set by the platform on each replica it starts, so that after a restart it finds its own replicas; leave them unset",
    ),
)

#: Variables of other libraries that Fermion sets or respects.
OTHER_ENVIRONMENT = (
    EnvVar(
        "HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE",
        "`st:` and `hf:` sources",
        "set to 1 unless you set them: models load from local folders and the Hugging Face cache, never the network",
    ),
    EnvVar(
        "HF_HOME, HF_HUB_CACHE", "`st:` and `hf:` sources", "where the Hugging Face cache is (default `~/.cache/huggingface`)"
    ),
    EnvVar(
        "OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS, NUMEXPR_NUM_THREADS",
        "`fermion serve`",
        "kept when you set them; otherwise set to `--compute-threads` before your code is imported",
    ),
    EnvVar(
        "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH",
        "`fermion up --backend ray --ray-address`",
        "the cluster's Ray auth token, or the file that holds it (else `~/.ray/auth_token`), as `ray job submit` reads it",
    ),
)


def environment() -> list[EnvVar]:
    """Every `FERMION_*` variable the code reads, `fermion serve`'s settings included, one entry per name."""
    listed = [*ENVIRONMENT[:4], *_serve_variables(), *ENVIRONMENT[4:]]
    return [EnvVar(name, v.read_by, v.meaning) for v in listed for name in v.name.split(", ")]


@dataclass
class Command:
    """One runnable command: its full name, usage, help text and (name, help) rows for its parameters."""

    path: str
    usage: str
    help: str
    rows: list[tuple[str, str]]


def _root() -> Any:
    import typer

    from fermion.cli import app

    return typer.main.get_command(app)


def _argument_name(param: Any) -> str:
    name = param.name.upper()
    if param.nargs == -1:
        name += "..."
    return name if param.required else f"[{name}]"


def commands() -> Iterator[Command]:
    """Every visible command, depth first in alphabetical order, with its visible parameters."""

    def walk(command: Any, path: list[str], parent: Any) -> Iterator[Command]:
        ctx = command.context_class(command, info_name=path[-1], parent=parent)
        subcommands = getattr(command, "commands", None)
        # A group runs on its own only with invoke_without_command (`fermion models` lists the source families).
        if subcommands is None or (command.invoke_without_command and len(path) > 1):
            yield _describe(command, path, ctx, grouped=subcommands is not None)
        for name in sorted(subcommands or {}):
            if not subcommands[name].hidden:
                yield from walk(subcommands[name], [*path, name], ctx)

    yield from walk(_root(), ["fermion"], None)


def _describe(command: Any, path: list[str], ctx: Any, grouped: bool) -> Command:
    """The usage line, help text and parameter rows of one command."""
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False) and p.name != "help"]
    arguments = [p for p in params if p.param_type_name == "argument"]
    usage = " ".join(
        [
            *path,
            "[OPTIONS]" if len(arguments) < len(params) else "",
            *map(_argument_name, arguments),
            "[COMMAND]" if grouped else "",
        ]
    )
    rows = []
    for param in params:
        if param.param_type_name == "argument":
            rows.append((param.name.upper(), getattr(param, "help", None) or ""))
        else:
            record = param.get_help_record(ctx)
            if record:
                rows.append(record)
    return Command(" ".join(path), " ".join(usage.split()), (command.help or "").strip(), rows)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _anchor(path: str) -> str:
    """The id GitHub gives the heading "### `fermion data add`"."""
    return path.replace(" ", "-")


def render() -> str:
    """The whole page, as Markdown."""
    found = list(commands())
    lines = [
        "# Command-line reference",
        "",
        "<!-- Generated by `python -m fermion.cli.reference --write` from the CLI's own options: do not edit by hand. -->",
        "",
        "Every `fermion` command with every argument and option, as `fermion COMMAND --help` prints them, and every",
        "environment variable Fermion reads. This page is generated from the command-line code and",
        "`tests/test_cli_reference.py` fails when the two disagree. What the limits answer, the exit codes and",
        "what every replica serves are in [Configuration](configuration.md).",
        "",
        "An option on the command line wins over its environment variable, which wins over the default.",
        "Every command also takes `--help`; `fermion --version` prints the version.",
        "",
        "## Environment variables",
        "",
        "| variable | read by | what it sets |",
        "|---|---|---|",
        *(f"| `{v.name}` | {_cell(v.read_by)} | {_cell(v.meaning)} |" for v in environment()),
        "",
        "Other libraries' variables that Fermion sets or respects:",
        "",
        "| variable | read by | what happens |",
        "|---|---|---|",
        *(
            f"| {', '.join(f'`{n}`' for n in v.name.split(', '))} | {_cell(v.read_by)} | {_cell(v.meaning)} |"
            for v in OTHER_ENVIRONMENT
        ),
        "",
        "## Commands",
        "",
        *(f"- [`{c.path}`](#{_anchor(c.path)}): {_cell(c.help.split(chr(10))[0])}" for c in found),
    ]
    for command in found:
        lines += ["", f"### `{command.path}`", "", "```", command.usage, "```", ""]
        if command.help:
            lines += [" ".join(paragraph.split()) + "\n" for paragraph in command.help.split("\n\n") if paragraph.strip()]
        if command.rows:
            lines += ["| argument or option | what it does |", "|---|---|"]
            lines += [f"| `{_cell(name)}` | {_cell(text)} |" for name, text in command.rows]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print, write or check the page."""
    parser = argparse.ArgumentParser(prog="python -m fermion.cli.reference", description="The command-line reference page.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {PAGE} under --root")
    mode.add_argument("--check", action="store_true", help=f"exit 1 when {PAGE} under --root differs from the CLI")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository root (default: the current directory)")
    args = parser.parse_args(argv)
    page = render()
    target = args.root / PAGE
    if args.write:
        target.write_text(page, encoding="utf-8")
        print(f"wrote {target}")
    elif args.check:
        if not target.is_file() or target.read_text(encoding="utf-8") != page:
            print(f"{target} is stale: run python -m fermion.cli.reference --write", file=sys.stderr)
            return 1
        print(f"{target} matches the CLI")
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
