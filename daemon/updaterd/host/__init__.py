"""What this host was told and what it recorded: the configuration and its file, which folders
are trusted, each app's state and the one module that edits it, and what the installed unit
may write."""
