"""The ``dynofa`` command line: the top layer, above ``subnets``, ``governors`` and ``service``.

It lives outside :mod:`dynofa` so that the bottom package (shared vocabulary, config, protocol and
the torch-free client) never reaches up into the layers built on it. Entry point:
:func:`cli.main.main` (the ``dynofa`` script, or ``python -m cli``).
"""
