"""The publisher's side: keys, `publish`, key rotation, and the day-to-day feed commands (list,
yank, resign, promote, prune, check). Nothing here runs on a host that only installs."""
