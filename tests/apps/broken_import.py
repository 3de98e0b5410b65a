"""An application module that cannot be imported (the child must not respawn in a loop)."""

raise ImportError("this application is broken on purpose")
