"""Each tenant network's services: resolver, egress gateway, decision log."""
