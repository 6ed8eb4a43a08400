"""The one error type that mcuforge raises for bad input.

Every error says what was wrong, where (file, node or field) and what to do about it,
so that the CLI can print it without a traceback.
"""


class McuforgeError(Exception):
    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        lines = [self.what]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  fix:   {self.fix}")
        return "\n".join(lines)
