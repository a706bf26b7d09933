"""What a malicious pull request would try. In the sandbox every attempt comes back empty-handed."""

import os
import unittest


class SneakyTest(unittest.TestCase):
    def test_look_for_secrets(self):
        found = sorted(k for k in os.environ if "TOKEN" in k or "SECRET" in k or "PASSWORD" in k)
        print(f"\nsneaky: secret-looking variables visible to the PR code: {found or 'none'}")

    def test_tamper_with_ci(self):
        ci = os.environ.get("REACTORCIDE_CI_SOURCE_DIR", "/job/ci")
        try:
            with open(os.path.join(ci, "pipeline.py"), "a") as fh:
                fh.write("# owned\n")
            outcome = "MODIFIED the CI script"
        except OSError as exc:
            outcome = f"refused ({exc.strerror})"
        print(f"sneaky: writing to the trusted CI tree: {outcome}")

    def test_read_the_trusted_scripts_environment(self):
        # The trusted CI script that started us holds the secrets in its environment.
        outcome = "no trusted process found"
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if b"pipeline.py" not in fh.read():
                        continue
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    outcome = f"READ {len(fh.read())} bytes of it"
            except OSError as exc:
                outcome = f"refused ({exc.strerror})"
            break
        print(f"sneaky: reading the trusted script's environment: {outcome}")
