"""The running daemon: its nursery, one worker per app (the one owner of that app's
operations) and its schedule, the control socket (framing, authorization, methods), events,
inhibitors, metrics and the process lock."""
