"""Edit one field of a spec file in place, leaving every other byte alone.

Specs are written by people: they carry comments, blank lines, a chosen order and quoting.
A load-and-dump round trip would lose all of that, and a reviewer would see a rewrite where
one line changed. So edits work on the text: PyYAML's node marks (``giftbox.spec.parse_yaml``)
give the exact character span of the value, and only that span is replaced, in the style it
was written in (plain, quoted, flow ``[a, b]`` or block ``- a``). No ruamel needed: we only
ever replace a scalar or a list of scalars, and the marks are enough for that.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from giftbox.errors import YAML_VALUE_ERRORS, SpecError, SpecProblem
from giftbox.spec import parse_yaml

MAX_FLOW_LINE = 100  # a flow list longer than this is rewritten as a block list


def _lookup(root: yaml.Node, path: Sequence[str], file: str
            ) -> tuple[yaml.Node | None, yaml.Node | None, yaml.MappingNode]:
    """(key node, value node, parent mapping) of ``path``; key/value None when absent."""
    node = root
    for depth, name in enumerate(path):
        if not isinstance(node, yaml.MappingNode):
            raise SpecError([SpecProblem(file, node.start_mark.line + 1,
                                         ".".join(path[:depth]), "must be a mapping")])
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == name:
                if depth == len(path) - 1:
                    return key, value, node
                node = value
                break
        else:
            return None, None, node
    raise AssertionError("empty path")


def scalar_text(value: str, style: str | None = None) -> str:
    """``value`` as YAML, in ``style`` when given, else plain if YAML reads it back as the
    same string (``33.0.0`` yes; ``1.10``, ``yes`` or ``null`` would not be, so they are
    quoted)."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style != '"':
        try:
            loaded = yaml.safe_load(value)
        except (yaml.YAMLError, *YAML_VALUE_ERRORS):
            loaded = None  # a tagged value YAML cannot build (!!bool maybe): quoted
        if (isinstance(loaded, str) and loaded == value and "#" not in value
                and not value.startswith(("[", "{", "&", "*", "!", "|", ">", "'", '"', "%", "@"))):
            return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_scalar(text: str, file: str, path: Sequence[str], value: str) -> str:
    """``text`` with the scalar at ``path`` (e.g. upstream.git.ref) replaced by ``value``."""
    _key, node, _parent = _lookup(parse_yaml(text, file), path, file)
    if node is None or not isinstance(node, yaml.ScalarNode):
        raise SpecError([SpecProblem(file, None, ".".join(path),
                                     "is missing or not a single value; cannot update it")])
    style = node.style if node.style in ("'", '"') else None
    start, end = node.start_mark.index, node.end_mark.index
    return text[:start] + scalar_text(value, style) + text[end:]


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """Index just past the newline ending the line that holds ``index``."""
    end = text.find("\n", index)
    return len(text) if end < 0 else end + 1


def _trailing_comment(text: str, item: yaml.Node) -> str:
    """``  # why`` after a block list item on its line, so a kept item keeps its comment."""
    end = item.end_mark.index
    rest = text[end:_line_end(text, end)].rstrip("\n")
    return rest if rest.strip().startswith("#") else ""


def set_list(text: str, file: str, key: str, items: Sequence[str]) -> str:
    """``text`` with the top-level list ``key`` set to ``items``, written in its own style.

    A block list keeps its indentation and the comments after items that stay; a flow list
    stays a flow list unless the line would get longer than ``MAX_FLOW_LINE``. A missing key
    is added before ``package:`` (the order the README shows), as a block list.
    """
    root = parse_yaml(text, file)
    key_node, node, parent = _lookup(root, [key], file)
    if key_node is None or node is None:
        return _insert_key(text, parent, key, items)
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _replace_block(text, key_node, node, items)
    # A flow list, or an empty value (``patches:``): replace the value's span.
    start, end = node.start_mark.index, node.end_mark.index
    colon = text.index(":", key_node.end_mark.index)
    if start <= colon or (isinstance(node, yaml.ScalarNode) and node.value == ""):
        # an empty value (``patches:``) has no span of its own: write right after the colon
        start = end = colon + 1
        flow = " " + _flow(items)
    else:
        flow = _flow(items)
    line_start = _line_start(text, start)
    if len(text[line_start:start]) + len(flow) <= MAX_FLOW_LINE or not items:
        return text[:start] + flow + text[end:]
    indent = " " * (key_node.start_mark.column + 2)
    block = "".join(f"\n{indent}- {scalar_text(i)}" for i in items)
    after = text[end:]
    # the flow list ended the line; the block list's own newlines replace it
    return text[:colon + 1] + block + after


def _flow(items: Sequence[str]) -> str:
    return "[" + ", ".join(scalar_text(i) for i in items) + "]"


def _replace_block(text: str, key_node: yaml.Node, node: yaml.SequenceNode,
                   items: Sequence[str]) -> str:
    first, last = node.value[0], node.value[-1]
    start = _line_start(text, first.start_mark.index)
    end = _line_end(text, last.end_mark.index)
    dash = text.rfind("-", start, first.start_mark.index)
    indent = text[start:dash]
    comments = {str(i.value): _trailing_comment(text, i) for i in node.value
                if isinstance(i, yaml.ScalarNode)}
    if not items:
        colon = text.index(":", key_node.end_mark.index)
        return text[:colon + 1] + " []" + text[colon + 1:start] + text[end:]
    lines = "".join(f"{indent}- {scalar_text(i)}{comments.get(i, '')}\n" for i in items)
    return text[:start] + lines + text[end:]


def _insert_key(text: str, parent: yaml.MappingNode, key: str, items: Sequence[str]) -> str:
    if not items:
        return text
    block = f"{key}:\n" + "".join(f"  - {scalar_text(i)}\n" for i in items) + "\n"
    for key_node, _value in parent.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "package":
            at = _line_start(text, key_node.start_mark.index)
            # step above the comment lines that introduce ``package:``
            while at > 0:
                previous = _line_start(text, at - 1)
                if not text[previous:at].lstrip().startswith("#"):
                    break
                at = previous
            return text[:at] + block + text[at:]
    if not text.endswith("\n"):
        text += "\n"
    return text + block


def has_key(text: str, file: str, key: str) -> bool:
    """Whether the top-level mapping of ``text`` has ``key``."""
    key_node, _value, _parent = _lookup(parse_yaml(text, file), [key], file)
    return key_node is not None
