"""One module per ``dynofa`` subcommand; each defines ``register(subparsers)``."""
