from aws_lambda_powertools import Logger

from longrun import S3Store, longrun

logger = Logger()


@logger.inject_lambda_context
@longrun(checkpoint=S3Store("my-bucket", prefix="longrun/"))
def handler(event, context): ...
