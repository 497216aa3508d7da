"""Each tenant network's services: resolver, egress gateway, decision log.

- :mod:`.egress`: the allow-list matcher (pure);
- :mod:`.decisions`: the per-tenant decision log and its reader;
- :mod:`.upstream`: the configured upstream resolvers (never the host's);
- :mod:`.resolver`: the tenant's DNS server (dnspython);
- :mod:`.gateway`: the egress gateway, HTTP CONNECT (h11) and TLS by server name (``ssl``);
- :mod:`.host`: ``NetworkHost``, which runs them for every tenant network on the host.

Import the module you need (``from agentcell.netsvc.host import NetworkHost``): the package
itself imports nothing, so ``agentcell net log`` does not load the engine client.
"""
