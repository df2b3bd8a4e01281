"""``vlt profiles``: list the accelerator profiles (docs/accelerators.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.arguments import Subcommands
from agent.cli.exit_codes import EXIT_OK

__all__ = ["add_profiles_command"]


def add_profiles_command(commands: Subcommands) -> None:
    pp = commands.add_parser(
        "profiles",
        help="list the accelerator profiles",
        description="List the accelerator profiles the emulator and the emulated LLM stage know, "
        "with where each number comes from. All figures are approximate.",
    )
    pp.add_argument("--profiles-file", type=Path, help="TOML file of extra profiles to include")
    pp.add_argument("--markdown", action="store_true", help="print a Markdown table")
    pp.add_argument("--notes", action="store_true", help="also print each profile's notes")
    pp.set_defaults(func=_cmd_profiles)


def _cmd_profiles(args: argparse.Namespace) -> int:
    from agent.config.accelerators import PROFILES, format_profiles_table, load_profiles

    profiles = load_profiles(args.profiles_file) if args.profiles_file is not None else PROFILES
    print(format_profiles_table(profiles, markdown=args.markdown))
    if args.notes:
        print()
        for profile in sorted(profiles.values(), key=lambda p: p.name):
            print(f"{profile.name}: {profile.notes or '-'}")
    print()
    print("All figures are approximate (docs/accelerators.md). Prefill adds to the base TTFT.")
    return EXIT_OK
