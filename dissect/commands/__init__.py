"""One module per subcommand: add_parser(subparsers) sets `handler=main` via set_defaults."""
