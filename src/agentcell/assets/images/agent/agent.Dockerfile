# The reference monitoring agent (src/agentcell/agent, standard library only) on the minimal
# python-runtime image.
# Its build context is this folder plus the agent package copied in as agentcell_agent/
# (agentcell.runtime.docker.agent_image.build_context makes it). Built with the classic builder (Docker 20.10,
# docker-py), so no BuildKit-only syntax. BASE is the offline mmdebstrap image unless named.
ARG BASE=agentcell/base:bookworm
ARG RUNTIME=agentcell/python-runtime:0.1.0

FROM ${BASE} AS build
COPY agentcell_agent/ /src/agentcell_agent/
# Byte-compiling here makes a syntax error fail the build, and spares the read-only cell from
# compiling the agent in memory at every start.
RUN python3 -m compileall -q /src/agentcell_agent \
 && mkdir -p /out/opt/agentcell \
 && cp -r /src/agentcell_agent /out/opt/agentcell/ \
 && chmod -R a=rX /out/opt/agentcell

# The final stage is the minimal Python runtime: interpreter, its libraries and the standard
# library only. No shell, coreutils, package manager or compiler, so no RUN here.
FROM ${RUNTIME}
COPY --from=build /out/opt/agentcell/ /opt/agentcell/
ENV HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/opt/agentcell \
    AGENTCELL_STATE_DIR=/tmp/agentcell AGENTCELL_HOST_ROOT=/host
USER 1001:1001
WORKDIR /tmp
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-m", "agentcell_agent.health"]
CMD ["python3", "-m", "agentcell_agent"]
