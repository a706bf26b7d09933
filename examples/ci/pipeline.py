#!/usr/bin/env python3
"""The trusted CI script of the demo (advanced mode): it lives in the CI repository, never in the PR.

It runs with the job's secrets and the registration socket; the project's code runs sandboxed through
runnerlib.run_untrusted, without them.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import urllib.parse

import runnerlib


def main() -> int:
    src = os.environ["REACTORCIDE_SOURCE_DIR"]

    # 1. A credential fetched at run time (made up here): register it before printing anything about it.
    deploy_token = "dpl_" + secrets.token_urlsafe(18)
    runnerlib.register_secret(deploy_token)
    print("registered a fresh deploy token over the secrets socket")
    evidence = os.environ.get("DEMO_EVIDENCE_FILE")
    if evidence:  # only for demo.py, which checks afterwards that the token appears nowhere in the output
        with open(evidence, "w") as fh:
            fh.write(deploy_token)

    # 2. Print it in several encodings: the runner masks every one of them.
    print("plain:     ", deploy_token)
    print("base64:    ", base64.b64encode(deploy_token.encode()).decode())
    print("url-quoted:", urllib.parse.quote(f"token={deploy_token}&x=1"))
    print("json:      ", json.dumps({"auth": {"token": deploy_token}}))
    print("worker secret from the environment:", os.environ.get("DEMO_API_TOKEN", "(none)"))
    sys.stdout.flush()

    # 3. The untrusted project's tests, sandboxed: no secrets in its environment, CI tree read-only.
    result = runnerlib.run_untrusted("python3 -m unittest discover -s tests -v", cwd=src, timeout=120)
    print(f"project tests: exit {result.exit_code}")
    for line in result.output.splitlines():
        print("  | " + line)

    # 4. Ask for a follow-up job (written to the triggers file; the runner signs and publishes it). Pass
    #    references, not secrets: the follow-up job gets its own credentials from its worker.
    if result.exit_code == 0:
        runnerlib.trigger_job("deploy-staging", env={"DEPLOY_TARGET": "staging", "ARTIFACT": "calc-0.1.tar.gz"},
                              depends_on=["test"], condition="all_success")
        print("triggered follow-up job deploy-staging")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
