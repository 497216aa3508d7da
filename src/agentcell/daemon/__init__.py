"""The resident host service: sandboxes, pools, commands, files, tenant networks."""
