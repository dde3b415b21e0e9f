from longrun import FileStore, S3Store, longrun


# s3://my-bucket/longrun/<run_id>/checkpoint.json
@longrun(checkpoint=S3Store("my-bucket", prefix="longrun/"))
def handler(event, context): ...


# /mnt/efs/longrun/<run_id>/checkpoint.json
@longrun(checkpoint=FileStore("/mnt/efs/longrun"))
def other_handler(event, context): ...


# a URI works too
@longrun(checkpoint="s3://my-bucket/longrun/")
def third_handler(event, context): ...
