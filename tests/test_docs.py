"""The documentation stays true to the code.

- the generated reference pages (`docs/recipes.md`, `docs/cli.md`) are up to date and every
  recipe field has a meaning (`tools/docgen.py`);
- every `stforecast ...` line in a fenced code block of README.md and docs/*.md parses against the
  real command line (no unknown command, option or missing argument), and a synopsis line (with
  `[--flag ...]`, `NAME...` or `a|b`) names only options that exist;
- every `--set key=value` in the docs names a recipe field;
- every relative link in docs/*.md points to a file that exists, and docs/index.md links every page;
- every command's `--help` shows an example.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]


def _load_docgen():
    spec = importlib.util.spec_from_file_location("docgen", ROOT / "tools" / "docgen.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docgen", module)
    spec.loader.exec_module(module)
    return module


docgen = _load_docgen()


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- generated pages ------------------------------------------------------------------------------


def test_generated_pages_are_up_to_date():
    stale = docgen.stale(ROOT)
    assert not stale, f"{', '.join(map(str, stale))} stale: run python tools/docgen.py"


def test_docgen_check_mode_agrees():
    assert docgen.main(["--check"]) == 0


def test_every_recipe_field_is_documented():
    missing = docgen.undocumented_fields()
    assert not missing, (
        "recipe fields without a meaning: give them a Field description in stforecast/config.py "
        f"or an entry in FIELD_NOTES in tools/docgen.py: {missing}"
    )
    assert not docgen.stale_notes(), "FIELD_NOTES names fields that no longer exist"


def test_recipe_page_lists_every_field():
    from stforecast.config import Recipe

    text = (ROOT / docgen.RECIPES_PAGE).read_text()
    fields = [f.dotted for f in docgen.recipe_fields()]
    assert len(fields) == len(set(fields))
    for section in Recipe.model_fields:
        assert f"## `[{section}]`" in text
    for dotted in fields:
        assert f"| `{dotted}` |" in text, dotted


def test_cli_page_lists_every_option():
    text = (ROOT / docgen.CLI_PAGE).read_text()
    for path, command in docgen.walk_commands():
        assert f"## `{' '.join(path)}`" in text
        for param in command.params:
            for name in param.opts if docgen._is_option(param) else []:
                assert f"`{name}" in text, f"{' '.join(path)} {name}"


# -- command lines in the docs --------------------------------------------------------------------

SHELL_FENCES = {"", "bash", "sh", "shell", "console", "text", "crontab", "cron"}
_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
_SYNOPSIS = re.compile(r"\[--?[A-Za-z]|\[[A-Z]|[\w\]]\.\.\.|\s\.\.\.(\s|$)|[A-Za-z]\|[A-Za-z]")
_SEPARATORS = {"&&", "||", ";", "|", "&"}
_REDIRECTS = {">", ">>", "<", ">&", "&>", "<&", ">|", "&>>", "2>", "2>>"}
_ENV = re.compile(r"^[A-Za-z_]\w*=")


def fenced_lines(path: Path) -> list[tuple[int, str, str]]:
    """`(line number, fence language, logical line)` of every fenced block; backslash
    continuations joined, `$ ` prompts removed (in `console` blocks only prompted lines)."""
    out, fence, lang, pending, start = [], None, "", "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = _FENCE.match(raw)
        if fence is None:
            if match:
                fence, lang = match.group(1), match.group(2).lower()
            continue
        if match and match.group(1) == fence and not match.group(2):
            fence, pending = None, ""
            continue
        line = raw.strip()
        if not pending:
            start = number
            if lang == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            elif line.startswith("$ "):
                line = line[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, lang, pending + line))
        pending = ""
    return out


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def _is_stforecast(token: str) -> bool:
    return not _ENV.match(token) and (token == "stforecast" or token.endswith("/stforecast"))


def stforecast_invocations(line: str) -> list[list[str]]:
    """The argument lists of every `stforecast` call in a shell line (after `&&`, `;`, `|`,
    env assignments, `python -m`, `torchrun ... -m`, paths such as `.venv/bin/stforecast`)."""
    calls, current = [], []
    tokens = _tokens(line)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in _SEPARATORS:
            calls.append(current)
            current = []
        elif token in _REDIRECTS:
            i += 1  # the redirection's target
        elif token.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in _REDIRECTS:
            pass
        else:
            current.append(token)
        i += 1
    calls.append(current)
    out = []
    for words in calls:
        for k, word in enumerate(words):
            if _is_stforecast(word):
                out.append(words[k + 1 :])
                break
    return out


def _doc_lines() -> list[tuple[str, str]]:
    items = []
    for page in PAGES:
        for number, lang, line in fenced_lines(page):
            if lang not in SHELL_FENCES:
                continue
            try:
                calls = stforecast_invocations(line)
            except ValueError:  # unbalanced quotes: reported by the test if it calls stforecast
                calls = [[]] if "stforecast" in line else []
            if calls:
                items.append((f"{_rel(page)}:{number}", line))
    return items


DOC_LINES = _doc_lines()


def _option_names(command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        if docgen._is_option(param):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _resolve(args: list[str]):
    """Walk into (sub-)command groups: `(command, its name, the remaining arguments)`."""
    command, name = docgen.root_command(), "stforecast"
    while docgen.is_group(command) and args and not args[0].startswith("-"):
        sub = command.commands.get(args[0])
        if sub is None:
            raise AssertionError(f"unknown command {args[0]!r} of {name}")
        command, name, args = sub, f"{name} {args[0]}", args[1:]
    return command, name, args


def check_invocation(args: list[str]) -> None:
    """Parse `args` as the real CLI does; raises on an unknown command or option, a missing
    argument, a wrong type. Nothing runs: only parameter conversion (no file checks)."""
    command, name, rest = _resolve(list(args))
    if docgen.is_group(command) or {"--help", "-h"} & set(rest):
        unknown = [
            a for a in rest if a.startswith("-") and a.split("=")[0] not in _option_names(command)
        ]
        assert not unknown, f"{name}: unknown option(s) {unknown}"
        return
    command.make_context(name, list(rest), resilient_parsing=False)


def check_synopsis(line: str) -> None:
    """A synopsis (`[--out DIR]`, `SOURCE...`, `auto|cpu`): every option shown must exist."""
    words = line.split()
    k = next(i for i, w in enumerate(words) if _is_stforecast(w))
    names = [w for w in words[k + 1 :] if re.fullmatch(r"[a-z][\w-]*", w)]
    command, name, _ = _resolve(names[:2])
    shown = re.findall(r"(?:^|[\s\[|])(--?[A-Za-z][\w-]*)", " ".join(words[k + 1 :]))
    unknown = sorted(set(shown) - _option_names(command))
    assert not unknown, f"{name}: unknown option(s) {unknown}"


@pytest.mark.parametrize(("where", "line"), DOC_LINES, ids=[w for w, _ in DOC_LINES])
def test_documented_command_lines_parse(where, line):
    if _SYNOPSIS.search(line):
        check_synopsis(line)
        return
    calls = stforecast_invocations(line)
    assert calls, f"{where}: no stforecast call found in {line!r}"
    for args in calls:
        try:
            check_invocation(args)
        except Exception as err:  # click's UsageError, BadParameter, NoSuchOption, ...
            message = err.format_message() if hasattr(err, "format_message") else str(err)
            pytest.fail(f"{where}: `stforecast {' '.join(args)}`: {type(err).__name__}: {message}")


def test_doc_lines_were_found():
    assert len(DOC_LINES) > 20
    assert any(line.startswith("stforecast forecast") for _, line in DOC_LINES)


def test_the_checker_rejects_bad_lines():
    with pytest.raises(Exception, match=r"no-such|No such option"):
        check_invocation(["train", "recipes/quickstart.toml", "--no-such-flag"])
    with pytest.raises(AssertionError, match="unknown command"):
        check_invocation(["trian", "recipes/quickstart.toml"])
    with pytest.raises(Exception, match=r"Missing|missing"):
        check_invocation(["synthetic", "rain-cells", "--frames", "10"])
    with pytest.raises(AssertionError, match="--bogus"):
        check_synopsis("stforecast train RECIPE.toml [--bogus] [--out RUN_DIR]")
    check_synopsis("stforecast train RECIPE.toml [--set dotted.key=value ...] [--out RUN_DIR]")
    assert stforecast_invocations(
        "A=1 torchrun --nproc-per-node 2 -m stforecast train r.toml > log 2>&1 && stforecast models"
    ) == [["train", "r.toml"], ["models"]]


def test_path_parameters_do_not_touch_the_file_system():
    """The parse check above must not depend on files: no parameter checks existence."""
    for path, command in docgen.walk_commands():
        for param in command.params:
            info = getattr(getattr(param, "type_descriptor", None), "parameter_info", None)
            kind = getattr(param, "type", None)  # click without Typer's own copy
            exists = getattr(info, "exists", None) or getattr(kind, "exists", None)
            assert not exists, f"{' '.join(path)} {param.name}: exists=True"


# -- --set keys -----------------------------------------------------------------------------------

_SET = re.compile(r"--set[ =]+[\"']?([A-Za-z_][\w.]*)=")


def recipe_field_exists(dotted: str) -> bool:
    from stforecast.config import Recipe

    model: typing.Any = Recipe
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        if typing.get_origin(annotation) is dict:
            return True  # model.options.window: any key of a free-form table
        return i == len(parts) - 1
    return True


def _set_keys() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for key in _SET.findall(line):
                if any(c.isupper() for c in key):  # a placeholder such as SECTION.FIELD
                    continue
                found.append((f"{_rel(page)}:{number}", key))
    return found


def test_set_keys_name_recipe_fields():
    keys = _set_keys()
    assert len(keys) > 5
    bad = [f"{where}: {key}" for where, key in keys if not recipe_field_exists(key)]
    assert not bad, "--set names no recipe field:\n" + "\n".join(bad)


def test_recipe_field_lookup():
    assert recipe_field_exists("data.split.fractions")
    assert recipe_field_exists("model.options.window")
    assert not recipe_field_exists("data.split.nope")
    assert not recipe_field_exists("train.max_steps.x")
    assert not recipe_field_exists("training.max_steps")


# -- links ----------------------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE = re.compile(r"```.*?```|~~~.*?~~~|`[^`\n]*`", re.S)


def test_relative_links_point_to_files():
    bad = []
    for page in DOCS:
        text = _CODE.sub("", page.read_text(encoding="utf-8"))
        for target in _LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http:, https:, mailto:, in-page anchors
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                bad.append(f"{_rel(page)}: {target}")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_index_links_every_page():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, f"docs/index.md does not link {page.name}"


# -- help texts -----------------------------------------------------------------------------------

LEAVES = [" ".join(p[1:]) for p, c in docgen.walk_commands() if not docgen.is_group(c)]


@pytest.mark.parametrize("name", LEAVES)
def test_help_shows_an_example(name):
    from typer.testing import CliRunner

    from stforecast.cli.app import app

    result = CliRunner().invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"stforecast {name} --help has no example"
