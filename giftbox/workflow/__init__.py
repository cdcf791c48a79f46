"""The packager's daily workflow on top of the source stage.

One module per command: ``export`` (a work tree's commits back into patches/<project>/),
``check`` (does each patch still apply to its pinned ref?), ``bump`` (move the pin and rebase
the series), ``backport`` (an upstream commit as a new patch), ``diff`` (what differs between
two pins). ``series`` holds what they share (format-patch output, naming, writing a series
back as one change) and ``specedit`` edits a spec file in place without reformatting it.
"""
