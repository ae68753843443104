import json, time, sys
import _env
from events.topology import aws
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from django.conf import settings
import urllib3

sqs = aws.client("sqs")
name = "lean-x-test"
url = sqs.create_queue(QueueName=name)["QueueUrl"]
sqs.purge_queue(QueueUrl=url)
def fill(n):
    body = json.dumps(_env.AGREEMENT_DATA) * 2
    for i in range(0, n, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": body, "MessageAttributes": {"event_type": {"DataType": "String", "StringValue": "x"}}} for j in range(10)])
creds = sqs._request_signer._credentials.get_frozen_credentials()
endpoint = sqs.meta.endpoint_url
pool = urllib3.PoolManager(maxsize=4)
signer = SigV4Auth(creds, "sqs", settings.AWS_REGION)
def call(target, payload):
    req = AWSRequest(method="POST", url=endpoint + "/", data=json.dumps(payload).encode(), headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS." + target})
    signer.add_auth(req)
    r = pool.request("POST", endpoint + "/", body=req.body, headers=dict(req.headers.items()))
    if r.status != 200: raise RuntimeError(r.data)
    return json.loads(r.data)
def boto_loop(n):
    got = 0
    while got < n:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]).get("Messages", [])
        if msgs:
            sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(msgs)])
            got += len(msgs)
def lean_loop(n):
    got = 0
    while got < n:
        msgs = call("ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1, "MessageAttributeNames": ["All"]}).get("Messages", [])
        if msgs:
            call("DeleteMessageBatch", {"QueueUrl": url, "Entries": [{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(msgs)]})
            got += len(msgs)
N = 2000
for rnd in range(3):
    for nm, fn in (("boto", boto_loop), ("lean", lean_loop)):
        fill(N)
        c, w = time.process_time(), time.perf_counter()
        fn(N)
        c, w = time.process_time() - c, time.perf_counter() - w
        print(f"{nm}: {N/w:,.0f} msg/s, client CPU {1000*c/(N/10):.3f} ms per receive+delete of 10", flush=True)
