"""Dataset formats (pure numpy): CALVIN's episode/annotation layout, and a ``.npy`` reader
that unpickles object arrays without running code from the file."""

from .calvin_format import CalvinDataset, CalvinEpisodeWriter, to_relative_action
from .safe_npy import UnsafePickleError, load_npy

__all__ = ["CalvinDataset", "CalvinEpisodeWriter", "UnsafePickleError", "load_npy", "to_relative_action"]
