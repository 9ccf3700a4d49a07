"""Errors a user can cause. The CLI prints them as one line naming the fix, never a traceback."""

from collections.abc import Iterator


class UserError(Exception):
    """A problem with the job's configuration or inputs that the user can fix."""


def errors_behind(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every error behind it, each once: its cause and context, and what a Ray task raised
    (Ray hands a task's exception back wrapped, as `cause`)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        linked = (error.__cause__, error.__context__, getattr(error, "cause", None))
        todo += [e for e in linked if isinstance(e, BaseException)]
