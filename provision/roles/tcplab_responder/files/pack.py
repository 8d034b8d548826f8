"""Pack the responder's sources into one deterministic tar on the Ansible controller.

    python3 pack.py SRC_DIR ARCHIVE

Run by the controller's own Python (``ansible_playbook_python``), so it works wherever
ansible-playbook does (GNU tar's ``--sort``/``--mtime`` are missing from macOS's bsdtar).
Deterministic: names sorted, mtime 0, owner and group 0 without names, mode 0644 (0755 for
directories and executables), no ``__pycache__`` or ``*.pyc``; the same sources give the same
bytes, so ``unarchive`` finds nothing to change on a second run.  The archive is written to a
0600 temporary file beside ARCHIVE and renamed over it; ARCHIVE's directory must be private to
the user (the harness and the Vagrantfile give a path in a 0700 directory).  Prints
``changed`` when ARCHIVE's bytes changed, ``unchanged`` otherwise.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile


def members(src: str):
    """(relative name, path) of every directory and file under src, sorted, cache left out."""
    out = []
    for top, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in dirs + sorted(f for f in files if not f.endswith(".pyc")):
            path = os.path.join(top, name)
            out.append((os.path.relpath(path, src), path))
    return sorted(out)


def pack(src: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, path in members(src):
            info = tar.gettarinfo(path, arcname=name)
            if not (info.isdir() or info.isfile()):
                continue                      # no links or devices in a Python package
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if info.isdir() or info.mode & 0o100 else 0o644
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    src, archive = argv
    if not os.path.isdir(src):
        sys.stderr.write(f"pack.py: {src} is not a directory\n")
        return 1
    data = pack(src)
    try:
        with open(archive, "rb") as f:
            if f.read() == data:
                print("unchanged")
                return 0
    except FileNotFoundError:
        pass
    tmp = f"{archive}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, archive)
    except BaseException:
        os.unlink(tmp)
        raise
    print("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
