"""How `tunelab data inspect` marks what trains: bold green on a terminal, plain text elsewhere."""

GREEN, RESET = "\033[32;1m", "\033[0m"


def highlight(text: str, colour: bool, plain: str) -> str:
    """`text` in green when `colour`, else `plain` (brackets, or a token/TAG pair)."""
    return f"{GREEN}{text}{RESET}" if colour else plain
