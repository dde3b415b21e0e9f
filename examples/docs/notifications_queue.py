"""A job that says when it ends: one message on an SQS queue per run."""

import os

from longrun import S3Store, current_run, longrun


def render(page: int) -> None:
    """Stands in for the real work of one page."""


@longrun(
    checkpoint=S3Store(os.environ.get("BUCKET", "my-bucket"), prefix="longrun/"),
    on_complete=os.environ["DONE_QUEUE_URL"],  # https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE
)
def handler(event, context):
    run = current_run()
    for page in run.iterate(range(event["pages"])):
        render(page)
    return {"pages": event["pages"]}
