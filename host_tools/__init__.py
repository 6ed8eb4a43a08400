"""Host tools: the CLI, firmware builds, emulated boards, verification."""
