#!/usr/bin/env bash
# What CI checks, in order: host setup, images, lint, formatting, types, then the test suite
# against the real engine. Stops at the first failure. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
AGENTCELL_STEP="test"

bash scripts/setup.sh
say "agentcell image bootstrap"
.venv/bin/agentcell image bootstrap
say "ruff check"
.venv/bin/ruff check src tests bench
say "ruff format --check"
.venv/bin/ruff format --check src tests bench
say "mypy"
.venv/bin/mypy
say "pytest $*"
# Integration tests skip when no engine answers; here a missing engine must fail the run.
# pytest's own exit code stands, so "no tests collected" (5) fails too.
# Every container and network the tests create must be gone when they finish.
AGENTCELL_REQUIRE_DOCKER=1 AGENTCELL_CHECK_LEFTOVERS=1 exec .venv/bin/pytest "$@"
