"""The docs still describe the program: every `tunelab` command line that README.md or a
docs/*.md page shows names a subcommand that exists, uses only options that subcommand has,
and parses; every `key=value` override it shows on a real config validates; every config block
validates; every error message shown after `$ tunelab ...` is the one the program prints.

No training and no model loading: only the argument parser, the config schema and the
search-space check run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from tunelab.cli import _parser

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIG_KEYS = ("task", "model", "data", "method", "train")
TAKES_CONFIG = {"train", "meta", "config show", "info", "data inspect", "data augment", "cv",
                "tune"}
PLACEHOLDER_CONFIG = "examples/sst2-lora.yaml"  # where overrides shown on `CONFIG` are checked
OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=\S*$")


@dataclass
class Command:
    where: str        # "docs/ner.md:12"
    text: str         # the command as shown, from `tunelab` on
    fenced: bool      # in a code block (parsed in full) or an inline `code` span (flags only)
    error: str | None = None  # the `error: ...` line shown under a `$ tunelab ...` line


@dataclass
class YamlBlock:
    where: str
    text: str


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _command_start(line: str) -> str | None:
    """The command from `tunelab` on, or None when the line runs no tunelab command."""
    line = line.strip()
    line = line.removeprefix("$ ").strip()
    for prefix in ("tunelab ", ".venv/bin/tunelab ", "python -m tunelab ",
                   ".venv/bin/python -m tunelab "):
        if line.startswith(prefix):
            return "tunelab " + line[len(prefix):]
    m = re.match(r"^torchrun\b.*?-m tunelab (.*)$", line)
    return "tunelab " + m.group(1) if m else None


def collect(path: Path) -> tuple[list[Command], list[YamlBlock]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    name = _rel(path)
    commands: list[Command] = []
    blocks: list[YamlBlock] = []
    prose: list[tuple[int, str]] = []  # (line number, text) outside code blocks
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```(\w*)", lines[i])
        if not fence:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        lang, start = fence.group(1), i + 1
        i += 1
        body: list[tuple[int, str]] = []
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1  # the closing fence
        if lang in ("yaml", "yml"):
            blocks.append(YamlBlock(f"{name}:{start + 1}", "\n".join(t for _, t in body)))
            continue
        if lang == "python":
            continue
        j = 0
        while j < len(body):
            number, text = body[j]
            while text.rstrip().endswith("\\") and j + 1 < len(body):  # continued lines
                j += 1
                text = text.rstrip()[:-1] + " " + body[j][1].strip()
            j += 1
            command = _command_start(text)
            if command is None:
                continue
            error = None
            if text.strip().startswith("$ ") and j < len(body) and body[j][1].startswith("error: "):
                error = body[j][1].removeprefix("error: ").strip()
            commands.append(Command(f"{name}:{number}", command, fenced=True, error=error))
    # inline `tunelab ...` spans, which may wrap over lines within a paragraph
    text = "\n".join(t for _, t in prose)
    numbers = [n for n, _ in prose]
    for m in re.finditer(r"`(tunelab [^`]+)`", text):
        number = numbers[text.count("\n", 0, m.start())]
        commands.append(Command(f"{name}:{number}", " ".join(m.group(1).split()), fenced=False))
    return commands, blocks


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _resolve(tokens: list[str]) -> tuple[list[str], argparse.ArgumentParser, list[str]]:
    """(subcommand path, its parser, the tokens after it); raises LookupError if unknown."""
    parser = _parser()
    path: list[str] = []
    rest = [t for t in tokens if t != "--debug"]
    while (choices := _subparsers(parser)):
        if not rest or rest[0] not in choices:
            got = rest[0] if rest else "nothing"
            raise LookupError(f"'{' '.join(['tunelab', *path])}' has no subcommand {got!r} "
                              f"(it has: {', '.join(choices)})")
        path.append(rest[0])
        parser = choices[rest[0]]
        rest = rest[1:]
    return path, parser, rest


def _help_exits_zero(path: list[str]) -> str | None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            _parser().parse_args([*path, "--help"])
        except SystemExit as exc:
            if exc.code == 0:
                return None
            return f"`tunelab {' '.join(path)} --help` exited {exc.code}: {err.getvalue().strip()}"
    return f"`tunelab {' '.join(path)} --help` did not exit"


def _parses(tokens: list[str]) -> str | None:
    """Parse as `tunelab.cli.main` does (overrides may follow flags); None if it parses."""
    err = io.StringIO()
    parser = _parser()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args, extra = parser.parse_known_args(tokens)
        except SystemExit as exc:
            return f"does not parse (exit {exc.code}): {err.getvalue().strip().splitlines()[-1]}"
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        return f"unrecognized arguments: {' '.join(stray or extra)}"
    return None


def _load(command: str, config: str, overrides: list[str]):
    if command == "meta":
        from tunelab.meta.config import load_meta_config

        return load_meta_config(config, overrides)
    from tunelab.config import load_config

    return load_config(config, overrides)  # drops a tune config's `search:` section


def check_command(cmd: Command) -> list[str]:
    """Every problem with one documented command line, each naming where it is shown."""
    at = f"{cmd.where}: `{cmd.text}`"
    if cmd.fenced:
        try:
            tokens = shlex.split(cmd.text, comments=True)[1:]
        except ValueError as exc:
            return [f"{at}: cannot split into words: {exc}"]
        tokens = [t.strip("[]") for t in tokens if t not in ("...", "[...]")]
        tokens = [t for t in tokens if t]
        # the full parse leaves out optional parts shown as `[--epoch N]`
        required = shlex.split(re.sub(r"\s\[[^\]]*\]", "", cmd.text), comments=True)[1:]
    else:  # a synopsis: `[--split dev\|test]`, `RUN_DIR ...`; check names and flags only
        tokens = [t for t in re.split(r"\s+", cmd.text.replace("\\|", "|"))[1:]]
        tokens = [t.strip("[]") for t in tokens if t.strip("[]") not in ("", "...")]
    try:
        path, parser, rest = _resolve(tokens)
    except LookupError as exc:
        return [f"{at}: {exc}"]
    problems = []
    if (msg := _help_exits_zero(path)) is not None:
        problems.append(f"{at}: {msg}")
    options = set(parser._option_string_actions)
    for token in rest:
        if token.startswith("-") and not re.match(r"^-\d", token):
            flag = token.split("=", 1)[0].split("|", 1)[0]
            if flag not in options:
                problems.append(f"{at}: `tunelab {' '.join(path)}` has no option {flag} "
                                f"(it has: {', '.join(sorted(o for o in options if o.startswith('--')))})")
    if problems:
        return problems
    if cmd.fenced and (msg := _parses(required)) is not None:
        return [f"{at}: {msg}"]
    # overrides: validated on the config the line names, or on an example for a placeholder
    sub = " ".join(path)
    if sub not in TAKES_CONFIG:
        return []
    positional = [t for t in rest if not t.startswith("-")]
    overrides = [t for t in positional[1:] if OVERRIDE.match(t) and not t.startswith("key=")]
    if not positional:
        return []
    config = positional[0]
    if not (REPO / config).is_file():
        if not overrides:
            return []
        config = PLACEHOLDER_CONFIG if sub != "meta" else "examples/meta-agnews-to-sst2.yaml"
    from tunelab.errors import ConfigError

    try:
        _load(path[0], str(REPO / config), overrides)
    except ConfigError as exc:
        got = str(exc).replace(str(REPO / config), config)
        if cmd.error is None:
            return [f"{at}: the config {config} with {overrides} does not validate: {got}"]
        if got != cmd.error:
            return [f"{at}: the doc shows the error\n  {cmd.error}\nbut the program says\n  {got}"]
        return []
    if cmd.error is not None:
        return [f"{at}: the doc shows the error '{cmd.error}', but the config validates"]
    return []


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), tree


def check_yaml(block: YamlBlock) -> list[str]:
    """A config block validates; a `search:` block is a valid space for the tune example; a
    block whose first comment names an example file shows that file's values."""
    from tunelab.config import validate
    from tunelab.errors import ConfigError

    try:
        tree = yaml.safe_load(block.text)
    except yaml.YAMLError as exc:
        return [f"{block.where}: not YAML: {exc}"]
    if not isinstance(tree, dict):
        return []
    problems = []
    try:
        if set(tree) == {"search"}:
            from tunelab.config.tree import read_yaml
            from tunelab.eval.search import parse_space

            base = read_yaml(REPO / "examples/sst2-tune.yaml")
            base.pop("search", None)
            parse_space(tree["search"], base, "examples/sst2-tune.yaml")
        elif set(tree) & set(CONFIG_KEYS):
            tree.pop("search", None)
            if "meta" in tree:
                from tunelab.meta.config import MetaRun

                MetaRun.model_validate(tree)
            elif "stages" in tree:
                from tunelab.continual.config import validate_continual

                validate_continual(tree, block.where)
            else:
                validate(tree, block.where)
    except (ConfigError, ValueError) as exc:
        problems.append(f"{block.where}: the config block does not validate: {exc}")
    named = re.match(r"^#\s*(examples/[\w.-]+\.ya?ml)", block.text.strip())
    if named:
        example = REPO / named.group(1)
        if not example.is_file():
            problems.append(f"{block.where}: names {named.group(1)}, which does not exist")
        else:
            want = dict(_flatten(yaml.safe_load(example.read_text())))
            for key, value in _flatten(tree):
                if want.get(key, object()) != value:
                    problems.append(f"{block.where}: shows {key}: {value!r}, but "
                                    f"{named.group(1)} has {want.get(key, '(no such key)')!r}")
    return problems


