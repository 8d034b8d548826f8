"""Labs: the backends that make the host side and the lab VM, and what they share.

Everything above this package (runs, grading, tests) gets a lab with :func:`get_backend` and talks
to it only through :class:`harness.lab.base.Backend`.  A new backend is one module in this
package plus one line in :data:`REGISTRY` (docs/backends.md, "Adding a backend").
"""

from __future__ import annotations

import importlib

from harness.lab.base import *  # noqa: F401,F403  (the lab's shared names: Backend, LAB_PORT ...)
from harness.lab.base import DEFAULT_PREFIX, Backend
from harness.util import LabError

#: backend name -> "module:class", imported only when that backend is asked for.
REGISTRY = {
    "netns": "harness.lab.netns:NetnsBackend",
    "qemu": "harness.lab.qemu:QemuBackend",
    "vagrant": "harness.lab.vagrant:VagrantBackend",
    "remote": "harness.lab.remote:RemoteBackend",
}
BACKENDS = tuple(REGISTRY)


def backend_class(name: str) -> type:
    """The class registered for backend ``name``."""
    try:
        module, _, cls = REGISTRY[name].partition(":")
    except KeyError:
        raise LabError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls)


def get_backend(name: str, prefix: str = DEFAULT_PREFIX, **kw) -> Backend:
    """The backend called ``name`` for lab ``prefix``."""
    return backend_class(name)(prefix=prefix, **kw)
