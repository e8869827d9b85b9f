"""The engine's version, written here and nowhere else.

engine.__version__ (the ``listening`` log line, ``status``, ``--version``) is this, in a
source tree as in an installed wheel; pyproject.toml's dynamic version reads this file
without importing anything, so it stays one plain string assignment.
"""

__version__ = "0.1.0"
