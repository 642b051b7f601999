"""The one error type users see.

Anything a user can cause (bad path, bad text, wrong layer, mismatched bundle) raises `NlakitError`
with one line: the problem, then the fix. Internal invariants use `assert`.
"""


class NlakitError(Exception):
    """A user-facing error: `problem` says what is wrong, `fix` what to do about it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = " ".join(problem.split()).rstrip(".")  # one line, whatever a wrapped library message held
        self.fix = " ".join(fix.split()) if fix else fix
        super().__init__(f"{self.problem}. Fix: {fix}" if fix else self.problem)
