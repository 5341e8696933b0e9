"""Names of the trio's slots, shared by the trainer and the widget.

Kept free of torch: the widget names its prediction layers from the slots while the training
stack may still be importing in the warm-up thread (a second import of the same module from
the GUI thread would wait for it).
"""

from __future__ import annotations

from collections.abc import Sequence


def slot_keys(names: Sequence[str]) -> list[str]:
    """Unique keys for the slots, so the same architecture may fill two slots."""
    keys, seen = [], {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        keys.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return keys
