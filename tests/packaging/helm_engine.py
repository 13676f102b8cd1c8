"""The real Helm v4 engine for tests/packaging.rs, through PyPI's helm-python-sdk.

Reads one JSON request from argv[1] and prints one JSON answer on stdout:
  {"command": "render", "chart": DIR, "release": NAME, "namespace": NS, "values": {...}}
      -> {template path: rendered manifest}  (`helm template`, CRDs excluded)
  {"command": "lint", "chart": DIR, "namespace": NS, "values": {...}}
      -> {"messages": [{"severity", "path", "error"}], "errors": [...]}  (`helm lint --strict`)
  {"command": "install", "kubeconfig": PATH, "chart": DIR, "release": NAME, "namespace": NS,
   "values": {...}}  -> {"status": ...}  (`helm upgrade --install --create-namespace --wait`)
  {"command": "uninstall", "kubeconfig": PATH, "release": NAME, "namespace": NS}
      -> {"status": ...}  (`helm uninstall --ignore-not-found`)
Exit status 1 with Helm's message on stderr when Helm fails; 2 when the engine is missing.
render and lint are offline; install and uninstall talk to the cluster the kubeconfig names
(the e2e suite's `E2E_INSTALL=helm`).
"""

import json
import sys

try:
    from helm_python.chart import Chart, lint
    from helm_python.errors import HelmError
except ImportError as e:
    print(
        f"helm-python-sdk is not importable by {sys.executable} ({e}): run scripts/install-test-deps",
        file=sys.stderr,
    )
    sys.exit(2)


def main() -> None:
    request = json.loads(sys.argv[1])
    command = request["command"]
    try:
        if command == "render":
            with Chart.load(request["chart"]) as chart:
                answer = chart.render(
                    request["values"],
                    name=request["release"],
                    namespace=request["namespace"],
                    is_install=True,
                )
        elif command == "lint":
            answer = lint(
                request["chart"],
                request["values"],
                strict=True,
                namespace=request["namespace"],
            )
        elif command in ("install", "uninstall"):
            from helm_python.config import Config

            config = Config(
                kubeconfig_path=request["kubeconfig"], namespace=request["namespace"]
            )
            if command == "install":
                try:
                    release = config.install(
                        request["chart"],
                        request["release"],
                        request["values"],
                        namespace=request["namespace"],
                        create_namespace=True,
                        wait="watcher",
                        timeout=300,
                    )
                except Exception as e:  # noqa: BLE001 - the engine raises its own types
                    # `helm upgrade --install`: a release left by an earlier run is upgraded.
                    if "cannot reuse a name that is still in use" not in str(e):
                        raise
                    release = config.upgrade(
                        request["chart"],
                        request["release"],
                        request["values"],
                        namespace=request["namespace"],
                        wait="watcher",
                        timeout=300,
                    )
            else:
                release = config.uninstall(
                    request["release"], ignore_not_found=True, wait="watcher", timeout=300
                )
            answer = {"status": str(getattr(release, "status", release))}
        else:
            sys.exit(f"unknown command {command!r}")
    except HelmError as e:
        print(f"helm {command} failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
