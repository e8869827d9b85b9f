"""The command line, ``python -m engine`` / ``essc-engine``: the top floor.

``main`` holds the parser, the plain commands and the one error policy (a message on
stderr and exit status 2 for bad input, 1 for a failure at run time); ``serve`` and
``revocation`` register their command groups with it.
"""
