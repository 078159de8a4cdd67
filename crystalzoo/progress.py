"""Progress bars: tqdm's, a widget in a notebook with ipywidgets and text elsewhere.

Example::

    >>> with progress_bar(range(3), desc="crystals", disable=True) as bar:
    ...     sum(bar)
    3
"""

from __future__ import annotations

import warnings
from typing import Any


def progress_bar(*args: Any, **kwargs: Any):
    """``tqdm.auto.tqdm(*args, **kwargs)``, without the warning that tqdm gives where a notebook
    has no ipywidgets ("IProgress not found"): the bar is then text, which is all it needs to be."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm
    return tqdm(*args, **kwargs)
