"""What changes the disk an app runs from: the layouts (release folders, or one file in
place), staging from an archive or a delta, the transaction (journal, switch, restart, health
check, commit or roll back) and how a switched version comes to run (an app's restart, or
updaterd's own hand-over)."""
