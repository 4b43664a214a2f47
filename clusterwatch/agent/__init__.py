"""The node agent: runs a node's checks with the monitor's probe code, pushes, heals when cut off."""
