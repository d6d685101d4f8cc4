"""The utility commands, one module each (`bigtrain <command>`), sharing one argument parser (args.py)."""
