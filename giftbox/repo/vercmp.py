"""Version order as the clients see it: dpkg's for .deb, rpm's vercmp for .rpm.

Promotion picks "the highest version" and pruning keeps "the N highest", so both must agree with
what apt and dnf will install. String or PEP 440 order would not: ``1.0~rc1`` sorts below
``1.0`` in dpkg and rpm, ``1.10`` above ``1.9``. These are ports of dpkg's ``verrevcmp`` and
rpm's ``rpmvercmp``, checked against ``dpkg --compare-versions`` and ``rpm.vercmp`` in
tests/test_promote.py (spawning a process per comparison would make pruning a channel of
thousands of entries slow).
"""

from __future__ import annotations

_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ALNUM = _DIGITS | _LETTERS


def _dpkg_order(c: str) -> int:
    if c in _DIGITS:
        return 0
    if c in _LETTERS:
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and a[i] not in _DIGITS) or (j < len(b) and b[j] not in _DIGITS):
            ac = _dpkg_order(a[i]) if i < len(a) else 0
            bc = _dpkg_order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i] in _DIGITS and j < len(b) and b[j] in _DIGITS:
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i] in _DIGITS:
            return 1
        if j < len(b) and b[j] in _DIGITS:
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_deb(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), upstream, revision


def dpkg_compare(a: str, b: str) -> int:
    """<0, 0, >0 as ``dpkg --compare-versions a lt|eq|gt b``."""
    ea, ua, ra = _split_deb(a)
    eb, ub, rb = _split_deb(b)
    if ea != eb:
        return -1 if ea < eb else 1
    r = _verrevcmp(ua, ub) or _verrevcmp(ra, rb)
    return (r > 0) - (r < 0)


def rpmvercmp(a: str, b: str) -> int:
    """rpm's ``rpmvercmp`` of one version or release string."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and a[i] not in _ALNUM and a[i] not in "~^":
            i += 1
        while j < len(b) and b[j] not in _ALNUM and b[j] not in "~^":
            j += 1
        # ~ sorts before everything, even the end of the string.
        if (i < len(a) and a[i] == "~") or (j < len(b) and b[j] == "~"):
            if i >= len(a) or a[i] != "~":
                return 1
            if j >= len(b) or b[j] != "~":
                return -1
            i += 1
            j += 1
            continue
        # ^ sorts after the end of the string, before anything else.
        if (i < len(a) and a[i] == "^") or (j < len(b) and b[j] == "^"):
            if i >= len(a):
                return -1
            if j >= len(b):
                return 1
            if a[i] != "^":
                return 1
            if b[j] != "^":
                return -1
            i += 1
            j += 1
            continue
        if not (i < len(a) and j < len(b)):
            break
        kind = _DIGITS if a[i] in _DIGITS else _LETTERS
        si, sj = i, j
        while i < len(a) and a[i] in kind:
            i += 1
        while j < len(b) and b[j] in kind:
            j += 1
        seg_a, seg_b = a[si:i], b[sj:j]
        if not seg_b:  # segments of different kinds: a number beats letters
            return 1 if kind is _DIGITS else -1
        if kind is _DIGITS:
            seg_a, seg_b = seg_a.lstrip("0"), seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


def _split_rpm(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
    version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), version, release


def rpm_compare(a: str, b: str) -> int:
    """<0, 0, >0 as rpm's ``rpm.vercmp`` of two ``[E:]V-R`` strings."""
    ea, va, ra = _split_rpm(a)
    eb, vb, rb = _split_rpm(b)
    if ea != eb:
        return -1 if ea < eb else 1
    r = rpmvercmp(va, vb)
    if r == 0:  # as rpm.vercmp does: a missing release is an empty one, below any release
        r = rpmvercmp(ra, rb)
    return r
