"""Generate the configuration tables of docs/trainers.md from the config dataclasses' `help` metadata.

    python docs/config_tables.py          # rewrite the tables in docs/trainers.md
    python docs/config_tables.py --check  # exit 1 when they are stale (tests/test_docs.py checks the same)

A table sits between `<!-- config-table: NAME -->` and `<!-- end config-table -->`; NAME is a class of
`trl_implicit_prm.trainers`. It lists the fields this package declares for that class, not the ones it inherits
from `ImplicitPRMBaseConfig` (which has its own table) nor the `transformers.TrainingArguments` ones.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

TRAINERS_MD = Path(__file__).resolve().parent / "trainers.md"
BLOCK = re.compile(r"(<!-- config-table: (\w+) -->\n)(.*?)(<!-- end config-table -->)", re.DOTALL)


def _own_fields(cls: type) -> list[tuple[dataclasses.Field, str]]:
    """(field, annotation as written) of the fields declared by `cls` and its trl_implicit_prm mixins, minus
    those of ImplicitPRMBaseConfig (the annotation is read from the class: parsers may overwrite `Field.type`)."""
    from trl_implicit_prm.trainers import ImplicitPRMBaseConfig

    inherited = (
        set() if cls is ImplicitPRMBaseConfig else {f.name for f in dataclasses.fields(ImplicitPRMBaseConfig)}
    )
    declared: dict[str, object] = {}
    for klass in cls.__mro__:
        if klass.__module__.startswith("trl_implicit_prm") and (
            klass is cls or not issubclass(klass, ImplicitPRMBaseConfig)
        ):
            for name, annotation in vars(klass).get("__annotations__", {}).items():
                declared.setdefault(name, annotation)
    return [
        (f, _type_name(declared[f.name]))
        for f in dataclasses.fields(cls)
        if f.name in declared and f.name not in inherited
    ]


def _type_name(annotation: object) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(field: dataclasses.Field) -> str:
    value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return f"`{value!r}`"


def table(class_name: str) -> str:
    """The markdown table of one configuration class."""
    from trl_implicit_prm import trainers

    cls = getattr(trainers, class_name)
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for f, type_name in _own_fields(cls):
        meaning = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            meaning += " One of: " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
        lines.append(f"| `{f.name}` | `{_cell(type_name)}` | {_cell(_default(f))} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """`text` with every config-table block regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + table(m.group(2)) + m.group(4), text)


def main(argv: list[str]) -> int:
    text = TRAINERS_MD.read_text(encoding="utf-8")
    fresh = render(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{TRAINERS_MD} is stale: run `python docs/config_tables.py`", file=sys.stderr)
            return 1
        return 0
    TRAINERS_MD.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
