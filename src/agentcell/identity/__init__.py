"""Identities of cells: the control plane's CA, SPIFFE-style agent ids, join tokens, and the
files ``up`` gives an identity cell (:mod:`agentcell.identity.enrolment`)."""
