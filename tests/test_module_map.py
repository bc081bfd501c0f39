"""Issue 18 §6: the README's module map ("How it is built") names every module of
src/zsad: a top-level module as ``name.py``, a package as ``name/``, and every module of a
package (and of its sub-packages) by name inside that package's entry."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "zsad"


def module_map_entries(readme: str) -> dict[str, str]:
    """Head word of each entry of the map (``engine/``, ``api.py``...) -> the entry's text.
    An entry starts at a line indented by two spaces; deeper lines continue it."""
    block = re.search(r"```\nsrc/zsad/\n(.*?)```", readme, flags=re.S)
    assert block, "the README has no module map (a ``` block starting with src/zsad/)"
    entries: dict[str, str] = {}
    heads: list[str] = []
    for line in block.group(1).splitlines():
        if re.match(r"^  \S", line):
            heads = re.findall(r"(?<!\S)([\w.]+(?:\.py|/))(?=\s|$)", line)
            for head in heads:
                entries[head] = line
        elif line.startswith("   ") and heads:
            for head in heads:
                entries[head] += "\n" + line
        else:
            heads = []
    return entries


def missing_modules(entries: dict[str, str], package: Path) -> list[str]:
    """Modules of ``package`` that the map entries do not name."""
    missing = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).parts
        if len(parts) == 1:
            if path.name not in entries:
                missing.append(path.name)
            continue
        entry = entries.get(parts[0] + "/")
        words = [f"{part}/" for part in parts[1:-1]] + ([] if path.stem == "__init__" else [path.stem])
        if entry is None or not all(re.search(rf"(?<![\w/]){re.escape(word)}(?!\w)", entry) for word in words):
            missing.append("/".join(parts))
    return missing


def test_the_module_map_names_every_module():
    entries = module_map_entries((ROOT / "README.md").read_text(encoding="utf-8"))
    assert missing_modules(entries, PACKAGE) == []


def test_a_module_left_out_of_the_map_is_found(tmp_path):
    package = tmp_path / "zsad"
    (package / "engine").mkdir(parents=True)
    for name in ("api.py", "extra.py", "engine/__init__.py", "engine/training.py", "engine/new_part.py"):
        (package / name).write_text("")
    entries = module_map_entries("```\nsrc/zsad/\n  api.py  the facade\n  engine/  training (fit),\n       evaluation\n```\n")
    assert missing_modules(entries, package) == ["engine/new_part.py", "extra.py"]


def test_nothing_cites_the_spec_files_that_are_not_in_the_repository():
    """The spec's decisions are in docs/specification.md; its own files are not shipped."""
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *PACKAGE.rglob("*.py")]
    citing = [str(path.relative_to(ROOT)) for path in texts if re.search(r"\bspec/\w+\.md", path.read_text(encoding="utf-8"))]
    assert citing == []
    assert (ROOT / "docs" / "specification.md").is_file()
