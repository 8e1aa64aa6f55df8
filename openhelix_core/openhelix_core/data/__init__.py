"""Dataset formats (pure numpy): CALVIN's episode/annotation layout."""

from .calvin_format import CalvinDataset, CalvinEpisodeWriter, to_relative_action

__all__ = ["CalvinDataset", "CalvinEpisodeWriter", "to_relative_action"]
