"""Settings resolved once from the command line and the environment into a frozen object.

The rest of the code reads a ``Settings``, never ``os.environ``: that keeps what a build saw
explicit, and keeps secrets (index credentials) in one place we know never to serialise.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_INDEX_URL = "https://pypi.org/simple"

# Where hosts keep their trusted CA bundle; the first that exists is propagated into builders.
_CA_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL family
    "/etc/ssl/ca-bundle.pem",  # SUSE
)


def _find_root(start: Path) -> Path:
    """The giftbox project root: the nearest directory upwards holding ``specs/``."""
    for candidate in (start, *start.parents):
        if (candidate / "specs").is_dir():
            return candidate
    return start


def _pip_config() -> configparser.ConfigParser:
    """pip's own configuration files, in pip's order of precedence (later wins)."""
    parser = configparser.ConfigParser()
    files = ["/etc/pip.conf", "/etc/xdg/pip/pip.conf",
             str(Path.home() / ".pip" / "pip.conf"),
             str(Path.home() / ".config" / "pip" / "pip.conf")]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    parser.read([f for f in files if os.path.isfile(f)])
    return parser


def _pip_setting(env: dict[str, str], parser: configparser.ConfigParser, name: str) -> str | None:
    value = env.get("PIP_" + name.upper().replace("-", "_"))
    if value:
        return value
    for section in ("install", "global"):
        if parser.has_option(section, name):
            return parser.get(section, name)
    return None


def _with_netrc(url: str, netrc_file: Path | None) -> str:
    """``url`` with the credentials netrc holds for its host, when it carries none: pip in a
    builder has no netrc, so the index URL it is given (and masks) carries them."""
    import netrc
    from urllib.parse import quote, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if netrc_file is None or "@" in parts.netloc or not parts.hostname:
            return url
        found = netrc.netrc(str(netrc_file)).authenticators(parts.hostname)
    except (OSError, ValueError, netrc.NetrcParseError):
        return url
    if not found or not found[0]:
        return url
    userinfo = quote(found[0], safe="") + (f":{quote(found[2], safe='')}" if found[2] else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def _number(env: dict[str, str], name: str, default: float, *, whole: bool = False) -> float:
    """A non-negative number from ``$name`` (``default`` when unset or empty), or the error
    that names the variable."""
    from giftbox.errors import GiftboxError

    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(int(text)) if whole else float(text)
    except ValueError:
        value = -1.0
    if value < 0 or value != value or value == float("inf"):
        raise GiftboxError(f"${name} is '{text[:40]}', not a "
                           + ("whole number" if whole else "number") + " of 0 or more",
                           hint=f"set it to e.g. {default:g}, or unset it for the default "
                                f"({default:g})")
    return value


@dataclass(frozen=True)
class Settings:
    root: Path
    cache_dir: Path
    state_dir: Path
    index_url: str = DEFAULT_INDEX_URL
    extra_index_urls: tuple[str, ...] = ()
    ca_bundle: Path | None = None
    # Index credentials for hosts whose URL carries none (as pip and requests read it).
    netrc_file: Path | None = None
    verbose: bool = False
    # The container engine ``giftbox.engine.Engine`` connects to (``$DOCKER_HOST``).
    docker_host: str = "unix:///var/run/docker.sock"
    # Who acts, as records name them (``$GIFTBOX_USER``: CI sets it to the person or bot behind
    # a run); None means the login name.
    user: str | None = None
    # Where the records live (``$GIFTBOX_DATABASE``: a postgresql:// URL or a file); None is
    # ``<state dir>/giftbox.db``.
    database: str | None = None
    # Under GitHub Actions stages fold into log groups (``$GITHUB_ACTIONS``).
    ci_groups: bool = False
    # A terminal that can redraw lines (``$TERM`` is not ``dumb``).
    smart_terminal: bool = True
    # A Debian mirror caught mid-sync: how often a bootstrap tries, and how many seconds apart
    # (``$GIFTBOX_MIRROR_RETRIES``, ``$GIFTBOX_MIRROR_RETRY_DELAY``).
    mirror_retries: int = 3
    mirror_retry_delay: float = 60.0

    @property
    def specs_dir(self) -> Path:
        return self.root / "specs"

    @property
    def patches_dir(self) -> Path:
        return self.root / "patches"

    @property
    def builders_dir(self) -> Path:
        return self.root / "builders"

    @property
    def repos_dir(self) -> Path:
        return self.root / "repos"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @classmethod
    def resolve(cls, *, root: Path | None = None, verbose: bool = False,
                env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        root = (root or Path(env.get("GIFTBOX_ROOT") or _find_root(Path.cwd()))).resolve()
        cache_home = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache_dir = Path(env.get("GIFTBOX_CACHE") or cache_home / "giftbox")
        state_dir = Path(env.get("GIFTBOX_STATE") or root / ".giftbox")
        parser = _pip_config()
        index_url = _pip_setting(env, parser, "index-url") or DEFAULT_INDEX_URL
        extra = _pip_setting(env, parser, "extra-index-url") or ""
        ca = None
        for candidate in (env.get("GIFTBOX_CA_BUNDLE"), env.get("PIP_CERT"),
                          env.get("SSL_CERT_FILE"), env.get("REQUESTS_CA_BUNDLE"),
                          _pip_setting(env, parser, "cert"), *_CA_CANDIDATES):
            if candidate and os.path.isfile(candidate):
                ca = Path(candidate)
                break
        netrc_path = Path(env.get("NETRC") or Path(env.get("HOME") or Path.home()) / ".netrc")
        netrc_file = netrc_path if netrc_path.is_file() else None
        return cls(root=root, cache_dir=cache_dir, state_dir=state_dir,
                   index_url=_with_netrc(index_url.rstrip("/"), netrc_file),
                   extra_index_urls=tuple(_with_netrc(u.rstrip("/"), netrc_file)
                                          for u in extra.split()
                                          if u.startswith(("http://", "https://"))),
                   ca_bundle=ca, verbose=verbose, netrc_file=netrc_file,
                   docker_host=env.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
                   user=env.get("GIFTBOX_USER") or None,
                   database=env.get("GIFTBOX_DATABASE") or None,
                   ci_groups=env.get("GITHUB_ACTIONS") == "true",
                   smart_terminal=env.get("TERM") != "dumb",
                   mirror_retries=int(_number(env, "GIFTBOX_MIRROR_RETRIES", 3, whole=True)),
                   mirror_retry_delay=_number(env, "GIFTBOX_MIRROR_RETRY_DELAY", 60.0))
