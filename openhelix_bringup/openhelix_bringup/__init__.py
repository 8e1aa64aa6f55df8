"""Starting OpenHelix: launch files and parameter files (installed in this package's share
directory) and the ``openhelix`` command (:mod:`.cli`)."""