COMMANDS: list[Command] = []
BLOCKS: list[YamlBlock] = []
for _doc in DOCS:
    _c, _b = collect(_doc)
    COMMANDS += _c
    BLOCKS += _b


def test_the_docs_show_commands_and_configs():
    """The collector finds what the pages show (a broken collector would pass everything)."""
    assert (REPO / "docs").is_dir() and len(DOCS) > 10
    assert len([c for c in COMMANDS if c.fenced]) >= 30, [c.where for c in COMMANDS]
    assert len([c for c in COMMANDS if not c.fenced]) >= 15
    assert any(c.error for c in COMMANDS), "the unknown-key example is no longer collected"
    assert len(BLOCKS) >= 2
    subs = {c.text.split()[1] for c in COMMANDS}
    assert {"train", "eval", "predict", "merge", "tune", "cv", "meta", "report", "data",
            "generate", "chat", "export", "info", "config"} <= subs, subs


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_parses(cmd: Command):
    problems = check_command(cmd)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_documented_config_block_validates(block: YamlBlock):
    problems = check_yaml(block)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_broken_docs(tmp_path: Path):
    """A page with a missing subcommand, a missing flag, a bad key, a stale error message and
    an invalid config block fails, each problem naming the page and line."""
    page = tmp_path / "broken.md"
    page.write_text(
        "# Broken\n\n"
        "```bash\n"
        "tunelab trian examples/sst2-lora.yaml\n"
        "tunelab eval runs/x --splitt test\n"
        "tunelab train examples/sst2-lora.yaml method.rr=4\n"
        "tunelab cv examples/sst2-tune.yaml \\\n    --folds 5 --kep none\n"
        "tunelab tune examples/sst2-tune.yaml\n"
        "```\n\n"
        "```\n"
        "$ tunelab train examples/sst2-lora.yaml method.rr=4\n"
        "error: not what the program says\n"
        "```\n\n"
        "Run `tunelab predict RUN [--fiel FILE]` or `tunelab config show CONFIG\n"
        "train.lrr=1`.\n\n"
        "```yaml\n"
        "# examples/sst2-lora.yaml\n"
        "model: {name: minilm}\n"
        "data: {train: sst2}\n"
        "method: {name: lora, r: 0}\n"
        "```\n", encoding="utf-8")
    commands, blocks = collect(page)
    problems = [p for c in commands for p in check_command(c)]
    problems += [p for b in blocks for p in check_yaml(b)]
    text = "\n".join(problems)
    name = str(page)
    for expected in (f"{name}:4: `tunelab trian", "no subcommand 'trian'",
                     f"{name}:5:", "has no option --splitt",
                     f"{name}:6:", "unknown key 'method.rr'",
                     f"{name}:7:", "has no option --kep",
                     f"{name}:9:", "the following arguments are required: --trials",
                     f"{name}:13:", "the doc shows the error",
                     f"{name}:17:", "has no option --fiel", "unknown key 'train.lrr'",
                     f"{name}:21:", "method.r", "shows method.r: 0"):
        assert expected in text, f"{expected!r} not in:\n{text}"
