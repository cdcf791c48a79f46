"""Fatal errors, each written for the person who has to fix it.

Every error giftbox raises on purpose is a ``GiftboxError``: the CLI prints its message as one
paragraph (plus the hint) and exits with its code; ``--verbose`` adds the traceback. Anything
else reaching the CLI is a bug and is shown with its traceback.
"""

from __future__ import annotations


class GiftboxError(Exception):
    """Base of the errors an operator is expected to act on."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = self.message.rstrip()
        if self.hint:
            text += "\n" + self.hint.rstrip()
        return text


class SpecError(GiftboxError):
    """A spec file is malformed or inconsistent; ``problems`` lists each as file:line."""

    exit_code = 2

    def __init__(self, problems: list[SpecProblem], *, hint: str | None = None) -> None:
        self.problems = problems
        lines = [p.render() for p in problems]
        super().__init__("\n".join(lines), hint=hint)


class SpecProblem:
    """One problem in a spec: where it is, which field, what is wrong, what to do."""

    def __init__(self, file: str, line: int | None, field: str, message: str,
                 hint: str | None = None) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        self.hint = hint

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        text = f"{where}:{field} {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "field": self.field,
                "message": self.message, "hint": self.hint}


class SourceError(GiftboxError):
    """Fetching or resolving upstream source failed (bad ref, bad URL, bad tarball)."""

    exit_code = 3


class PatchError(GiftboxError):
    """A patch is missing, unsafe, or does not apply."""

    exit_code = 4


class BuilderError(GiftboxError):
    """A builder image or container could not be prepared or run."""

    exit_code = 5


class BuildError(GiftboxError):
    """A build inside a builder failed (lock, wheel, venv, audit)."""

    exit_code = 6


class PackageError(GiftboxError):
    """Turning a built venv into a .deb/.rpm failed, or a quality gate refused it."""

    exit_code = 7


class RepoError(GiftboxError):
    """Publishing, promoting or pruning a channel failed; the channel is unchanged."""

    exit_code = 8


class StateError(GiftboxError):
    """The build records database is unusable (locked, newer schema, unwritable)."""

    exit_code = 9


class VerifyError(GiftboxError):
    """giftbox verify could not judge a candidate, or a check failed (its verdict is recorded);
    no channel is changed by verify."""

    exit_code = 10


# What PyYAML's safe constructors raise besides YAMLError for a tagged value they cannot build
# (``!!bool maybe``: KeyError; ``!!timestamp x``: AttributeError; ``!!int x``: ValueError; a
# value Python cannot hold: OverflowError): a reader of a hostile file catches these too.
YAML_VALUE_ERRORS = (ValueError, TypeError, OverflowError, KeyError, AttributeError)
