"""What a symbol (a ticker) may be: one rule for data prep, the settings and the database.

Upper-case letters and digits, with single dots or hyphens between them (``BRK.B``,
``BF-B``), at most :data:`SYMBOL_MAX_LENGTH` characters, the width of every ``symbol``
column of the database (``mlops.db.schema``). Nothing else: a symbol ends up in object
store keys, SQL parameters, broker orders and file names, so ``../../EVIL`` or a quote
never gets past data prep (its rows are quarantined with the reason) nor the settings.
"""

from __future__ import annotations

import re

SYMBOL_MAX_LENGTH = 16
SYMBOL_PATTERN = re.compile(r"[A-Z0-9]+(?:[.-][A-Z0-9]+)*")
SYMBOL_RULE = (
    f"1 to {SYMBOL_MAX_LENGTH} characters: A-Z and 0-9, with single '.' or '-' between them"
)


def is_symbol(value: str) -> bool:
    """Whether ``value`` (already stripped and upper-cased) is a valid symbol."""
    return len(value) <= SYMBOL_MAX_LENGTH and SYMBOL_PATTERN.fullmatch(value) is not None


# Why a row whose symbol breaks the rule is quarantined.
NOT_A_SYMBOL = f"symbol is not a ticker ({SYMBOL_RULE})"
