"""Further `mcuforge` commands, one module each. A module here defines `command` (a click
command or group); the CLI adds every one it finds, so a new command needs no edit elsewhere."""
