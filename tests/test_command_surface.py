"""One command surface: the same option has the same name in every command (fit's), and the old
spellings of inspect and report still work, with one line saying the new one."""

from __future__ import annotations

import csv
import re

import pytest
from conftest import run_dirs

from circuits_pl.usage import RENAMED, current_spelling

QUIET = ["--trainer.enable_progress_bar", "false", "--figures", "false"]


def test_every_renamed_option_is_an_option_of_fit_or_of_the_command():
    """The new spelling of every old one is the name fit gives the same thing (or the command's own)."""
    assert RENAMED["inspect"] == {"--member": "--model.member"}
    assert RENAMED["report"]["--members"] == "--model.members"
    assert RENAMED["report"]["--max_steps"] == "--trainer.max_steps"
    for renamed in RENAMED.values():
        for old, new in renamed.items():
            assert new.startswith(("--model.", "--trainer.", "--sweep.", "--seed_everything")), (old, new)


def test_old_spellings_are_rewritten_with_one_line_each(capsys):
    argv = ["--tasks", "abs", "--members", "4", "--max_steps=300", "--members", "8", "--seed", "3"]
    assert current_spelling("report", argv) == ["--tasks", "abs", "--model.members", "4", "--trainer.max_steps=300",
                                                "--model.members", "8", "--seed_everything", "3"]
    assert capsys.readouterr().err.splitlines() == [
        "circuits_pl: --members is deprecated; use --model.members",
        "circuits_pl: --max_steps is deprecated; use --trainer.max_steps",
        "circuits_pl: --seed is deprecated; use --seed_everything"]
    assert current_spelling("report", ["--members", "4"], say=False) == ["--model.members", "4"]
    assert capsys.readouterr().err == ""
    assert current_spelling("fit", ["--member", "3"]) == ["--member", "3"]  # fit has no old spellings


