"""What the user sees on the terminal: log lines, progress bars, warnings; quiet by default (the rules:
docs/architecture.md, "What the console shows").

    configure_console(verbose=args.verbose, debug=args.debug)      # once, at the start of a command
    with library_progress_bars(progress):                          # in library code that loads folders or data
        ...
"""

import contextlib
import logging
import os
import re
import sys
import warnings

import datasets
import huggingface_hub.utils
from transformers.utils import logging as transformers_logging

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
# Warnings that tell a user nothing they could act on, hidden unless debug (a regular expression each, matched at the
# start of the message; kept narrow so that a new warning of the same library still shows).
UNACTIONABLE_WARNINGS = (
    # peft <= 0.21 asks transformers 5 for this deprecated property every time it wraps a model in LoRA adapters
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)

# Log lines of the same kind: (logger, regular expression searched in the message).
UNACTIONABLE_LOG_LINES = (
    # accelerate's save_state stores a tied weight once (a GPT-2 or T5 backbone's output layer is its embedding) and
    # says so at every checkpoint; load_state ties it back (tests/test_backbone_training.py: resume is exact).
    ("accelerate.utils.other", r"Removed shared tensor .* while saving"),
)


def _drop_matching(pattern: str):
    """A logging filter (a callable taking the record) that drops the lines whose message matches `pattern`."""
    compiled = re.compile(pattern)
    return lambda record: not compiled.search(record.getMessage())


_LOG_LINE_FILTERS = [(name, _drop_matching(pattern)) for name, pattern in UNACTIONABLE_LOG_LINES]


def configure_console(
    verbose: bool = False, debug: bool = False, progress: bool = True, main_process: bool = True
) -> None:
    """Set up the console of a command-line run (call it once, before the command's work).

    Args:
        verbose: sentmim's INFO lines.
        debug: sentmim's DEBUG lines, the libraries' INFO lines and the warnings otherwise hidden.
        progress: datasets' bars and Hub download bars, on a terminal only; False turns them off everywhere.
        main_process: False on the other processes of a multi-process run: they show errors only (the main process
            speaks for all) and no library bars.
    """
    own_level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    library_level = logging.INFO if debug else logging.WARNING
    if not main_process:
        own_level = library_level = logging.ERROR
    logging.basicConfig(format=LOG_FORMAT)  # does nothing where the embedding program configured logging
    logging.getLogger().setLevel(library_level)  # accelerate, torch and others log through the root's handler
    logging.getLogger("accelerate").setLevel(library_level)  # its INFO lines: every state saved and loaded
    logging.getLogger("sentmim").setLevel(own_level)
    transformers_logging.set_verbosity(library_level)  # transformers and datasets have handlers of their own
    datasets.logging.set_verbosity(library_level)

    for name, line_filter in _LOG_LINE_FILTERS:
        (logging.getLogger(name).removeFilter if debug else logging.getLogger(name).addFilter)(line_filter)
    if not debug:
        for category, message in UNACTIONABLE_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)

    transformers_logging.disable_progress_bar()  # also turns off the Hub's bars, turned back on below if wanted
    if progress and main_process and _stderr_is_terminal():
        datasets.enable_progress_bars()
        huggingface_hub.utils.enable_progress_bars()
    else:
        datasets.disable_progress_bars()


def process_rank() -> int:
    """This process's rank in a torchrun / accelerate launch (0 when there is only one process)."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Only the first process of a launch prints results and logs; the others print nothing but their errors."""
    return process_rank() == 0


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


@contextlib.contextmanager
def library_progress_bars(enabled: bool):
    """`datasets` (load, map, filter) and `transformers` (loading weights) draw their own progress bars: within this
    block, enabled=False silences those too (for library callers asked for no progress; enabled=True changes
    nothing). The global switches are restored on exit."""
    datasets_bars = not datasets.are_progress_bars_disabled()
    transformers_bars = transformers_logging.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_bars:
            datasets.enable_progress_bars()
        if transformers_bars:
            transformers_logging.enable_progress_bar()
