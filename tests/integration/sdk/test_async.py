"""The asyncio SDK against the real service: the same answers as the synchronous one."""

from __future__ import annotations

import asyncio
import io
import os

import pytest

from agentcell.sdk import AsyncSandbox, TemplateNotFound

from .conftest import TEMPLATE, Service

pytestmark = pytest.mark.integration


def test_create_run_stream_resume_files_and_kill(service: Service) -> None:
    async def scenario() -> None:
        sbx = await AsyncSandbox.create(
            TEMPLATE, url=service.url, ca=service.ca, token=service.tenant_token
        )
        service.made.append(sbx.id)
        async with sbx:
            assert (await sbx.info()).warm
            sbx.stream_idle_timeout = 0.3  # dropped in every quiet spell, then resumed
            seen: list[str] = []
            result = await sbx.commands.run(
                "for i in $(seq 1 8); do echo tick $i; sleep 0.5; done",
                on_stdout=seen.append,
                timeout=60,
            )
            want = "".join(f"tick {i}\n" for i in range(1, 9))
            assert (result.exit_code, result.stdout, "".join(seen)) == (0, want, want)

            handle = await sbx.commands.run("sleep 0.2; echo later", background=True)
            assert (await handle.wait()).stdout == "later\n"

            data = os.urandom(5 * 1024 * 1024 + 3)
            assert await sbx.files.write("/workspace/blob", io.BytesIO(data)) == len(data)
            assert await sbx.files.read("/workspace/blob") == data
        assert service.state_of(sbx.id) in ("killed", None)

    asyncio.run(scenario())


def test_an_unknown_template_is_the_same_error(service: Service) -> None:
    async def scenario() -> None:
        with pytest.raises(TemplateNotFound):
            await AsyncSandbox.create(
                "no-such-template", url=service.url, ca=service.ca, token=service.tenant_token
            )

    asyncio.run(scenario())
