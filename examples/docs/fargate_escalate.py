from longrun import Fargate, S3Store, longrun


@longrun(
    checkpoint=S3Store("my-bucket", prefix="longrun/"),
    max_hops=10,
    escalate=Fargate(
        cluster="jobs",
        task_definition="worker:3",
        container="worker",
        subnets=["subnet-1", "subnet-2"],
        security_groups=["sg-1"],
        assign_public_ip=False,
        spot=True,
    ),
)
def handler(event, context): ...
