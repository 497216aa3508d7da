"""Copy a Python runtime out of a Debian root filesystem into an empty tree.

Runs in the build stage of the python-runtime image (``python3 collect.py /out``) and copies:
the interpreter, the standard library with its compiled bytecode (the cell's filesystem is
read-only, so nothing could cache it later), the extension modules, every shared library those
load (as ``ldd`` reports them, with the symlinks that lead to them), and a passwd/group pair
that names uid 1001. Symlinks are recreated as symlinks and nothing is ever written through
one, so the tree matches the source layout (Debian's merged /usr included).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# Parts of the standard library a headless agent never uses; each would pull in more files or
# shared libraries (Tk, ncurses, readline, Berkeley DB, NIS with Kerberos) for nothing.
EXCLUDED_PACKAGES = {
    "__phello__",
    "config-3.11-x86_64-linux-gnu",
    "curses",
    "dist-packages",
    "ensurepip",
    "idlelib",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "test",
    "tkinter",
    "turtledemo",
}
EXCLUDED_EXTENSIONS = ("_curses", "_curses_panel", "_dbm", "nis", "readline", "_tkinter")
# glibc loads libgcc_s at run time to unwind a cancelled thread; ldd cannot see that.
RUNTIME_LOADED = ("libgcc_s.so.1",)
PASSWD = "root:x:0:0:root:/root:/nonexistent\nagent:x:1001:1001:agentcell:/tmp:/nonexistent\n"  # noqa: S105
GROUP = "root:x:0:\nagent:x:1001:\n"


class Tree:
    """The destination tree; paths given to it are absolute paths of the source system."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, path: str) -> None:
        """Copy ``path`` (file, directory entry or symlink chain) into the tree."""
        parent = self._directory(os.path.dirname(path))
        source = os.path.join(parent, os.path.basename(path))
        target = self.root / source.lstrip("/")
        if os.path.islink(source):
            link = os.readlink(source)
            if not target.is_symlink():
                target.symlink_to(link)
            resolved = link if link.startswith("/") else os.path.join(parent, link)
            self.add(os.path.normpath(resolved))
        elif os.path.isdir(source):
            target.mkdir(exist_ok=True)
        elif not target.exists():
            shutil.copy2(source, target)

    def add_tree(self, directory: str, *, skip: set[str], skip_prefixes: tuple[str, ...]) -> None:
        """Copy ``directory`` recursively, leaving out entries named in ``skip``."""
        for current, dirs, files in os.walk(directory):
            dirs[:] = [d for d in dirs if d not in skip]
            self.add(current)
            for name in files:
                if name in skip or name.split(".")[0] in skip_prefixes:
                    continue
                self.add(os.path.join(current, name))

    def _directory(self, path: str) -> str:
        """Recreate directory ``path`` and return its real location in the source."""
        if path in ("", "/"):
            return "/"
        parent = self._directory(os.path.dirname(path))
        source = os.path.join(parent, os.path.basename(path))
        target = self.root / source.lstrip("/")
        if os.path.islink(source):
            if not target.is_symlink():
                target.symlink_to(os.readlink(source))
            return self._directory(os.path.realpath(source))
        target.mkdir(exist_ok=True)
        shutil.copystat(source, target)
        return source


def shared_libraries(binaries: list[str]) -> set[str]:
    """Every library ``ldd`` says the binaries load, the dynamic loader included."""
    found: set[str] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) > parts.index("=>") + 1:
                candidate = parts[parts.index("=>") + 1]
            elif parts and parts[0].startswith("/"):
                candidate = parts[0]
            else:
                continue
            if candidate.startswith("/"):
                found.add(candidate)
    return found


def main(out: str) -> None:
    tree = Tree(Path(out))
    Path(out).mkdir(parents=True, exist_ok=True)
    stdlib = sysconfig.get_paths()["stdlib"]
    dynload = os.path.join(stdlib, "lib-dynload")
    interpreter = shutil.which("python3")
    assert interpreter is not None
    tree.add(interpreter)
    tree.add_tree(stdlib, skip=EXCLUDED_PACKAGES, skip_prefixes=EXCLUDED_EXTENSIONS)
    extensions = [
        os.path.join(dynload, name)
        for name in os.listdir(dynload)
        if name.endswith(".so") and name.split(".")[0] not in EXCLUDED_EXTENSIONS
    ]
    for library in sorted(shared_libraries([os.path.realpath(interpreter), *extensions])):
        tree.add(library)
    libdir = os.path.dirname(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6"))
    for name in RUNTIME_LOADED:
        if os.path.exists(os.path.join(libdir, name)):
            tree.add(os.path.join(libdir, name))
    etc = Path(out) / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    tmp = Path(out) / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)


if __name__ == "__main__":
    main(sys.argv[1])
