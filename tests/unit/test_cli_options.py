"""The CLI's global options: anywhere on the command line; admin commands log warnings only."""

from __future__ import annotations

import pytest

from poller import cli
from poller.config import load_settings


@pytest.mark.parametrize(
    "argv",
    [
        ["--env-file", "a.env", "instances", "list"],
        ["instances", "--env-file", "a.env", "list"],
        ["instances", "list", "--env-file", "a.env"],
        ["instances", "list", "--env-file=a.env"],
    ],
)
def test_env_file_is_taken_anywhere(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert (args.command, args.instances_command, args.env_file) == ("instances", "list", "a.env")


def test_the_command_level_wins_and_absence_keeps_the_upper_value() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["--env-file", "a", "run", "--env-file", "b"]).env_file == "b"
    assert parser.parse_args(["-v", "migrate"]).verbose == 1
    assert parser.parse_args(["migrate", "-vv"]).verbose == 2
    assert not hasattr(parser.parse_args(["migrate"]), "env_file")


@pytest.mark.parametrize(
    ("argv", "found"),
    [
        (["demo", "--duration", "5"], ("demo", ["--duration", "5"])),
        (["--env-file", "x.env", "-v", "emulator", "--port", "1"], ("emulator", ["--port", "1"])),
        (["--env-file=x.env", "demo"], ("demo", [])),
        (["instances", "list"], None),
        (["--env-file", "demo", "run"], None),  # "demo" is the option's value there
    ],
)
def test_commands_that_parse_their_own_arguments_are_found_after_global_options(
    argv: list[str], found: tuple[str, list[str]] | None
) -> None:
    assert cli._own_arguments(argv) == found


@pytest.mark.parametrize(
    ("command", "verbose", "configured", "level"),
    [
        ("run", 0, "info", "info"),
        ("run", 0, "error", "error"),
        ("run", 2, "info", "debug"),
        ("instances", 0, "info", "warning"),
        ("instances", 0, "debug", "warning"),
        ("instances", 1, "info", "info"),
        ("instances", 1, "debug", "debug"),
        ("instances", 2, "error", "debug"),
    ],
)
def test_log_level(command: str, verbose: int, configured: str, level: str) -> None:
    settings = load_settings(env={"POLLER_LOG_LEVEL": configured})
    assert cli.log_level(command, verbose, settings) == level
