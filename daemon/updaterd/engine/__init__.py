"""The update engine as a library: check, update, rollback and recover for one app at a time,
each as one operation with its phases and its one outcome, and the gate a switch passes. It
holds no lock and no socket: `updaterd --once` and the daemon both drive it."""