def test_an_option_given_in_both_spellings_is_refused_in_one_line(capsys, monkeypatch):
    """``inspect --member 0 --model.member 1`` used 1 without a word (the parser's last wins)."""
    import sys

    from circuits_pl.cli import main

    monkeypatch.setattr(sys, "argv", ["circuits_pl"])  # else pytest's own arguments reach LightningCLI

    for argv in (["inspect", "run", "--member", "0", "--model.member", "1"],
                 ["report", "--members=4", "--model.members", "8"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        old, new = ("--member", "--model.member") if argv[0] == "inspect" else ("--members", "--model.members")
        assert capsys.readouterr().err.splitlines() == [
            f"error: {old} and {new} are both given: {old} is the old spelling of {new}; give it once"]


def test_inspect_member_old_and_new_spelling_read_the_same_member(run_cli, tmp_path, capsys):
    run_cli("fit", "--task", "abs", "--model.members", 3, "--trainer.max_steps", 300, *QUIET)
    (run,) = run_dirs(tmp_path)
    capsys.readouterr()
    run_cli("inspect", run, "--model.member", 2, "--figures", "false")
    new = capsys.readouterr()
    run_cli("inspect", run, "--member", 2, "--figures", "false")
    old = capsys.readouterr()
    assert "member 2 of 3" in new.out and old.out == new.out
    assert new.err == ""
    assert old.err.splitlines() == ["circuits_pl: --member is deprecated; use --model.member"]


def test_report_max_steps_and_members_old_and_new_spelling_give_the_same_study(run_cli, tmp_path, capsys):
    common = ["report", "--tasks", "abs", "--jobs", 1]
    run_cli(*common, "--model.members", 2, "--trainer.max_steps", 400, "--out", "new")
    assert "deprecated" not in capsys.readouterr().err
    run_cli(*common, "--members", 2, "--max_steps", 400, "--out", "old")
    err = capsys.readouterr().err.splitlines()
    assert [ln for ln in err if "deprecated" in ln] == [
        "circuits_pl: --members is deprecated; use --model.members",
        "circuits_pl: --max_steps is deprecated; use --trainer.max_steps"]
    new, old = (list(csv.DictReader((tmp_path / out / "version_0" / "report.csv").open())) for out in ("new", "old"))
    assert len(new) == 1 and new[0]["members"] == "2"
    dropped = ("run_dir",)  # where each fit ran: under its own --out
    assert [{k: v for k, v in r.items() if k not in dropped} for r in old] == \
           [{k: v for k, v in r.items() if k not in dropped} for r in new]


@pytest.mark.parametrize("old, value", [("--members", "0"), ("--max_steps", "0")])
def test_a_bad_value_under_an_old_spelling_is_refused_in_the_new_ones_words(run_cli, tmp_path, capsys, old, value):
    run_cli("report", "--tasks", "abs", old, value, expect=2)
    err = capsys.readouterr().err.splitlines()
    new = RENAMED["report"][old]
    assert err == [f"circuits_pl: {old} is deprecated; use {new}",
                   f"error: {new} must be a positive integer, got 0"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_a_command_reads_its_ckpt_path_once(run_cli, tmp_path, monkeypatch, command):
    """The checkpoint the CLI reads and checks is the one Lightning restores: one torch.load of the file."""
    import torch

    run_cli("fit", "--task", "abs", "--model.members", 2, "--trainer.max_steps", 200, *QUIET)
    (run,) = run_dirs(tmp_path)
    ckpt = run / "checkpoints" / "last.ckpt"
    reads, load = [], torch.load

    def counting_load(f, *args, **kwargs):
        name = getattr(f, "name", f)
        if str(name) == str(ckpt):
            reads.append(name)
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    more = ["--trainer.max_steps", 400] if command == "fit" else []
    run_cli(command, "--ckpt_path", ckpt, *more, *QUIET)
    assert len(reads) == 1
    if command == "fit":  # the restore really used it: training went on from step 200
        from conftest import results

        resumed = max(run_dirs(tmp_path), key=lambda d: int(d.name.split("_")[1]))
        assert results(resumed)["steps"] == 400


# A default stated in an option's help, in the forms the help texts use: Lightning's "Default: ``1.0``",
# "(default 128)", "(default: reports)", "default: X"; not "by default: ...", which says what a default does.
STATED = re.compile(r"Default: ``([^`]*)``|\(default:? ([^),;]+)[),;]|(?<!by )\bdefault: ([^\s,;)]+)")


def option_blocks(help_text: str) -> dict[str, str]:
    """Each option of a --help text and its help, as one line."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in help_text.split("\n\n", 1)[1].splitlines():  # after the usage paragraph
        start = re.match(r"^  (?:-\w, )?(--[\w.]+)", line)
        if start:
            current = start.group(1)
            blocks[current] = [line]
        elif current and line.startswith("    "):
            blocks[current].append(line)
        else:
            current = None
    return {flag: " ".join(" ".join(lines).split()) for flag, lines in blocks.items()}


def _same(stated: str, real: str) -> bool:
    def norm(text: str) -> str:
        return text.strip().strip("'\"`.").lower().replace("none", "null")

    return norm(stated) == norm(real)


@pytest.fixture(scope="module")
def command_help() -> dict[str, str]:
    """Every command's --help, as the command root prints it."""
    from circuits_pl.cli import command_parsers

    return {name: parser.format_help() for name, parser in command_parsers().items()}


def test_every_command_is_on_the_one_root_with_its_help(command_help):
    assert list(command_help) == ["fit", "validate", "test", "predict", "inspect", "report"]
    assert "--model.member MEMBER" in command_help["inspect"] and "--trainer.max_steps" in command_help["report"]
    assert "--sweep.lr" in command_help["report"] and "--model.members" in command_help["report"]


def test_every_default_an_options_help_states_is_its_real_default(command_help):
    """jsonargparse ends each option's help with its real default (``default: X)``); any other default the
    help text states must be that one, or say what null stands for (``Default: ``1.0```` for a Lightning
    option whose null means 1.0). Lightning's own "Default: ``True``" of an option whose default circuits_pl
    changed would fail here."""
    checked = 0
    for command, text in command_help.items():
        for flag, block in option_blocks(text).items():
            real = re.search(r"default: (.*?)(?:, known subclasses: .*)?\)$", block)
            if real is None:  # no default (--help, --config)
                continue
            prose = block[:real.start()]
            for match in STATED.finditer(prose):
                stated = next(g for g in match.groups() if g is not None)
                assert _same(stated, real.group(1)) or _same(real.group(1), "null"), \
                    f"{command} {flag}: its help says default {stated!r}, the parser's is {real.group(1)!r}"
            checked += 1
    assert checked > 6 * 20


def test_the_check_of_stated_defaults_finds_a_wrong_one():
    block = option_blocks("usage: x\n\noptions:\n  --members M  seeds (default 128) (type: int, default: 64)\n")
    prose, real = block["--members"].rsplit("(type", 1)
    stated = next(g for g in STATED.search(prose).groups() if g is not None)
    assert stated == "128" and not _same(stated, re.search(r"default: (.*)\)$", real).group(1))


def test_the_short_helps_facts_are_what_the_command_root_and_registry_give_today():
    """circuits_pl/short_help.py (read by the fast --help, no torch, no Lightning) is generated from the real
    parser and task registry; a changed default, task or command must be regenerated into it."""
    from pathlib import Path

    from circuits_pl import cli

    committed = Path(cli.SHORT_HELP_MODULE).read_text()
    assert committed == cli.short_help_module(), \
        'regenerate: python -c "from circuits_pl.cli import write_short_help; write_short_help()"'
    assert "('--model.members K', 'seeds trained at once (default 64)')" in committed


def test_the_short_help_generator_quotes_a_changed_default(monkeypatch):
    from circuits_pl import cli

    monkeypatch.setitem(cli.TRAINER_DEFAULTS, "max_steps", 12345)
    assert "SGD step budget (default 12345)" in cli.short_help_module()


def test_a_study_saved_with_the_old_spellings_resumes_with_them_silently(tmp_path, capsys):
    """study.json keeps the command line as typed: one written before the renames resumes as it was
    (the same study), with no deprecation line for what the user did not type now."""
    import json

    from circuits_pl.report import STUDY_FILE, _resumed

    out = tmp_path / "reports" / "version_0"
    out.mkdir(parents=True)
    old = ["--tasks", "abs", "--sizes", "1-2-1,1-4-1", "--lrs", "0.1,0.3", "--members", "8", "--max_steps", "700",
           "--seed", "5", "--success_mse", "1e-6", "--engine", "torch", "--init_scales", "0.5,1"]
    (out / STUDY_FILE).write_text(json.dumps({"argv": old, "shards": 1}))
    args, original, saved = _resumed(["--resume", str(out), "--jobs", "3"])
    assert (args.sizes, args.lrs, args.init_scales, args.members, args.max_steps, args.seed, args.success_mse,
            args.engine, args.jobs) == ("1-2-1,1-4-1", "0.1,0.3", "0.5,1", 8, 700, 5, 1e-6, "torch", 3)
    assert original[:4] == ["--tasks", "abs", "--sweep.sizes", "1-2-1,1-4-1"] and saved["shards"] == 1
    assert capsys.readouterr().err == ""
