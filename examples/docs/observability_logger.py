from aws_lambda_powertools import Logger

from longrun import S3Store, current_run, longrun

logger = Logger()


@longrun(checkpoint=S3Store("my-bucket", prefix="longrun/"), logger=logger)
def handler(event, context):
    for key in current_run().iterate(event["keys"]):
        logger.info("copied", extra={"key": key})  # has run_id, hop, where, function_request_id
