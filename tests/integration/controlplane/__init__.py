"""Control-plane integration tests: real server subprocess, real TLS, real cells."""
