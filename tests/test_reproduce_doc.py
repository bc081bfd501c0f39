"""docs/reproduce.md against the code: the commands it prints must run as written.

Every `--config NAME` is a bundled recipe, every zsad subcommand and option exists on that
subcommand, every KIND:/path names a known layout, every `overlay FILE METHOD KEY=VALUE`
call sets fields of that method's config (and builds it where the values are literal), and
every bundled ablation overlay appears in a `--config`. Nothing is trained or run: the CLI
is inspected through click.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from zsad.cli import app
from zsad.data import DATASET_KINDS
from zsad.methods import method_class
from zsad.recipes import bundled_recipes

DOC = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.DOTALL)
INLINE = re.compile(r"`([^`]+)`")
FOR_LOOP = re.compile(r"\bfor (\w+) in ([^;]+); do\b")
DATA_SPEC = re.compile(r"(?<![\w/.-])([a-z][a-z0-9-]*):/")
ZSAD_CALL = re.compile(r"(?:^|[\s;(])zsad\s+(.*)")
SEPARATORS = re.compile(r";|&&|\|\|")


def code_chunks(text: str) -> list[str]:
    """The shell code of the page: each fenced block and each inline code span, with
    backslash-continued lines joined."""
    chunks = [block.replace("\\\n", " ") for block in FENCE.findall(text)]
    prose = FENCE.sub("", text)
    chunks += [span.replace("\n", " ") for span in INLINE.findall(prose)]
    return chunks


def expand_loops(chunk: str) -> list[str]:
    """The chunk once per value of each `for VAR in VALUES; do` loop it holds, with $VAR
    and ${VAR} substituted (a chunk without a loop: itself)."""
    loops = FOR_LOOP.findall(chunk)
    expanded = [chunk]
    for name, values in loops:
        pattern = re.compile(r"\$\{?" + name + r"\}?(?!\w)")
        expanded = [pattern.sub(value, text) for text in expanded for value in values.split()]
    return expanded


def commands(chunk: str) -> list[str]:
    """Simple commands of one chunk (split at ; && || and new lines, loop headers dropped)."""
    parts = []
    for line in chunk.splitlines():
        for part in SEPARATORS.split(line):
            part = re.sub(r"^\s*(?:do|then)\s+", "", part).strip()
            if part and not part.startswith(("for ", "done", "#")):
                parts.append(part)
    return parts


def zsad_calls(text: str) -> list[list[str]]:
    """The argument lists of every `zsad ...` call of the page, loops expanded."""
    calls = []
    for chunk in code_chunks(text):
        for variant in expand_loops(chunk):
            for command in commands(variant):
                match = ZSAD_CALL.search(command)
                if match:
                    calls.append(shlex.split(match.group(1).split(" #")[0]))
    return calls


def overlay_calls(text: str) -> list[list[str]]:
    """The arguments of every `overlay FILE METHOD KEY=VALUE...` call, loops expanded."""
    calls = []
    for chunk in code_chunks(text):
        for variant in expand_loops(chunk):
            for command in commands(variant):
                words = shlex.split(command)
                if len(words) > 1 and words[0] == "overlay":  # a bare `overlay` is the word in prose
                    calls.append(words[1:])
    return calls


def is_group(command) -> bool:
    """Typer vendors its own click, so a group is told by its subcommands, not its class."""
    return isinstance(getattr(command, "commands", None), dict)


def resolve(root, args: list[str]) -> tuple[object, str, list[str]]:
    """The (sub)command that ``zsad ARGS`` runs, its name and the remaining arguments."""
    command, path, rest = root, "zsad", list(args)
    while is_group(command) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`{path} {name}`: no such subcommand (has: {', '.join(sorted(command.commands))})"
        command, path = sub, f"{path} {name}"
    return command, path, rest


def option_names(command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts) if name.startswith("-")} | {"--help"}


def config_values(calls: list[list[str]]) -> list[str]:
    values = []
    for args in calls:
        for index, word in enumerate(args):
            if word == "--config" and index + 1 < len(args):
                values.append(args[index + 1])
            elif word.startswith("--config="):
                values.append(word.split("=", 1)[1])
    return values


def is_file(value: str) -> bool:
    return value.endswith((".yaml", ".yml", ".json")) or "/" in value


@pytest.fixture(scope="module")
def text() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def calls(text) -> list[list[str]]:
    found = zsad_calls(text)
    assert len(found) > 50, f"only {len(found)} zsad commands found in {DOC}: the parser or the page is broken"
    return found


def test_every_subcommand_and_option_exists(calls):
    root = typer.main.get_command(app)
    for args in calls:
        command, path, rest = resolve(root, args)
        assert not is_group(command) or not rest, f"`{path}` needs a subcommand"
        known = option_names(command)
        for word in rest:
            if word.startswith("-") and not word.lstrip("-").isdigit():
                assert word.split("=", 1)[0] in known, f"`{path}` has no option {word} (see `{path} --help`)"


def test_every_config_name_is_bundled(calls):
    bundled = bundled_recipes()
    names = [value for value in config_values(calls) if not is_file(value)]
    assert names, "no --config NAME found"
    for name in names:
        assert "$" not in name, f"--config {name}: a loop variable the page does not expand"
        assert name in bundled, f"--config {name}: not a bundled recipe (zsad recipes lists {', '.join(sorted(bundled))})"


def test_recipes_show_names_are_bundled(calls):
    bundled = bundled_recipes()
    for args in calls:
        if args[:2] == ["recipes", "show"]:
            assert args[2] in bundled, f"zsad recipes show {args[2]}: not a bundled recipe"


def test_every_ablation_overlay_is_reproduced(calls):
    used = set(config_values(calls))
    overlays = [name for name, recipe in bundled_recipes().items() if not recipe.is_method_recipe]
    assert overlays
    missing = sorted(set(overlays) - used)
    assert not missing, f"bundled overlays without a --config command in {DOC.name}: {', '.join(missing)}"


def test_every_data_kind_is_a_known_layout(text):
    kinds = set(DATA_SPEC.findall(text))
    assert {"mvtec", "visa", "bmad-brainmri"} <= kinds, "the data-spec pattern found too little"
    unknown = sorted(kinds - set(DATASET_KINDS))
    assert not unknown, f"unknown data kinds in {DOC.name}: {unknown} (known: {', '.join(DATASET_KINDS)})"


def test_overlay_files_set_real_fields(text):
    calls = overlay_calls(text)
    assert len(calls) > 30, "too few overlay calls found"
    for args in calls:
        file, method, *pairs = args
        assert file.endswith(".yaml"), f"overlay {file}: the --config file should end in .yaml"
        config_class = method_class(method).config_class
        fields = set(config_class.__dataclass_fields__)
        values = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            assert key in fields, f"overlay {file}: {method} has no config field {key!r}"
            values[key] = value
        if not any("$" in value for value in values.values()):
            config_class.from_dict({key: yaml.safe_load(value) for key, value in values.items()})


def test_every_overlay_file_is_used(text, calls):
    written = {args[0] for args in overlay_calls(text)}
    used = {value for value in config_values(calls) if is_file(value)}
    assert written <= used, f"overlay files written but never passed to --config: {sorted(written - used)}"
    assert used <= written, f"--config files that no overlay call writes: {sorted(used - written)}"


def test_parser_catches_mistakes():
    root = typer.main.get_command(app)
    bad = zsad_calls("`for c in a b; do zsad benchmark --config $c --no-such-flag x; done`")
    assert [args[:3] for args in bad] == [["benchmark", "--config", "a"], ["benchmark", "--config", "b"]]
    command, _, rest = resolve(root, bad[0])
    assert "--no-such-flag" not in option_names(command) and "--no-such-flag" in rest
    with pytest.raises(AssertionError, match="no such subcommand"):
        resolve(root, ["analyse", "experts"])
    assert DATA_SPEC.findall("x --data nosuchkind:/data/x, src/zsad/a:/b") == ["nosuchkind"]
