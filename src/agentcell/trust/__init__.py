"""Image trust: digest pinning and cosign-compatible key-pair signatures, checked before launch.

Layout: :mod:`~agentcell.trust.reference` parses references, :mod:`~agentcell.trust.keys`
reads and writes cosign key files, :mod:`~agentcell.trust.cosign` builds and parses cosign's
signature objects, :mod:`~agentcell.trust.registry` talks to the registry (oras-py),
:mod:`~agentcell.trust.signing` signs and verifies, :mod:`~agentcell.trust.config` reads the
host's trust settings, and :mod:`~agentcell.trust.admission` applies them to admitted specs.
Nothing here imports the docker SDK; the engine is reached through the ``LocalImages`` protocol.

Import the submodules directly: this package imports nothing eagerly, so a launch of local
images never loads the registry client or the crypto libraries.
"""
