"""A Motia stream definition: job progress bars, one group per job."""

from motia import StreamConfig

config = StreamConfig(
    name="progress",
    description="Progress of running jobs: group = job id, item = bar id",
    schema={"type": "object", "properties": {"done": {"type": "integer"}}},
)
