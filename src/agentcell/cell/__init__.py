"""The cell contract: what every layer must agree on about a cell, in one place.

Policy judges a cell, runtime backends make one, verify proves one and identity equips one;
each needs the same facts, and none may import another to get them. So they live here,
engine-neutral, importing nothing of agentcell but :mod:`agentcell.errors`:

- :mod:`~agentcell.cell.names`: container and network names, injective per tenant;
- :mod:`~agentcell.cell.labels`: the ``org.agentcell.*`` label keys and when to trust them;
- :mod:`~agentcell.cell.paths`: engine sockets, the mount points agentcell provides inside a
  cell, agentcell's own state directories on the host, and the package's asset files;
- :mod:`~agentcell.cell.users`: the host uid range cells are allocated from;
- :mod:`~agentcell.cell.units`: CPU nano-units;
- :mod:`~agentcell.cell.fields`: field paths into a spec or an inspect document;
- :mod:`~agentcell.cell.seccomp`: the strict seccomp profile (read once) and the analysis of
  any profile (which syscalls it lets through).
"""
