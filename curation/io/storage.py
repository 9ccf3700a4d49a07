"""Operator mistakes about where a job reads and writes, as one line naming the fix: output directory rules
(checked before anything is written) and the storage errors an operator can fix (read-only or full disk,
no permission, no credentials), wherever they happen, in the driver or in a Ray worker.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re

import fsspec

from curation.errors import UserError, errors_behind
from curation.io.sources import access_denied, credential_source
from curation.io.urls import strip_credentials

# Folders of an output that a run writes, rewrites or removes: an input may not lie in one of them.
WRITTEN_FOLDERS = ("kept", "rejected", "_work", "_state")


def check_output_location(input_url: str, output_url: str, work_url: str) -> None:
    """Refuse, before anything is written, an output (or work dir) that a run must not write to: one whose
    URL chains filesystems (`::`), a file, or one inside the input or equal to it (the next run would curate
    its own output), and an input inside what the run writes."""
    for setting, url in (("--output", output_url), ("run.work_dir", work_url)):
        if "::" in url:
            raise UserError(
                f"{setting} {strip_credentials(url)} holds '::', which fsspec reads as chained filesystems: "
                "give a plain directory or URL"
            )
    out_fs, out_root = _open(output_url, "--output")
    work_fs, work_root = _open(work_url, "run.work_dir")
    in_fs, in_root = _open(input_url, "--input")
    for setting, url, fs, root in (
        ("--output", output_url, out_fs, out_root),
        ("run.work_dir", work_url, work_fs, work_root),
    ):
        if _is_file(fs, root):
            raise UserError(f"{setting} {strip_credentials(url)} is a file: give a directory (a new one)")
        if _same_fs(fs, in_fs) and _inside(_real(fs, root), _real(in_fs, in_root)):
            where = "is" if _real(fs, root) == _real(in_fs, in_root) else "is inside"
            raise UserError(
                f"{setting} {strip_credentials(url)} {where} --input {strip_credentials(input_url)}: a later run "
                "would read the output as input; choose an output outside the input"
            )
    written = [posixpath.join(_real(out_fs, out_root), folder) for folder in WRITTEN_FOLDERS]
    if _same_fs(in_fs, out_fs) and (
        _real(in_fs, in_root) == _real(out_fs, out_root) or any(_inside(_real(in_fs, in_root), w) for w in written)
    ):
        raise UserError(
            f"--input {strip_credentials(input_url)} lies in what the run writes under --output "
            f"{strip_credentials(output_url)}: choose an output that does not hold the input"
        )


def _open(url: str, setting: str):
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise UserError(f"cannot open {setting} {strip_credentials(url)}: {strip_credentials(str(exc))}") from None


def _is_file(fs, root: str) -> bool:
    try:
        return fs.isfile(root)
    except Exception as exc:  # noqa: BLE001 - e.g. no credentials: said in one line below
        problem = storage_problem(exc, root)
        if problem is not None:
            raise problem from None
        raise


def _protocols(fs) -> set[str]:
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


def _same_fs(a, b) -> bool:
    return bool(_protocols(a) & _protocols(b))


def _real(fs, root: str) -> str:
    """The path as the filesystem resolves it: local paths absolute, with symbolic links followed."""
    if _protocols(fs) & {"file", "local"}:
        return os.path.realpath(root)
    return root.rstrip("/")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


# ---- storage errors -------------------------------------------------------------------------------

_NO_ACCESS = {errno.EACCES, errno.EPERM}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def storage_problem(exc: BaseException, url: str | None = None) -> UserError | None:
    """The one line for a storage error an operator can fix, or None for any other error. It names the file
    the error names, else `url`."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    where = strip_credentials(_place(exc) or url or "the output")
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        return UserError(
            f"no credentials to reach {where}: {credential_source('s3')}"
            if where.startswith(("s3://", "s3a://"))
            else f"no credentials to reach {where}: set the storage's credentials in the environment"
        )
    if "OutOfDiskError" in names:
        return UserError(
            "a Ray node's disk is full (Ray stops at 95 %): free space on the node's temp dir, then run the same "
            "command again to resume"
        )
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    if exc.errno in _NO_ACCESS:
        protocol = where.split("://")[0] if "://" in where else "file"
        return UserError(access_denied(where, protocol))
    if exc.errno == errno.EROFS:
        return UserError(f"{where} is on a read-only file system: choose a writable --output")
    if exc.errno in _NO_SPACE:
        return UserError(
            f"no space left on the device that holds {where}: free space (or choose another --output), then run "
            "the same command again to resume"
        )
    if exc.errno == errno.ENOTDIR:
        return UserError(f"a part of {where} is a file, not a directory: choose another --output")
    if exc.errno == errno.ENAMETOOLONG:
        return UserError(f"{where}: a file name is too long for its file system: choose a shorter --output")
    return None


def _place(exc: BaseException) -> str | None:
    """The file an OSError names (the folder, for a temporary file being written)."""
    filename = getattr(exc, "filename", None)
    if not isinstance(filename, str) or not filename:
        return None
    return posixpath.dirname(filename) if posixpath.basename(filename).startswith(".tmp-") else filename


def storage_problem_in(exc: BaseException, url: str | None = None) -> UserError | None:
    """`storage_problem` of the error or of any error behind it (its causes; what a Ray task raised)."""
    for error in errors_behind(exc):
        problem = storage_problem(error, url)
        if problem is not None:
            return problem
    # Ray may hand back a worker's error only as the text of its traceback.
    text = str(exc)
    for number, message in _REMOTE_OS_ERROR.findall(text):
        problem = storage_problem(OSError(int(number), message), url)
        if problem is not None:
            return problem
    if "NoCredentialsError" in text:
        return storage_problem(_NoCredentialsError(), url)
    return None


_REMOTE_OS_ERROR = re.compile(r"^(?:[\w.]+\.)?\w*Error: \[Errno (\d+)\] ([^\n]*)$", re.MULTILINE)


class _NoCredentialsError(Exception):
    """Stands for botocore's, found in the text of a remote traceback (matched by its name)."""


_NoCredentialsError.__name__ = "NoCredentialsError"
