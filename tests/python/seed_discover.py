"""The seed's DiscoverInstances example, verbatim, run against Waymark.

Usage: seed_discover.py ENDPOINT_URL MODE

MODE says how the SDK's `data-` host prefix (which botocore puts in front of
the endpoint's host for DiscoverInstances) is turned off:

  config   Config(inject_host_prefix=False) on the client
  env      nothing in code: the caller sets AWS_DISABLE_HOST_PREFIX_INJECTION=true
  default  nothing at all: the call goes to data-<host> and fails; prints
           "EndpointConnectionError: ..." and exits with status 3

Region and credentials come from the environment (AWS_DEFAULT_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), as for any boto3 program.
Prints the table name found (the seed expects UserAuth).
"""

import sys

import boto3
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

endpoint_url, mode = sys.argv[1], sys.argv[2]
if mode == "config":
    cloudmap_client = boto3.client(
        "servicediscovery",
        endpoint_url=endpoint_url,
        config=Config(inject_host_prefix=False),
    )
elif mode == "env":
    cloudmap_client = boto3.client("servicediscovery", endpoint_url=endpoint_url)
elif mode == "default":
    # One attempt instead of the default retries with back-off: the
    # outcome (a connection error for data-<host>) is the same, only faster.
    cloudmap_client = boto3.client(
        "servicediscovery",
        endpoint_url=endpoint_url,
        config=Config(retries={"total_max_attempts": 1}),
    )
else:
    sys.exit(f"unknown mode {mode!r}")

if mode == "default":
    # The endpoint itself is fine: calls without a host prefix reach it.
    cloudmap_client.list_namespaces()

try:
    # ---- the seed's snippet, verbatim -------------------------------------
    # Python SDK example for DynamoDB
    response = cloudmap_client.discover_instances(
        NamespaceName='quickship.local',
        ServiceName='user-auth-db',
        QueryParameters={'environment': 'prod'}
    )
    # The code extracts the DynamoDB table name from the attributes
    table_name = response['Instances'][0]['Attributes']['tablename']
    # ------------------------------------------------------------------------
except EndpointConnectionError as e:
    print(f"EndpointConnectionError: {e}")
    sys.exit(3)

print(table_name)
