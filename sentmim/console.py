"""What the user sees on the terminal: log lines, progress bars, warnings."""

import contextlib

import datasets
from transformers.utils import logging as transformers_logging


@contextlib.contextmanager
def library_progress_bars(enabled: bool):
    """`datasets` (load, map, filter) and `transformers` (loading weights) draw their own progress bars: within this
    block, enabled=False silences those too (for library callers asked for no progress; enabled=True changes
    nothing). The global switches are restored on exit."""
    switches = [
        (datasets.are_progress_bars_disabled, datasets.disable_progress_bars, datasets.enable_progress_bars),
        (lambda: not transformers_logging.is_progress_bar_enabled(), transformers_logging.disable_progress_bar,
         transformers_logging.enable_progress_bar),
    ]
    restore = [enable for is_disabled, _, enable in switches if not is_disabled()]
    if not enabled:
        for _, disable, _ in switches:
            disable()
    try:
        yield
    finally:
        for enable in restore:
            enable()
