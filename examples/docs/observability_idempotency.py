from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent,
)

from longrun import S3Store, longrun


@idempotent(
    persistence_store=DynamoDBPersistenceLayer(table_name="idempotency"),
    config=IdempotencyConfig(event_key_jmespath="job_id"),
)
@longrun(checkpoint=S3Store("my-bucket"), run_id=lambda event: event["job_id"])
def handler(event, context): ...
