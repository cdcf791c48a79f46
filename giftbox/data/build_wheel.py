"""Runs inside the builder with the deps venv's interpreter: builds the project's wheel by
calling its PEP 517 backend directly, in this process, once every build requirement is met.

Usage: python -B build_wheel.py SOURCE_DIR WHEEL_DIR

What `pip wheel --no-build-isolation --check-build-dependencies --no-deps` does, less pip's
start and its prepare_metadata_for_build_wheel call (for pbr a whole egg_info run): the
build-system table is read from pyproject.toml (setuptools' legacy backend when there is
none), each static requirement and each the backend names in get_requires_for_build_wheel
is checked against what the venv has installed (its markers evaluated here), and only then
build_wheel runs. An unmet requirement fails the build, naming it, as pip would. setuptools
(and pbr, which is setuptools) is asked to be quiet and, from 70.1, to store the wheel's
members rather than deflate them: the same members, byte for byte, as pip's wheel.

On an interpreter without tomllib (3.11) or importlib.metadata (3.8) the job is handed to
that same pip command unchanged. Kept compatible with old target Pythons (3.5+) for that
reason: no f-strings.
"""

import os
import sys

DEFAULT_REQUIRES = ["setuptools>=40.8.0"]
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"


def pip_wheel(source, out):
    argv = [sys.executable, "-B", "-m", "pip", "wheel", "--no-build-isolation",
            "--check-build-dependencies", "--no-deps", "--no-index", "--progress-bar", "off",
            "--wheel-dir", out, source]
    os.execv(sys.executable, argv)


def build_system(source, tomllib):
    path = os.path.join(source, "pyproject.toml")
    if not os.path.isfile(path):
        return DEFAULT_REQUIRES, LEGACY_BACKEND, []
    with open(path, "rb") as f:
        try:
            table = tomllib.load(f).get("build-system")
        except tomllib.TOMLDecodeError as exc:
            fail("{} is not valid TOML: {}".format(path, exc))
    if table is None:
        return DEFAULT_REQUIRES, LEGACY_BACKEND, []
    if not isinstance(table, dict) or "requires" not in table:
        fail("pyproject.toml's [build-system] table has no 'requires' key (PEP 518)")
    requires, backend = table["requires"], table.get("build-backend") or LEGACY_BACKEND
    backend_path = table.get("backend-path", [])
    if not (isinstance(requires, list) and all(isinstance(r, str) for r in requires)):
        fail("pyproject.toml's build-system.requires is not a list of strings (PEP 518)")
    if not isinstance(backend, str) or not (
            isinstance(backend_path, list) and all(isinstance(p, str) for p in backend_path)):
        fail("pyproject.toml's build-system.build-backend is not a string, or its "
             "backend-path not a list of strings (PEP 517)")
    return requires, backend, backend_path


def unmet(requirements, metadata, packaging):
    """The requirements the venv does not meet, each with why."""
    missing = []
    for text in requirements:
        try:
            req = packaging.requirements.Requirement(text)
        except packaging.requirements.InvalidRequirement as exc:
            missing.append("{} (not a valid requirement: {})".format(text, exc))
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append("{} (not installed)".format(text))
            continue
        if not req.specifier.contains(have, prereleases=True):
            missing.append("{} ({} {} is installed)".format(text, req.name, have))
    return missing


def load_backend(source, backend, backend_path):
    root = os.path.realpath(source)
    for entry in reversed(backend_path):
        where = os.path.realpath(os.path.join(source, entry))
        if os.path.commonpath([root, where]) != root:
            fail("pyproject.toml's backend-path entry {!r} is outside the source tree "
                 "(PEP 517)".format(entry))
        sys.path.insert(0, where)
    module_name, _, attributes = backend.partition(":")
    try:
        obj = __import__(module_name, fromlist=["_"])
        for name in filter(None, attributes.split(".")):
            obj = getattr(obj, name)
    except (ImportError, AttributeError) as exc:
        fail("the build backend {!r} cannot be loaded from the venv: {}".format(backend, exc))
    return obj


def vendored_packaging():
    """pip's vendored ``packaging`` (every venv giftbox makes has pip), loaded under a name
    of its own: importing ``pip`` itself would make setuptools' distutils hack stand down
    (it hands pip the stdlib's distutils), and the backend would then fail to import."""
    import importlib.util
    import sysconfig
    folder = os.path.join(sysconfig.get_paths()["purelib"], "pip", "_vendor", "packaging")
    spec = importlib.util.spec_from_file_location(
        "_giftbox_packaging", os.path.join(folder, "__init__.py"),
        submodule_search_locations=[folder])
    if spec is None or spec.loader is None:
        fail("pip is not in the venv: {} is missing".format(folder))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    __import__(spec.name + ".requirements")
    __import__(spec.name + ".version")
    return module


# Backends known to take setuptools' config settings: they list every file they copy
# (nova: 13,000 lines, each streamed out of the builder and into the log); quiet, they still
# say every warning and error. Other backends may refuse a setting they do not know.
SETUPTOOLS_BACKENDS = ("setuptools.build_meta", "pbr.build")
# setuptools' own bdist_wheel (70.1 and later) takes --compression. The wheel is installed
# into the venv and never shipped: stored, its members are the same bytes at the same names
# with the same dates and modes, and deflating nova's 28 MB of them cost a third of its
# build. An older setuptools (bdist_wheel from the wheel project) gets no such option.
STORED_SINCE = "70.1"


def backend_settings(backend, metadata, packaging):
    """The config settings giftbox gives ``backend``: None for a backend it does not know."""
    if backend.partition(":")[0] not in SETUPTOOLS_BACKENDS:
        return None
    settings = {"--quiet": None}
    try:
        have = packaging.version.Version(metadata.version("setuptools"))
    except (metadata.PackageNotFoundError, packaging.version.InvalidVersion):
        return settings
    if have >= packaging.version.Version(STORED_SINCE):
        settings["--build-option"] = ["--compression=stored"]
    return settings


def fail(message):
    sys.stderr.write("ERROR: " + message + "\n")
    sys.exit(1)


def main():
    source, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    # Not this script's directory (the build directory) on the path: only what the venv
    # and the backend-path give.
    sys.path.pop(0)
    try:
        import importlib.metadata as metadata
        import tomllib
    except ImportError:
        pip_wheel(source, out)
        return
    packaging = vendored_packaging()
    requires, backend_name, backend_path = build_system(source, tomllib)
    missing = unmet(requires, metadata, packaging)
    if missing:
        fail("build requirements of {} not met by the venv: {}".format(
            source, "; ".join(missing)))
    os.chdir(source)
    backend = load_backend(source, backend_name, backend_path)
    hook = getattr(backend, "get_requires_for_build_wheel", None)
    dynamic = list(hook(None)) if hook is not None else []
    missing = unmet(dynamic, metadata, packaging)
    if missing:
        fail("build requirements {} names for the wheel are not met by the venv: {}".format(
            backend_name, "; ".join(missing)))
    os.makedirs(out, exist_ok=True)
    name = backend.build_wheel(out, backend_settings(backend_name, metadata, packaging))
    sys.stdout.write("built {}\n".format(name))


if __name__ == "__main__":
    main()
