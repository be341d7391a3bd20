"""Typer command groups. Each command is thin: parse, call one manager method, print."""
