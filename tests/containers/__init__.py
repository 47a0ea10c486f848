"""The images, the compose file and the Kubernetes manifests, run with podman (slow tests).

Modules: podman (commands, image builds, addresses, waiting), traffic (completions and
streams a test sends), sim (vLLM's flags for the simulated engine), kube (deploy/k8s rendered
for `podman kube play`), compose (deploy/compose.yaml rendered for podman-compose).
"""
