"""Thin command modules behind ``deepcraters SUBCOMMAND``."""
