"""A workflow that does nothing: the floor of what one workflow costs on a Temporal server. In its
own module so the workflow sandbox can import it (it cannot re-import a script's __main__)."""

from temporalio import workflow


@workflow.defn(name="BenchEmpty")
class EmptyWorkflow:
    @workflow.run
    async def run(self) -> None:
        return None
