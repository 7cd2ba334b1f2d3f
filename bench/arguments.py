"""Command-line pieces the bench scripts share."""

from __future__ import annotations

import argparse


def sized_parser(description: str, rows: int) -> argparse.ArgumentParser:
    """A parser with ``--rows`` (default ``rows``) and ``--dim`` (default 128)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--dim", type=int, default=128)
    return parser


def known_names(parser: argparse.ArgumentParser, names: list[str], known, what: str) -> list[str]:
    """``names`` when each is one of ``known``; otherwise the parser exits naming them."""
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return names
