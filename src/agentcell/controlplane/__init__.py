"""The control plane: an HTTPS API where agents (mTLS) enrol, report and read their tenant's
configuration, and administrators (token) manage identities and read what agents reported."""
